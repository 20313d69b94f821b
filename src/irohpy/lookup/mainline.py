"""Address lookup over the BitTorrent Mainline DHT (opt-in, as in iroh).

Our pkarr packet is stored as a BEP 44 mutable item: key = EndpointId, no
salt, seq = the packet's timestamp, value = its DNS message, signature = the
pkarr signature. Any DHT node can store and serve it; none can forge it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from irohpy.base.keys import EndpointId, SecretKey
from irohpy.errors import IrohError
from irohpy.lookup.base import LookupItem
from irohpy.lookup.dht import DhtNode, publish_signed, resolve_signed
from irohpy.lookup.pkarr import SignedPacket
from irohpy.lookup.republish import AddrFilter, Republisher, relay_only

REPUBLISH_INTERVAL = 3600.0


class MainlineLookup(Republisher):
    """Publishes and resolves through ``node``; the caller owns the node and its bootstrap list."""

    errors = (IrohError, OSError, TimeoutError)

    def __init__(self, node: DhtNode, secret: SecretKey, *, addr_filter: AddrFilter = relay_only,
                 republish_interval: float = REPUBLISH_INTERVAL) -> None:
        super().__init__(secret, addr_filter=addr_filter, interval=republish_interval)
        self._node = node
        self.stored_on = 0

    def __str__(self) -> str:
        return "the Mainline DHT"

    async def _send(self, packet: SignedPacket) -> None:
        self.stored_on = await publish_signed(
            self._node, packet.public_key, packet.timestamp_us, packet.dns, packet.signature
        )

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        found = await resolve_signed(self._node, endpoint_id)
        if found is None:
            return
        seq, value, signature = found
        packet = SignedPacket(endpoint_id, signature, seq, value)
        packet.verify()
        yield LookupItem(packet.endpoint_info(), "dht", seq)
