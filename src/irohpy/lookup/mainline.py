"""Address lookup over the BitTorrent Mainline DHT (opt-in, as in iroh).

Our pkarr packet is stored as a BEP 44 mutable item: key = EndpointId, no
salt, seq = the packet's timestamp, value = its DNS message, signature = the
pkarr signature. Any DHT node can store and serve it; none can forge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from irohpy.base.keys import EndpointId, SecretKey
from irohpy.errors import IrohError
from irohpy.lookup.base import EndpointData, EndpointInfo, LookupItem
from irohpy.lookup.dht import DhtNode, publish_signed, resolve_signed
from irohpy.lookup.pkarr import SignedPacket, next_timestamp_us
from irohpy.lookup.pkarr_client import AddrFilter, relay_only

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL = 3600.0
RETRY = 30.0


class MainlineLookup:
    """Publishes and resolves through ``node``; the caller owns the node and its bootstrap list."""

    def __init__(self, node: DhtNode, secret: SecretKey, *, addr_filter: AddrFilter = relay_only,
                 republish_interval: float = REPUBLISH_INTERVAL) -> None:
        self._node = node
        self._secret = secret
        self._filter = addr_filter
        self._interval = republish_interval
        self._data: EndpointData | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stored_on = 0

    def publish(self, data: EndpointData) -> None:
        self._data = self._filter(data)
        self._changed.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            assert self._data is not None
            packet = SignedPacket.sign(self._secret, EndpointInfo(self._secret.public(), self._data),
                                       next_timestamp_us())
            wait = self._interval
            try:
                self.stored_on = await publish_signed(
                    self._node, packet.public_key, packet.timestamp_us, packet.dns, packet.signature
                )
            except (IrohError, OSError, TimeoutError) as exc:
                log.info("publishing to the DHT failed: %s", exc)
                wait = RETRY
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        found = await resolve_signed(self._node, endpoint_id)
        if found is None:
            return
        seq, value, signature = found
        packet = SignedPacket(endpoint_id, signature, seq, value)
        packet.verify()
        yield LookupItem(packet.endpoint_info(), "dht", seq)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
