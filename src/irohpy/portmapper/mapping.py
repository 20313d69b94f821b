"""Getting, renewing and releasing one UDP port mapping with PCP, NAT-PMP or UPnP IGD.

:func:`probe` asks the gateway which protocols it speaks (all three at once, each
with its own deadline); :func:`create` maps with one protocol and returns a
:class:`Mapping`, which knows how to :func:`release` itself.
"""

from __future__ import annotations

import asyncio
import enum
import os
from dataclasses import dataclass

from irohpy.errors import PortMapError, PortMapRefused
from irohpy.portmapper import exchange, igd, natpmp, pcp, upnp
from irohpy.portmapper.gateway import Home

MIN_LIFETIME = 30
"""Leases shorter than this (seconds) are refused: renewing them would keep us busy."""


class Protocol(enum.StrEnum):
    PCP = "pcp"
    NAT_PMP = "nat_pmp"
    UPNP = "upnp"


PREFERENCE = (Protocol.PCP, Protocol.NAT_PMP, Protocol.UPNP)
"""iroh's order: PCP, then NAT-PMP, then UPnP (the most deployed, and the least reliable)."""


@dataclass(frozen=True)
class Probe:
    """What the gateway answered: the protocols it speaks."""

    pcp: bool = False
    nat_pmp: str | None = None
    """The external address NAT-PMP reported."""
    upnp: str | None = None
    """The gateway's UPnP device description URL."""

    def available(self) -> list[Protocol]:
        have = {Protocol.PCP: self.pcp, Protocol.NAT_PMP: bool(self.nat_pmp), Protocol.UPNP: bool(self.upnp)}
        return [p for p in PREFERENCE if have[p]]


@dataclass(frozen=True)
class Mapping:
    """A mapping the gateway granted: ``external`` reaches ``home.local_ip:internal_port``."""

    protocol: Protocol
    home: Home
    internal_port: int
    external: tuple[str, int]
    lifetime: float
    nonce: bytes = b""
    service: igd.Service | None = None

    @property
    def renew_after(self) -> float:
        """Half the lifetime, as iroh renews."""
        return self.lifetime / 2


async def probe(home: Home, protocols: tuple[Protocol, ...] = PREFERENCE) -> Probe:
    async def pcp_probe() -> bool:
        return await _quiet(exchange.ask(home.gateway, pcp.SERVER_PORT, home.local_ip,
                                         pcp.announce_request(home.local_ip), pcp.parse)) is not None

    async def natpmp_probe() -> str | None:
        answer = await _quiet(exchange.ask(home.gateway, natpmp.SERVER_PORT, home.local_ip,
                                           natpmp.external_address_request(), natpmp.parse_external_address))
        return answer.ip if isinstance(answer, natpmp.ExternalAddress) else None

    async def upnp_probe() -> str | None:
        return await upnp.search(home.gateway, home.local_ip)

    async def skip() -> None:
        return None

    found = await asyncio.gather(
        pcp_probe() if Protocol.PCP in protocols else skip(),
        natpmp_probe() if Protocol.NAT_PMP in protocols else skip(),
        upnp_probe() if Protocol.UPNP in protocols else skip(),
    )
    return Probe(bool(found[0]), found[1], found[2])


async def _quiet(coro: object) -> object:
    """A refusal during a probe still means the protocol is spoken, but not usable: None."""
    try:
        return await coro  # type: ignore[misc]
    except PortMapRefused:
        return None


def _check_port(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise PortMapError(f"{what} gave external port {port}")
    return port


async def create(protocol: Protocol, home: Home, internal_port: int, probe: Probe,
                 previous: Mapping | None = None) -> Mapping:
    """Map UDP ``internal_port``; with ``previous`` (same protocol), renew it: same nonce, same port."""
    if previous is not None and previous.protocol is not protocol:
        previous = None
    if protocol is Protocol.PCP:
        return await _create_pcp(home, internal_port, previous)
    if protocol is Protocol.NAT_PMP:
        return await _create_natpmp(home, internal_port, previous.external if previous else None)
    location = probe.upnp
    if previous is not None and previous.service is not None:
        return await _renew_upnp(previous)
    if not location:
        raise PortMapError("no UPnP gateway was found")
    return await _create_upnp(home, internal_port, location, None)


def _lifetime(seconds: float, what: str) -> float:
    if seconds < MIN_LIFETIME:
        raise PortMapError(f"{what} granted a lease of {seconds} s")
    return seconds


async def _create_pcp(home: Home, port: int, previous: Mapping | None) -> Mapping:
    # RFC 6887 §11.2.1: a renewal repeats the request, nonce included.
    nonce = previous.nonce if previous else os.urandom(pcp.NONCE_SIZE)
    ext_ip, ext_port = previous.external if previous else ("0.0.0.0", 0)
    request = pcp.map_request(nonce, home.local_ip, port, pcp.LIFETIME, ext_port, ext_ip)

    def parse(data: bytes) -> pcp.MapAnswer:
        answer = pcp.parse(data)
        if not isinstance(answer, pcp.MapAnswer) or answer.nonce != nonce or answer.protocol != pcp.UDP \
                or answer.internal_port != port:
            raise PortMapError("PCP answer is not for our request")
        return answer

    answer = await exchange.ask(home.gateway, pcp.SERVER_PORT, home.local_ip, request, parse)
    if answer is None:
        raise PortMapError("PCP gateway did not answer")
    if ":" in answer.external_ip:
        raise PortMapError("PCP gave an IPv6 external address")
    external = (answer.external_ip, _check_port(answer.external_port, "PCP"))
    return Mapping(Protocol.PCP, home, port, external, _lifetime(answer.lifetime, "PCP"), nonce=nonce)


async def _create_natpmp(home: Home, port: int, previous: tuple[str, int] | None) -> Mapping:
    def parse_map(data: bytes) -> natpmp.MapAnswer:
        answer = natpmp.parse_map(data)
        if answer.internal_port != port:
            raise PortMapError("NAT-PMP answer is not for our port")
        return answer

    request = natpmp.map_request(port, previous[1] if previous else 0)
    answer = await exchange.ask(home.gateway, natpmp.SERVER_PORT, home.local_ip, request, parse_map)
    address = await exchange.ask(home.gateway, natpmp.SERVER_PORT, home.local_ip,
                                 natpmp.external_address_request(), natpmp.parse_external_address)
    if answer is None or address is None:
        raise PortMapError("NAT-PMP gateway did not answer")
    external = (address.ip, _check_port(answer.external_port, "NAT-PMP"))
    return Mapping(Protocol.NAT_PMP, home, port, external, _lifetime(answer.lifetime, "NAT-PMP"))


async def _create_upnp(home: Home, port: int, location: str, previous: tuple[str, int] | None) -> Mapping:
    service = await upnp.describe(location)
    ip = await upnp.external_ip(service)
    external_port = await upnp.add_mapping(service, home.local_ip, port, previous[1] if previous else port)
    return Mapping(Protocol.UPNP, home, port, (ip, _check_port(external_port, "UPnP")), upnp.LEASE,
                   service=service)


async def _renew_upnp(previous: Mapping) -> Mapping:
    assert previous.service is not None
    port = await upnp.add_mapping(previous.service, previous.home.local_ip, previous.internal_port,
                                  previous.external[1])
    ip = await upnp.external_ip(previous.service)
    return Mapping(Protocol.UPNP, previous.home, previous.internal_port, (ip, _check_port(port, "UPnP")),
                   upnp.LEASE, service=previous.service)


async def release(mapping: Mapping) -> None:
    """Ask the gateway to delete ``mapping``; a gateway that does not answer is not waited for long."""
    home = mapping.home
    if mapping.protocol is Protocol.PCP:
        request = pcp.map_request(mapping.nonce, home.local_ip, mapping.internal_port, 0)
        await _quiet(exchange.ask(home.gateway, pcp.SERVER_PORT, home.local_ip, request, pcp.parse))
    elif mapping.protocol is Protocol.NAT_PMP:
        request = natpmp.map_request(mapping.internal_port, 0, 0)
        await _quiet(exchange.ask(home.gateway, natpmp.SERVER_PORT, home.local_ip, request, natpmp.parse_map))
    elif mapping.service is not None:
        try:
            await upnp.delete_mapping(mapping.service, mapping.external[1])
        except (PortMapError, PortMapRefused):
            pass
