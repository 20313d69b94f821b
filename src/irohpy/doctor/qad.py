"""``doctor report``'s QUIC Address Discovery probe: each relay's latency over QUIC, and the
address its QAD service sees us at.

As iroh's net_report does: per address family, a QUIC connection to each relay's QAD service
(ALPN ``/iroh-qad/0`` on the relay config's ``quic_port``) with iroh's QAD client settings,
through irohpy's own engine on one UDP socket per family, so that, as with the STUN answers,
different reports from different relays mean the NAT maps that socket per destination.

The latency is the connection's smoothed RTT when the relay's first OBSERVED_ADDRESS arrives,
which is what iroh reports (``conn.rtt()``): one round trip, comparable with the HTTPS ``/ping``.
The handshake's duration would count the relay's Retry round trip and the TLS flights (three
round trips and the crypto). The RTT samples come from the handshake, so the relay's time to
answer a ClientHello is in it, as it is in iroh's.

Only a connection whose handshake verified the relay's certificate (WebPKI against the report's
:class:`~irohpy.tls.webpki.CaTlsConfig`) is believed. Each probe has iroh's 3 s budget and is
closed with code 1 ``finished``; the engine and its socket are closed before the probe returns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.endpoint.qad import ALPN, CLOSE_CODE, CLOSE_REASON, client_config
from irohpy.errors import ConnectionLost, QuicError, TlsError
from irohpy.quic.address_discovery import ObservedAddressReceived
from irohpy.tls.webpki import CaTlsConfig, WebPkiClientHandshake

#: iroh's PROBES_TIMEOUT: dial, handshake and the first report, together.
PROBE_TIMEOUT: Final = 3.0


@dataclass
class QadResult:
    """One relay's QAD answer over one address family."""

    latency_ms: float | None = None
    """The connection's smoothed RTT when the relay first reported our address."""
    reflexive: str | None = None
    """Our address as the relay's QAD service saw it."""
    local_port: int | None = None
    """Our socket's port, to hold against the reflexive one: whether the NAT kept it."""
    error: str | None = None


@dataclass(frozen=True)
class QadTarget:
    server_name: str
    """What the relay's certificate must name: the relay URL's host."""
    addr: tuple[str, int]


def _canonical(host: str) -> str:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (iroh's ``to_canonical``)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def probe_family(family: socket.AddressFamily, targets: Sequence[QadTarget], ca: CaTlsConfig,
                       timeout: float = PROBE_TIMEOUT) -> list[QadResult]:
    """Probe every target at once from one fresh socket of ``family``; a result per target."""
    results = [QadResult() for _ in targets]
    try:
        engine = await QuicEngine.bind(os.urandom(32), host="::" if family == socket.AF_INET6 else "0.0.0.0")
    except OSError as exc:
        for result in results:
            result.error = f"no {'IPv6' if family == socket.AF_INET6 else 'IPv4'} socket: {exc.strerror or exc}"
        return results
    for result in results:
        result.local_port = engine.local_addr[1]
    try:
        await asyncio.gather(*(_probe(engine, family, t, ca, r, timeout) for t, r in zip(targets, results)))
    finally:
        await engine.close()
    return results


async def _probe(engine: QuicEngine, family: socket.AddressFamily, target: QadTarget, ca: CaTlsConfig,
                 result: QadResult, timeout: float) -> None:
    try:
        handshake = WebPkiClientHandshake(server_name=target.server_name, alpns=[ALPN], ca=ca)
        conn = engine.dial_with(target.addr, handshake, client_config(engine.core.config.transport.cid_length))
    except (QuicError, TlsError) as exc:
        result.error = str(exc)
        return
    seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def observed(ev: ObservedAddressReceived) -> None:
        if seen.done() or not conn.quic.handshake_complete:
            return  # only what the verified relay says counts
        host = _canonical(ev.host)
        if (":" in host) != (family == socket.AF_INET6):
            result.error = f"the relay reported {_join(host, ev.port)} on the other address family"
        else:
            result.reflexive = _join(host, ev.port)
            rtt = conn.quic.recovery.rtt
            result.latency_ms = rtt.smoothed * 1000 if rtt.has_sample else None
        seen.set_result(None)

    conn.on_observed_address = observed
    closed = asyncio.ensure_future(conn.closed())
    ends: list[asyncio.Future[Any]] = [seen, closed]
    try:
        async with asyncio.timeout(timeout):
            await conn.established()
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if not seen.done():
            result.error = f"closed before reporting an address: {_why(conn)}"
    except ConnectionLost:
        result.error = f"handshake failed: {_why(conn)}"
    except TimeoutError:
        result.error = (f"no address reported within {timeout:g} s" if conn.quic.handshake_complete
                        else f"no answer within {timeout:g} s")
    finally:
        closed.cancel()
        await asyncio.gather(closed, return_exceptions=True)
        seen.cancel()
        conn.on_observed_address = None
        conn.close(CLOSE_CODE, CLOSE_REASON)


def _why(conn: EngineConnection) -> str:
    t = conn.terminated
    if t is None:
        return "connection lost"
    reason = t.reason.decode(errors="replace")
    return f"{reason} (code {t.error_code:#x})" if reason else f"code {t.error_code:#x}"
