"""Is port mapping available? ``irohpy doctor``'s view of :func:`irohpy.portmapper.mapping.probe`.

The probe asks the default gateway (or a given one) for PCP, NAT-PMP and UPnP IGD at once, with
the port mapper's own codecs and deadlines; only the gateway (and, for SSDP, the multicast
group on its link) is ever contacted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from irohpy.portmapper import mapping
from irohpy.portmapper.gateway import Home, find_home, local_ip_towards

PROBE_TIMEOUT = 2.0
"""Enough for the slowest part: SSDP waits up to a second for an answer."""


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


async def probe(gateway: str | None = None, timeout: float = PROBE_TIMEOUT) -> PortMapProbe:
    """Ask the default gateway (or ``gateway``) which mapping protocols it speaks."""
    if gateway is None:
        home = find_home()
    else:
        local = local_ip_towards(gateway)
        home = Home(gateway, local) if local else None
    if home is None:
        return PortMapProbe(gateway, None, False, None)
    try:
        found = await asyncio.wait_for(mapping.probe(home), timeout)
    except TimeoutError:
        return PortMapProbe(home.gateway, None, False, None)
    return PortMapProbe(home.gateway, found.upnp, found.pcp, found.nat_pmp)
