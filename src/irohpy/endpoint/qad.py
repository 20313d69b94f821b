"""The client side of QUIC Address Discovery: our home relay tells us our public address.

It dials the relay's QAD service (the relay URL's host, the relay config's ``quic_port``,
ALPN ``/iroh-qad/0``) through the endpoint's own QUIC engine, so the datagrams leave from the
endpoint's UDP sockets and the address the relay reports is the NAT mapping our peers will
see. One connection per address family we have a socket for, as iroh keeps one for IPv4
and one for IPv6, with iroh's client settings: transport parameter role "receive", initial
RTT 111 ms, keep-alive 25 s, idle timeout 35 s, no streams, closed with application code 1
``finished``.

The relay's certificate is checked with the endpoint's :class:`~irohpy.tls.webpki.CaTlsConfig`
(as its HTTPS is), and a report is taken only on a connection whose handshake verified it, so
no unauthenticated packet can put an address into our candidates. Plain ``http://`` relays
have no certificate to check and get no QAD. What is learned goes to ``on_change`` as the set
of our reflexive addresses; a connection that ends is dialed again after a capped backoff,
and a new home relay starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Final

from irohpy.base.relay_url import RelayUrl
from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.errors import QuicError, TlsError
from irohpy.quic.address_discovery import ObservedAddressReceived
from irohpy.quic.connection import QuicConfig
from irohpy.quic.transport_params import ROLE_RECEIVE
from irohpy.socket.paths import DirectPath
from irohpy.socket.relay_transport import RelayTransport
from irohpy.tls.webpki import CaTlsConfig, WebPkiClientHandshake

log = logging.getLogger(__name__)

ALPN: Final = b"/iroh-qad/0"
CLOSE_CODE: Final = 1
CLOSE_REASON: Final = b"finished"
KEEP_ALIVE: Final = 25.0
IDLE_TIMEOUT: Final = 35.0
INITIAL_RTT: Final = 0.111
#: A handshake must finish within this, or the attempt counts as failed.
CONNECT_TIMEOUT: Final = 5.0
RESOLVE_TIMEOUT: Final = 3.0
RETRY_MIN: Final = 1.0
RETRY_MAX: Final = 30.0


def client_config(cid_length: int) -> QuicConfig:
    """iroh's QAD client transport settings."""
    return QuicConfig(
        is_client=True,
        idle_timeout=IDLE_TIMEOUT,
        keep_alive=KEEP_ALIVE,
        initial_rtt=INITIAL_RTT,
        max_streams_bidi=0,
        max_streams_uni=0,
        max_datagram_frame_size=0,
        cid_length=cid_length,
        observed_address_role=ROLE_RECEIVE,
    )


class QadClient:
    """Keeps a QAD connection per family to the home relay; see the module docstring."""

    def __init__(self, engine: QuicEngine, relay: RelayTransport, ca: CaTlsConfig, families: list[int],
                 on_change: Callable[[set[DirectPath]], None]) -> None:
        self._engine = engine
        self._relay = relay
        self._ca = ca
        self._on_change = on_change
        self._observed: dict[int, DirectPath] = {}
        self._conns: dict[int, EngineConnection] = {}
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.ensure_future(self._family_loop(f)) for f in families]

    @property
    def addresses(self) -> set[DirectPath]:
        return set(self._observed.values())

    def _target(self) -> tuple[RelayUrl, int] | None:
        home = self._relay.home
        if home is None or home.scheme != "https":
            return None
        config = self._relay.config(home)
        if config is None or config.quic_port is None:
            return None
        return home, config.quic_port

    async def _family_loop(self, family: int) -> None:
        delay = RETRY_MIN
        while True:
            target = self._target()
            if target is None:
                self._forget(family)
                await self._home_change(None)
                continue
            url, port = target
            host = url.host.rstrip(".")
            addr = await self._resolve(host, port, family)
            worked = False
            if addr is not None:
                worked = await self._run_connection(family, addr, host, url)
            if self._relay.home != url:
                self._forget(family)
                delay = RETRY_MIN
                continue
            delay = RETRY_MIN if worked else min(2 * delay, RETRY_MAX)
            await self._home_change(delay)

    async def _home_change(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._relay.home_changed.wait()

    async def _resolve(self, host: str, port: int, family: int) -> DirectPath | None:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await self._loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        except (OSError, TimeoutError):
            return None
        for info in infos:
            return str(info[4][0]), int(info[4][1])
        return None

    async def _run_connection(self, family: int, addr: DirectPath, host: str, url: RelayUrl) -> bool:
        """Dial, then hold the connection until it ends or the home relay changes; whether it
        ever completed its handshake."""
        try:
            handshake = WebPkiClientHandshake(server_name=host, alpns=[ALPN], ca=self._ca)
            conn = self._engine.dial_with(addr, handshake, client_config(self._engine.core.config.transport.cid_length))
        except (QuicError, TlsError) as exc:
            log.debug("QAD to %s not possible: %s", url, exc)
            return False
        conn.on_observed_address = lambda ev: self._observe(family, conn, ev)
        self._conns[family] = conn
        closed = asyncio.ensure_future(conn.closed())
        moved = asyncio.ensure_future(self._relay.home_changed.wait())
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await conn.established()
            except TimeoutError:
                log.debug("QAD handshake with %s (%s) timed out", url, addr)
                return False
            except Exception as exc:  # the connection failed: its close says why
                log.debug("QAD handshake with %s (%s) failed: %s", url, addr, exc)
                return False
            await asyncio.wait([closed, moved], return_when=asyncio.FIRST_COMPLETED)
            return True
        finally:
            for fut in (closed, moved):
                fut.cancel()
            await asyncio.gather(closed, moved, return_exceptions=True)
            conn.on_observed_address = None
            conn.close(CLOSE_CODE, CLOSE_REASON)
            if self._conns.get(family) is conn:
                del self._conns[family]

    def _observe(self, family: int, conn: EngineConnection, ev: ObservedAddressReceived) -> None:
        if not conn.quic.handshake_complete:
            return  # only what the verified relay said counts
        addr = (ev.host, ev.port)
        if (":" in ev.host) != (family == socket.AF_INET6) or self._observed.get(family) == addr:
            return
        log.info("QAD: the relay sees us at %s:%d", *addr)
        self._observed[family] = addr
        self._on_change(self.addresses)

    def _forget(self, family: int) -> None:
        if self._observed.pop(family, None) is not None:
            self._on_change(self.addresses)

    async def close(self) -> None:
        """Close the connections (code 1, ``finished``) and stop."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns.values()):
            conn.close(CLOSE_CODE, CLOSE_REASON)
        self._conns.clear()
