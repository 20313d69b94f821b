"""Response slots shared fairly between peers.

A fixed number of slots, at most ``per_peer`` held by one peer, and waiters
served round robin by peer: when a slot frees, the next peer in turn gets it,
not whoever queued the most requests. So one peer (or a few) opening streams
as fast as it can cannot starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Hashable


class FairSlots:
    def __init__(self, total: int, per_peer: int) -> None:
        if total < 1 or per_peer < 1:
            raise ValueError("slot counts must be at least 1")
        self.total = total
        self.per_peer = per_peer
        self._free = total
        self._held: dict[Hashable, int] = {}
        # Peers with waiters, in round-robin order (the next to serve first).
        self._waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()

    def held(self, peer: Hashable) -> int:
        return self._held.get(peer, 0)

    async def acquire(self, peer: Hashable) -> bool:
        """Take a slot for ``peer``; True if that meant waiting (the event loop ran meanwhile)."""
        if self._free and self.held(peer) < self.per_peer and peer not in self._waiting:
            self._grant(peer)
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(peer, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(peer)
            else:
                self._drop_waiter(peer, waiter)
            raise
        return True

    def release(self, peer: Hashable) -> None:
        held = self._held[peer] - 1
        if held:
            self._held[peer] = held
        else:
            del self._held[peer]
        self._free += 1
        self._dispatch()

    def _grant(self, peer: Hashable) -> None:
        self._free -= 1
        self._held[peer] = self.held(peer) + 1

    def _drop_waiter(self, peer: Hashable, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(peer)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._waiting[peer]
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiting peers in turn, skipping those at their per-peer cap."""
        skipped = 0
        while self._free and skipped < len(self._waiting):
            peer, queue = next(iter(self._waiting.items()))
            self._waiting.move_to_end(peer)
            if self.held(peer) >= self.per_peer:
                skipped += 1
                continue
            skipped = 0
            waiter = queue.popleft()
            if not queue:
                del self._waiting[peer]
            if waiter.done():
                continue  # cancelled; its task drops out on its own
            self._grant(peer)
            waiter.set_result(None)
