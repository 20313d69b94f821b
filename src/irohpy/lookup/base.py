"""Address lookup: the interface every lookup service implements.

A lookup service publishes what others need to dial us (home relay, maybe
direct addresses, user data) and resolves an EndpointId to the same, as
iroh's ``AddressLookup`` trait does. Results stream in, since sources such as
mDNS keep finding things over time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from irohpy.base.addr import EndpointAddr, IpAddr, RelayAddr, TransportAddr
from irohpy.base.keys import EndpointId
from irohpy.base.relay_url import RelayUrl

MAX_USER_DATA = 245


@dataclass(frozen=True)
class EndpointData:
    """What is published about an endpoint, without its id."""

    relay_urls: frozenset[RelayUrl] = frozenset()
    ip_addrs: frozenset[IpAddr] = frozenset()
    user_data: str | None = None

    @classmethod
    def from_addr(cls, addr: EndpointAddr, user_data: str | None = None) -> EndpointData:
        return cls(frozenset(addr.relay_urls()), frozenset(addr.ip_addrs()), user_data)

    def relay_only(self) -> EndpointData:
        """iroh's default publishing filter: the relay, never IP addresses."""
        return EndpointData(self.relay_urls, frozenset(), self.user_data)


@dataclass(frozen=True)
class EndpointInfo:
    endpoint_id: EndpointId
    data: EndpointData = field(default_factory=EndpointData)

    def to_addr(self) -> EndpointAddr:
        addrs: set[TransportAddr] = {RelayAddr(u) for u in self.data.relay_urls}
        addrs |= set(self.data.ip_addrs)
        return EndpointAddr(self.endpoint_id, frozenset(addrs))


@dataclass(frozen=True)
class LookupItem:
    """One answer, and where it came from ("dns", "pkarr", "mdns", "dht", "memory", ...)."""

    info: EndpointInfo
    provenance: str
    last_updated_us: int | None = None


@runtime_checkable
class AddressLookup(Protocol):
    """Implement ``resolve`` (and ``publish`` if the service can announce us)."""

    def publish(self, data: EndpointData) -> None:
        """Announce our current data; called on every change. Must not block."""

    def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        """Answers for ``endpoint_id`` as they arrive; ends when the source has no more."""

    async def close(self) -> None:
        """Stop background work (republishing, sockets)."""
