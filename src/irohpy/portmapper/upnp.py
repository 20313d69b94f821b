"""A UPnP IGD client: find the gateway's WAN connection service, then map, renew and delete.

SSDP goes to the multicast group and to the gateway; only the gateway's own answer
counts. HTTP runs through aiohttp with a total deadline per request and a byte cap
on every body, so a slow or bloated gateway costs at most that.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket

import aiohttp

from irohpy.errors import PortMapError, PortMapRefused
from irohpy.portmapper import igd, ssdp

SEARCH_TIMEOUT = 1.0
HTTP_TIMEOUT = 2.0
LEASE = 2 * 60 * 60
"""Seconds we ask for, as iroh does (it renews after one hour whatever the gateway says)."""
DESCRIPTION = "irohpy"
RANDOM_PORT_TRIES = 3


class _Search(asyncio.DatagramProtocol):
    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if addr[0] != self.gateway or self.found.done():
            return
        try:
            self.found.set_result(ssdp.parse_answer(data, addr[0]))
        except PortMapError:
            pass

    def error_received(self, exc: Exception) -> None:
        pass


async def search(gateway: str, local_ip: str, timeout: float = SEARCH_TIMEOUT) -> str | None:
    """The gateway's description URL, if it answers an M-SEARCH within ``timeout``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local_ip))
        sock.bind((local_ip, 0))
    except OSError:
        sock.close()
        return None
    transport, proto = await loop.create_datagram_endpoint(lambda: _Search(gateway), sock=sock)
    try:
        for target in (ssdp.GROUP, gateway):
            for st in (ssdp.IGD_V1, ssdp.IGD_V2):
                transport.sendto(ssdp.m_search(st), (target, ssdp.PORT))
        try:
            return await asyncio.wait_for(asyncio.shield(proto.found), timeout)
        except TimeoutError:
            return None
    finally:
        proto.found.cancel()
        transport.close()


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > igd.MAX_DOCUMENT:
        raise PortMapError(f"UPnP answer of {resp.content_length} bytes")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(8192):
        body += chunk
        if len(body) > igd.MAX_DOCUMENT:
            raise PortMapError("UPnP answer over the size limit")
    return bytes(body)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT), trust_env=False,
                                 max_line_size=4096, max_field_size=4096)


async def describe(location: str) -> igd.Service:
    """Fetch and parse the device description; errors are :class:`PortMapError`."""
    try:
        async with _session() as http, http.get(location, allow_redirects=False) as resp:
            if resp.status != 200:
                raise PortMapError(f"UPnP description answered HTTP {resp.status}")
            return igd.parse_description(await _read(resp), location)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PortMapError(f"UPnP description fetch failed: {exc!r}") from None


async def call(service: igd.Service, action: str, args: dict[str, str | int]) -> dict[str, str]:
    """One SOAP action; a fault is :class:`PortMapRefused`, anything malformed :class:`PortMapError`."""
    headers, body = igd.soap_request(service, action, args)
    try:
        async with _session() as http, http.post(service.control_url, data=body, headers=headers,
                                                 allow_redirects=False) as resp:
            if resp.status not in (200, 500):
                raise PortMapError(f"UPnP {action} answered HTTP {resp.status}")
            return igd.parse_soap(await _read(resp), action)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PortMapError(f"UPnP {action} failed: {exc!r}") from None


async def external_ip(service: igd.Service) -> str:
    out = await call(service, "GetExternalIPAddress", {})
    try:
        ip = ipaddress.IPv4Address(out.get("NewExternalIPAddress", ""))
    except ValueError:
        raise PortMapError("UPnP external address is not IPv4") from None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise PortMapError(f"UPnP external address {ip} is not usable")
    return str(ip)


async def add_mapping(service: igd.Service, local_ip: str, internal_port: int, preferred: int) -> int:
    """Map UDP ``internal_port`` and return the external port: ``preferred`` if free, else another."""
    async def add(port: int, lease: int) -> int:
        await call(service, "AddPortMapping", {
            "NewRemoteHost": "", "NewExternalPort": port, "NewProtocol": "UDP", "NewInternalPort": internal_port,
            "NewInternalClient": local_ip, "NewEnabled": 1, "NewPortMappingDescription": DESCRIPTION,
            "NewLeaseDuration": lease})
        return port

    async def add_any_lease(port: int) -> int:
        try:
            return await add(port, LEASE)
        except PortMapRefused as exc:
            if exc.code != igd.ONLY_PERMANENT:
                raise
            return await add(port, 0)

    try:
        return await add_any_lease(preferred)
    except PortMapRefused as exc:
        if exc.code != igd.CONFLICT:
            raise
    if service.version >= 2:
        out = await call(service, "AddAnyPortMapping", {
            "NewRemoteHost": "", "NewExternalPort": preferred, "NewProtocol": "UDP",
            "NewInternalPort": internal_port, "NewInternalClient": local_ip, "NewEnabled": 1,
            "NewPortMappingDescription": DESCRIPTION, "NewLeaseDuration": LEASE})
        try:
            port = int(out.get("NewReservedPort", ""))
        except ValueError:
            raise PortMapError("UPnP AddAnyPortMapping gave no port") from None
        if not 0 < port < 65536:
            raise PortMapError(f"UPnP AddAnyPortMapping gave port {port}")
        return port
    last: PortMapRefused | None = None
    for _ in range(RANDOM_PORT_TRIES):
        try:
            return await add_any_lease(random.randint(1024, 65535))
        except PortMapRefused as exc:
            if exc.code != igd.CONFLICT:
                raise
            last = exc
    assert last is not None
    raise last


async def delete_mapping(service: igd.Service, external_port: int) -> None:
    await call(service, "DeletePortMapping", {"NewRemoteHost": "", "NewExternalPort": external_port,
                                              "NewProtocol": "UDP"})
