"""Is port mapping available? Probes of the default gateway for UPnP-IGD, PCP and NAT-PMP.

The codecs are sans-IO (one request builder and one strict parser per protocol); :func:`probe`
sends each request once from a fresh socket and waits briefly for a well-formed answer. Only the
gateway (and, for SSDP, the link-local multicast group) is ever contacted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from irohpy.errors import PortMapError

PORTMAP_PORT = 5351
SSDP_PORT = 1900
SSDP_GROUP = "239.255.255.250"
IGD = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
PROBE_TIMEOUT = 1.0
MAX_SSDP = 4096

T = TypeVar("T")


def natpmp_request() -> bytes:
    """RFC 6886 §3.2: version 0, opcode 0 (external address)."""
    return b"\x00\x00"


def parse_natpmp(data: bytes) -> str:
    """The external IPv4 address of a successful NAT-PMP answer."""
    if len(data) != 12:
        raise PortMapError(f"NAT-PMP answer of {len(data)} bytes, expected 12")
    version, opcode, result, _epoch = struct.unpack_from("!BBHI", data)
    if version != 0 or opcode != 128:
        raise PortMapError(f"not a NAT-PMP external-address answer (version {version}, opcode {opcode})")
    if result != 0:
        raise PortMapError(f"NAT-PMP result code {result}")
    return str(ipaddress.IPv4Address(data[8:12]))


def pcp_request(client_ip: str) -> bytes:
    """RFC 6887 §7.1: an ANNOUNCE request (version 2, opcode 0, lifetime 0) from ``client_ip``."""
    ip = ipaddress.ip_address(client_ip)
    as_v6 = ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip
    return struct.pack("!BBHI", 2, 0, 0, 0) + as_v6.packed


def parse_pcp(data: bytes) -> int:
    """The epoch of a successful PCP ANNOUNCE answer."""
    if len(data) < 24 or len(data) > 1100 or len(data) % 4:
        raise PortMapError(f"PCP answer of {len(data)} bytes")
    version, op, _reserved, result, _lifetime, epoch = struct.unpack_from("!BBBBII", data)
    if version != 2 or op != 0x80:
        raise PortMapError(f"not a PCP ANNOUNCE answer (version {version}, opcode {op:#x})")
    if result != 0:
        raise PortMapError(f"PCP result code {result}")
    return int(epoch)


def ssdp_request(host: str) -> bytes:
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {host}:{SSDP_PORT}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
            f"ST: {IGD}\r\n\r\n").encode()


def parse_ssdp(data: bytes) -> str:
    """The LOCATION of an SSDP answer from an Internet Gateway Device."""
    if len(data) > MAX_SSDP:
        raise PortMapError("SSDP answer too long")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PortMapError("SSDP answer is not ASCII") from None
    lines = text.split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise PortMapError(f"SSDP answer status {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep:
            raise PortMapError(f"bad SSDP header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    st, location = headers.get("st", ""), headers.get("location", "")
    if "InternetGatewayDevice" not in st and "WANIPConnection" not in st:
        raise PortMapError(f"SSDP answer for {st[:60]!r}, not a gateway")
    if not location.startswith("http://"):
        raise PortMapError("SSDP answer without an http LOCATION")
    return location


def default_gateway(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The IPv4 default gateway from the kernel's routing table (Linux), or None."""
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            try:
                return str(ipaddress.IPv4Address(struct.pack("<I", int(fields[2], 16))))
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class PortMapProbe:
    gateway: str | None
    upnp: str | None
    """The gateway's description URL when it answered SSDP."""
    pcp: bool
    nat_pmp: str | None
    """The external address NAT-PMP reported."""

    @property
    def available(self) -> bool:
        return bool(self.upnp or self.pcp or self.nat_pmp)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(16)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if not self.queue.full():
            self.queue.put_nowait((data, addr[:2]))


async def _ask(targets: list[tuple[str, int]], request: bytes, sources: set[str], timeout: float,
               parse: Callable[[bytes], T]) -> T | None:
    """Send ``request`` to each target from one fresh socket; the first answer ``parse`` accepts."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("0.0.0.0", 0))
    transport, proto = await loop.create_datagram_endpoint(_Collect, sock=sock)
    try:
        for target in targets:
            transport.sendto(request, target)
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data, addr = await asyncio.wait_for(proto.queue.get(), left)
            except TimeoutError:
                return None
            if addr[0] not in sources:
                continue
            try:
                return parse(data)
            except PortMapError:
                continue
        return None
    finally:
        transport.close()


def _local_ip(gateway: str) -> str:
    """Our address on the gateway's network (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((gateway, PORTMAP_PORT))
        return str(s.getsockname()[0])


async def probe(gateway: str | None = None, timeout: float = PROBE_TIMEOUT) -> PortMapProbe:
    """Ask the default gateway (or ``gateway``) for UPnP-IGD, PCP and NAT-PMP, all at once."""
    gateway = gateway or default_gateway()
    if gateway is None:
        return PortMapProbe(None, None, False, None)
    try:
        local = _local_ip(gateway)
    except OSError:
        return PortMapProbe(gateway, None, False, None)
    only_gateway = {gateway}
    upnp, pcp, natpmp = await asyncio.gather(
        _ask([(gateway, SSDP_PORT), (SSDP_GROUP, SSDP_PORT)], ssdp_request(SSDP_GROUP), only_gateway, timeout,
             parse_ssdp),
        _ask([(gateway, PORTMAP_PORT)], pcp_request(local), only_gateway, timeout, parse_pcp),
        _ask([(gateway, PORTMAP_PORT)], natpmp_request(), only_gateway, timeout, parse_natpmp),
    )
    return PortMapProbe(gateway, upnp, pcp is not None, natpmp)
