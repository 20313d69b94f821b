"""``irohpy doctor report``: what this machine's network lets iroh do.

Like iroh's net_report: the interfaces and which IP families work, each relay's latency
(HTTP(S) ``/ping``, and over QUIC to its QUIC Address Discovery service), our reflexive
addresses from the relays' STUN and QAD services and whether the NAT mapping varies by
destination (the NAT type), whether the gateway offers port mapping, and whether a captive
portal rewrites HTTP. Only the relays given (and the default gateway) are
contacted: number 0's relays only when asked for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from irohpy.base.relay_url import RelayUrl
from irohpy.doctor import portmap
from irohpy.doctor.qad import QadResult, QadTarget, probe_family
from irohpy.errors import RelayError, StunError
from irohpy.relay import stun
from irohpy.relay.client import http_url, probe
from irohpy.relay.map import RelayConfig
from irohpy.socket.interfaces import interface_addrs
from irohpy.tls.webpki import CaTlsConfig

PINGS = 3
STUN_RETRIES = (0.3, 0.6, 1.2)
HTTP_TIMEOUT = 5.0
CHALLENGE_HEADER = "X-Iroh-Challenge"
RESPONSE_HEADER = "X-Iroh-Response"

NAT_NONE = "none"
NAT_CONE = "cone"
NAT_SYMMETRIC = "symmetric"
NAT_UDP_BLOCKED = "udp_blocked"
NAT_UNKNOWN = "unknown"


@dataclass
class RelayReport:
    url: str
    latency_ms: float | None = None
    """Best of a few HTTP(S) ``/ping`` round trips (None: unreachable)."""
    error: str | None = None
    stun_port: int | None = None
    reflexive: dict[str, str] = field(default_factory=dict)
    """Our address as this relay's STUN service saw it, per family (``ipv4``/``ipv6``)."""
    stun_ms: float | None = None
    captive_portal: bool | None = None
    qad_port: int | None = None
    """Where the relay's QUIC Address Discovery was dialed; None: it has none (a plain http
    relay, or a relay config without ``quic_port``)."""
    qad: dict[str, QadResult] = field(default_factory=dict)
    """Per family (``ipv4``/``ipv6``) the relay's host resolves in: QAD's latency and our address."""


@dataclass
class Report:
    interfaces: dict[str, list[str]]
    ipv4: bool
    ipv6: bool
    relays: list[RelayReport]
    udp: bool
    """Some relay's STUN or QAD service told us our address over UDP."""
    mapping_varies_by_dest: bool | None
    nat_type: str
    preferred_relay: str | None
    portmap: dict[str, Any]
    captive_portal: bool | None
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _usable_v6(addr: str) -> bool:
    ip = ipaddress.IPv6Address(addr.split("%")[0])
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


async def _relay_latency(session: aiohttp.ClientSession, url: RelayUrl, report: RelayReport) -> None:
    best: float | None = None
    for _ in range(PINGS):
        try:
            result = await probe(session, url)
        except RelayError as exc:
            report.error = str(exc)
            continue
        best = result.latency if best is None else min(best, result.latency)
        report.stun_port = result.stun_port or report.stun_port
    if best is not None:
        report.error = None
        report.latency_ms = best * 1000


async def _captive(session: aiohttp.ClientSession, url: RelayUrl) -> bool | None:
    """True if something between us and the relay answered ``/generate_204`` in its place."""
    challenge = os.urandom(8).hex()
    target = http_url(url, "/generate_204")
    if url.scheme == "https":
        host = f"[{url.host}]" if ":" in url.host else url.host.rstrip(".")
        target = f"http://{host}/generate_204"
    try:
        async with asyncio.timeout(HTTP_TIMEOUT):
            async with session.get(target, headers={CHALLENGE_HEADER: challenge}, allow_redirects=False) as resp:
                await resp.read()
                return resp.status != 204 or resp.headers.get(RESPONSE_HEADER) != f"response {challenge}"
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


class _StunSocket(asyncio.DatagramProtocol):
    """One UDP socket for every STUN query, so the answers show how the NAT maps it."""

    def __init__(self) -> None:
        self.waiters: dict[bytes, asyncio.Future[tuple[str, int]]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            msg = stun.parse(data)
        except StunError:
            return
        fut = self.waiters.get(msg.tx_id)
        if fut is not None and not fut.done() and msg.mapped is not None:
            fut.set_result(msg.mapped)


async def _stun_family(family: socket.AddressFamily, targets: list[tuple[RelayReport, str, int]]) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    except OSError:
        sock.close()
        return
    transport, proto = await loop.create_datagram_endpoint(_StunSocket, sock=sock)
    name = _family(family)

    async def query(report: RelayReport, host: str, port: int) -> None:
        for timeout in STUN_RETRIES:
            request, tx = stun.binding_request()
            fut: asyncio.Future[tuple[str, int]] = loop.create_future()
            proto.waiters[tx] = fut
            start = time.perf_counter()
            try:
                transport.sendto(request, (host, port))
                mapped = await asyncio.wait_for(fut, timeout)
            except (TimeoutError, OSError):
                continue
            finally:
                proto.waiters.pop(tx, None)
            report.reflexive[name] = f"[{mapped[0]}]:{mapped[1]}" if ":" in mapped[0] else f"{mapped[0]}:{mapped[1]}"
            report.stun_ms = (time.perf_counter() - start) * 1000
            return

    try:
        await asyncio.gather(*(query(*t) for t in targets))
    finally:
        transport.close()


async def _resolve(host: str, port: int, family: socket.AddressFamily) -> str | None:
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host.rstrip("."), port, family=family, type=socket.SOCK_DGRAM), HTTP_TIMEOUT)
    except (OSError, TimeoutError):
        return None
    return str(infos[0][4][0]) if infos else None


def _reflexive(report: RelayReport) -> set[str]:
    """The families some UDP service of this relay (STUN or QAD) saw us in."""
    return set(report.reflexive) | {family for family, q in report.qad.items() if q.reflexive is not None}


def classify(relays: list[RelayReport], local_v4: list[str]) -> tuple[bool | None, str]:
    """(mapping varies by destination, NAT type) from the IPv4 addresses the relays' STUN and
    QAD services saw. Each service was asked from a socket of its own, so the mapping is judged
    within each, never across; only STUN's silence says UDP is blocked (a QAD handshake can
    fail for other reasons)."""
    asked = [r for r in relays if r.stun_port is not None and r.latency_ms is not None]
    by_stun = [r.reflexive["ipv4"] for r in asked if "ipv4" in r.reflexive]
    by_qad = [q.reflexive for r in relays if (q := r.qad.get("ipv4")) is not None and q.reflexive is not None]
    seen = by_stun + by_qad
    if asked and not seen:
        return None, NAT_UDP_BLOCKED
    if not seen:
        return None, NAT_UNKNOWN
    if any(addr.rpartition(":")[0] in local_v4 for addr in seen):
        return False, NAT_NONE
    compared = [addrs for addrs in (by_stun, by_qad) if len(addrs) >= 2]
    if not compared:
        return None, NAT_UNKNOWN
    varies = any(len(set(addrs)) > 1 for addrs in compared)
    return varies, NAT_SYMMETRIC if varies else NAT_CONE


def _family(family: socket.AddressFamily) -> str:
    return "ipv6" if family == socket.AF_INET6 else "ipv4"


async def _qad(relays: list[RelayConfig], reports: list[RelayReport], ca: CaTlsConfig) -> None:
    """QAD to every https relay with a ``quic_port``, over each family its host resolves in."""
    served: list[tuple[RelayUrl, int, RelayReport]] = []
    for config, report in zip(relays, reports):
        if config.url.scheme == "https" and config.quic_port is not None:
            report.qad_port = config.quic_port
            served.append((config.url, config.quic_port, report))

    async def family_probe(family: socket.AddressFamily) -> None:
        targets: list[QadTarget] = []
        asked: list[RelayReport] = []
        for url, port, report in served:
            host = await _resolve(url.host, port, family)
            if host is not None:
                targets.append(QadTarget(url.host.rstrip("."), (host, port)))
                asked.append(report)
        if targets:
            for report, result in zip(asked, await probe_family(family, targets, ca)):
                report.qad[_family(family)] = result

    await asyncio.gather(*(family_probe(f) for f in (socket.AF_INET, socket.AF_INET6)))


async def run_report(relays: Iterable[RelayConfig | RelayUrl], *, ca: CaTlsConfig | None = None,
                     portmap_timeout: float = portmap.PROBE_TIMEOUT) -> Report:
    """Probe everything; each part fails on its own (shown as None or an error).

    ``ca``: whom to trust for the relays' certificates, over HTTPS and QAD (default: the
    system's roots). A bare URL is a relay with iroh's default QAD port.
    """
    start = time.perf_counter()
    configs = [r if isinstance(r, RelayConfig) else RelayConfig(r) for r in relays]
    urls = [c.url for c in configs]
    ca = ca if ca is not None else CaTlsConfig.system()
    v4 = [a for a in interface_addrs(socket.AF_INET) if not a.startswith("127.")]
    v6 = [a for a in interface_addrs(socket.AF_INET6) if _usable_v6(a)]
    reports = [RelayReport(str(url)) for url in urls]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                                     connector=aiohttp.TCPConnector(ssl=ca.ssl_context())) as session:
        mapping = asyncio.ensure_future(portmap.probe(timeout=portmap_timeout))
        captive = await asyncio.gather(*(_relay_latency(session, url, r) for url, r in zip(urls, reports)),
                                       *(_captive(session, url) for url in urls))
        for report, flag in zip(reports, captive[len(urls):]):
            report.captive_portal = flag
        for family in (socket.AF_INET, socket.AF_INET6):
            targets = []
            for url, report in zip(urls, reports):
                if report.stun_port is None or report.latency_ms is None:
                    continue
                host = await _resolve(url.host, report.stun_port, family)
                if host is not None:
                    targets.append((report, host, report.stun_port))
            if targets:
                await _stun_family(family, targets)
        # After the other probes, so that their latencies and QAD's do not share the CPU.
        await _qad(configs, reports, ca)
        mapped = await mapping
    varies, nat = classify(reports, v4)
    reachable = [r for r in reports if r.latency_ms is not None]
    flags = [r.captive_portal for r in reports if r.captive_portal is not None]
    return Report(
        interfaces={"ipv4": v4, "ipv6": v6},
        ipv4=bool(v4) and (any("ipv4" in _reflexive(r) for r in reports) or bool(reachable)),
        ipv6=bool(v6) and any("ipv6" in _reflexive(r) for r in reports),
        relays=reports,
        udp=any(_reflexive(r) for r in reports),
        mapping_varies_by_dest=varies,
        nat_type=nat,
        preferred_relay=min(reachable, key=lambda r: r.latency_ms or 0.0).url if reachable else None,
        portmap={"gateway": mapped.gateway, "available": mapped.available, "upnp": mapped.upnp,
                 "pcp": mapped.pcp, "nat_pmp": mapped.nat_pmp},
        captive_portal=any(flags) if flags else None,
        elapsed_s=time.perf_counter() - start,
    )


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def format_report(report: Report) -> str:
    """The report as text for people."""
    lines = [
        f"interfaces    ipv4 {', '.join(report.interfaces['ipv4']) or '-'}",
        f"              ipv6 {', '.join(report.interfaces['ipv6']) or '-'}",
        f"ipv4          {_yes(report.ipv4)}",
        f"ipv6          {_yes(report.ipv6)}",
        f"udp           {_yes(report.udp)}",
        f"nat type      {report.nat_type} (mapping varies by destination: {_yes(report.mapping_varies_by_dest)})",
        f"port mapping  {_yes(report.portmap['available'])}"
        + (f" (gateway {report.portmap['gateway']}: upnp {_yes(bool(report.portmap['upnp']))}, "
           f"pcp {_yes(report.portmap['pcp'])}, nat-pmp {_yes(bool(report.portmap['nat_pmp']))})"
           if report.portmap["gateway"] else " (no default gateway)"),
        f"captive portal {_yes(report.captive_portal)}",
        f"preferred relay {report.preferred_relay or '-'}",
        "relays:",
    ]
    for r in report.relays:
        latency = f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else f"unreachable ({r.error})"
        seen = ", ".join(f"{k} {v}" for k, v in sorted(r.reflexive.items())) or "no STUN answer"
        stun_at = f"stun :{r.stun_port}" if r.stun_port else "no stun"
        lines.append(f"  {r.url}  {latency}  {stun_at}  {seen}")
        lines.append(f"    {_qad_text(r)}")
    return "\n".join(lines)


def _qad_text(r: RelayReport) -> str:
    if r.qad_port is None:
        why = "plain http relay" if r.url.startswith("http:") else "no QAD port configured"
        return f"qad not available ({why})"
    parts = [f"qad :{r.qad_port}"]
    for family, q in sorted(r.qad.items()):
        if q.reflexive is not None:
            latency = f"{q.latency_ms:.1f} ms" if q.latency_ms is not None else "? ms"
            parts.append(f"{family} {latency} {q.reflexive}")
        else:
            parts.append(f"{family} failed ({q.error})")
    if not r.qad:
        parts.append("host has no address")
    return "  ".join(parts)
