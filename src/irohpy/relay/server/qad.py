"""The relay's QUIC Address Discovery service (iroh-relay's ``quic_bind_addr``, UDP 7842).

A client dials ALPN ``/iroh-qad/0`` with transport parameter role "receive"; the server (role
"send") tells it, in OBSERVED_ADDRESS frames, the address its packets come from, and again
when that changes, for as long as the client keeps the connection (iroh: keep-alive 25 s,
idle 35 s, close with application code 1 ``finished``). TLS is the relay's own X.509
certificate (:mod:`irohpy.tls.webpki`); the connection carries no streams.

Anyone can send UDP here, so nothing is kept for a client whose address is not proven:

- every Initial without a token gets a stateless Retry, so a connection exists only once the
  client showed it receives at its address; datagrams that no connection owns are metered per
  source address before the core sees them, so one flooding address cannot use up the
  endpoint's budget of stateless answers that every other client's first Initial needs;
- validated clients count against a per-IP limit and a global one; beyond them the handshake
  is refused at once (CONNECTION_REFUSED, no TLS work);
- handshakes under way are capped, connections idle out after 30 s without the client's
  keep-alives, and everything is counted in the relay's metrics (iroh-relay's ``qad_*``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from irohpy.base.addr import IpAddr
from irohpy.dns_server.ratelimit import KeyedBuckets, address_key
from irohpy.errors import BindError
from irohpy.quic import connection as qc
from irohpy.quic.endpoint import EndpointConfig, Offer, QuicEndpoint, Transmit, always_retry
from irohpy.quic.transport_params import ROLE_SEND
from irohpy.relay.server.metrics import RelayMetrics
from irohpy.socket.udp import UdpSocket
from irohpy.tls.webpki import ServerCertificate, WebPkiServerHandshake

log = logging.getLogger(__name__)

ALPN: Final = b"/iroh-qad/0"
#: The application close a client ends with when it is done (not an error).
CLOSE_CODE: Final = 1
CLOSE_REASON: Final = b"finished"


@dataclass(frozen=True)
class QadLimits:
    """How much of the service one address, and everyone together, may hold."""

    max_connections: int = 8192
    max_connections_per_ip: int = 8
    max_handshakes: int = 256
    idle_timeout: float = 30.0
    #: Datagrams per second (and burst) one source address may send that no connection owns
    #: (Initials, which cost a Retry or a handshake; a client needs two or three).
    unrouted_rate: float = 10.0
    unrouted_burst: int = 20
    #: Stateless answers (Retry, ...) per second and burst, across all sources.
    stateless_rate: float = 1000.0
    stateless_burst: int = 200


def _host(addr: object) -> str:
    host = addr[0] if isinstance(addr, tuple) and addr and isinstance(addr[0], str) else repr(addr)
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


class QadServer:
    """The QAD endpoint of one relay: ``await start(bind)``, then ``await close()``.

    A thin asyncio driver of the sans-IO endpoint core: one core pass per receive burst or
    timer, offers decided in the pass, transmits sent at its end."""

    def __init__(self, certificate: ServerCertificate, metrics: RelayMetrics, limits: QadLimits | None = None) -> None:
        self.metrics = metrics
        #: What new handshakes present; replace it to roll the certificate (SIGHUP).
        self.certificate = certificate
        self.limits = limits = limits or QadLimits()
        transport = qc.QuicConfig(
            is_client=False,
            idle_timeout=limits.idle_timeout,
            max_streams_bidi=0,
            max_streams_uni=0,
            max_datagram_frame_size=0,
            observed_address_role=ROLE_SEND,
        )
        config = EndpointConfig(
            transport=transport,
            alpns=[ALPN],
            max_handshakes=limits.max_handshakes,
            max_connections=limits.max_connections,
            retry_policy=always_retry,
            stateless_rate=limits.stateless_rate,
            stateless_burst=limits.stateless_burst,
            offer_initials=True,
            server_handshake=lambda: WebPkiServerHandshake(self.certificate, alpns=[ALPN]),
        )
        self._core = QuicEndpoint(os.urandom(32), config)
        self._unrouted = KeyedBuckets(limits.unrouted_rate, limits.unrouted_burst)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket: UdpSocket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = -1.0
        self._now = 0.0
        #: Accepted connections: the client's IP and whether the handshake completed.
        self._conns: dict[qc.QuicConnection, tuple[str, bool]] = {}
        self._per_ip: Counter[str] = Counter()
        self.local_addr: tuple[str, int] | None = None

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self, bind: IpAddr) -> None:
        host, port = bind.sockaddr
        family = socket.AF_INET6 if bind.host.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # [::] serves IPv4 clients too, as iroh-relay's dual-stack socket does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise BindError(f"cannot bind QUIC address discovery on udp {bind}: {exc.strerror or exc}") from None
        self._loop = asyncio.get_running_loop()
        self._socket = UdpSocket(sock, self._receive)
        self.local_addr = self._socket.local_addr
        log.info("QUIC address discovery on udp %s:%d", *self.local_addr)

    # -- the core pass ------------------------------------------------------------------

    def _receive(self, batch: Sequence[tuple[bytes, tuple[str, int]]], sock: object = None) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        core = self._core
        cid_length = core.config.transport.cid_length
        allowed: list[tuple[bytes, object]] = []
        for data, addr in batch:
            dcid = data[6 : 6 + data[5]] if len(data) >= 6 and data[0] & 0x80 else data[1 : 1 + cid_length]
            quic = core.route(dcid)
            if quic is None:
                if not self._unrouted.allow(address_key(addr[0]), now):
                    self.metrics.qad_dropped.labels("rate_limited").inc()
                    continue
            elif quic.peer_address != addr and quic in self._conns:
                self._moved(quic, data, addr, now)
                continue
            allowed.append((data, addr))
        self._pass(allowed)

    def _moved(self, quic: qc.QuicConnection, data: bytes, addr: object, now: float) -> None:
        """A client's packet from a new address (NAT rebinding): if it authenticates, that is
        where the client is now, and the report that follows names it."""
        mark = quic.recovery.bytes_received
        self._core.receive([(data, addr)], max(now, self._now))
        if quic.recovery.bytes_received != mark and not quic.is_closed:
            self._core.readdress(quic, addr)

    def _on_timer(self) -> None:
        self._timer = None
        self._pass(())

    def _pass(self, batch: Sequence[tuple[bytes, object]]) -> None:
        loop = self._loop
        if loop is None or self._socket is None:
            return
        now = max(loop.time(), self._now)
        if 0.0 <= self._timer_at and now < self._timer_at <= now + 1e-3:
            now = self._timer_at  # a timer that fired a hair early runs what is due
        self._now = now
        core = self._core
        transmits, _, _ = core.poll(batch, now)
        offers = core.offers()
        for offer in offers:
            self._decide(offer, now)
        if offers:
            transmits += core.transmits(now)
        self._send(transmits)
        for quic in core.touched():
            self._events(quic)
        self._arm(core.deadline())

    def _send(self, transmits: list[Transmit]) -> None:
        sock = self._socket
        if sock is None:
            return
        for t in transmits:
            sock.send_batch(t.datagrams, t.addr)  # type: ignore[arg-type]

    def _arm(self, deadline: float | None) -> None:
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = -1.0
        if deadline is not None and self._loop is not None:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _decide(self, offer: Offer, now: float) -> None:
        core = self._core
        host = _host(offer.addr)
        if not offer.validated:
            core.ignore(offer, now)  # only an address our Retry proved earns any state
            return
        if self._per_ip[host] >= self.limits.max_connections_per_ip:
            self.metrics.qad_refused.labels("per_ip_limit").inc()
            core.refuse(offer, now)
            return
        if len(self._conns) >= self.limits.max_connections:
            self.metrics.qad_refused.labels("capacity").inc()
            core.refuse(offer, now)
            return
        self.metrics.qad_incoming.inc()
        self._per_ip[host] += 1
        self._conns[core.accept(offer, now)] = (host, False)

    def _events(self, quic: qc.QuicConnection) -> None:
        """Count what happened to an accepted connection, as iroh-relay's qad_* metrics do."""
        state = self._conns.get(quic)
        if state is None:
            return
        host, established = state
        metrics = self.metrics
        while (ev := quic.next_event()) is not None:
            if isinstance(ev, qc.HandshakeCompleted):
                established = True
                metrics.qad_connections.inc()
            elif isinstance(ev, qc.ConnectionTerminated):
                if not established:
                    metrics.qad_incoming_error.inc()
                    log.debug("QAD handshake from %s failed (%s): code 0x%x %r", host, ev.cause, ev.error_code,
                              ev.reason)
                else:
                    metrics.qad_connections_closed.inc()
                    if not (ev.application and ev.error_code == CLOSE_CODE):
                        metrics.qad_connections_errored.inc()
                established = False
        self._conns[quic] = (host, established)
        if quic.is_closed:
            del self._conns[quic]
            self._per_ip[host] -= 1
            if self._per_ip[host] <= 0:
                del self._per_ip[host]

    async def close(self) -> None:
        """Close every connection (application code 1, ``finished``, as iroh-relay) and the socket."""
        sock = self._socket
        if sock is None:
            return
        core = self._core
        for quic in core.connections:
            quic.close(CLOSE_CODE, CLOSE_REASON)
            core.wake(quic)
        self._send(core.transmits(self._now))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._socket = None
        sock.close()
        self._conns.clear()
        self._per_ip.clear()
