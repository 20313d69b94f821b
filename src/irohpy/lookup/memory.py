"""Static lookup entries that the application adds and removes itself."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId
from irohpy.lookup.base import EndpointData, EndpointInfo, LookupItem


class MemoryLookup:
    """An in-process table: useful for ids learned out of band (a database, a QR code)."""

    def __init__(self) -> None:
        self._entries: dict[EndpointId, tuple[EndpointInfo, int]] = {}

    def add(self, addr: EndpointAddr, user_data: str | None = None) -> None:
        info = EndpointInfo(addr.id, EndpointData.from_addr(addr, user_data))
        self._entries[addr.id] = (info, time.time_ns() // 1000)

    def remove(self, endpoint_id: EndpointId) -> EndpointInfo | None:
        entry = self._entries.pop(endpoint_id, None)
        return entry[0] if entry else None

    def get(self, endpoint_id: EndpointId) -> EndpointInfo | None:
        entry = self._entries.get(endpoint_id)
        return entry[0] if entry else None

    def publish(self, data: EndpointData) -> None:
        """Nothing to announce: the table holds others, not us."""

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        entry = self._entries.get(endpoint_id)
        if entry is not None:
            yield LookupItem(entry[0], "memory", entry[1])

    async def close(self) -> None:
        self._entries.clear()
