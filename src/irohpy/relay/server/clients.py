"""The connected clients by EndpointId: routing, same-id replacement and EndpointGone.

At most one client is active per EndpointId; a newer connection replaces the older one,
which is told so and closed. The registry remembers who sent to whom (only for datagrams
that reached an active client, so the memory is bounded by real traffic) and tells each
recipient ``EndpointGone`` when a sender's last connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from irohpy.base.keys import PublicKey
from irohpy.relay.protocol import ClientToRelay, EndpointGone, RelayToClient, encode
from irohpy.relay.server.client import Client, Ending, packet_count
from irohpy.relay.server.metrics import RelayMetrics


class Clients:
    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics
        self._active: dict[PublicKey, Client] = {}
        self._running: set[Client] = set()
        self._sent_to: dict[PublicKey, set[PublicKey]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing: Ending | None = None

    def register(self, client: Client) -> None:
        """Make ``client`` the active one for its id, replacing any older connection."""
        old = self._active.get(client.endpoint_id)
        self._active[client.endpoint_id] = client
        self._running.add(client)
        self._idle.clear()
        self._metrics.accepts.inc()
        self._metrics.connections.set(len(self._active))
        if old is not None:
            old.replaced()
        if self._closing is not None:
            client.stop(self._closing)

    def unregister(self, client: Client, why: str) -> None:
        self._running.discard(client)
        self._metrics.disconnects.labels(why).inc()
        if self._active.get(client.endpoint_id) is client:
            del self._active[client.endpoint_id]
            for peer in self._sent_to.pop(client.endpoint_id, ()):
                if (other := self._active.get(peer)) is not None:
                    other.enqueue_control(EndpointGone(client.endpoint_id))
        self._metrics.connections.set(len(self._active))
        if not self._running:
            self._idle.set()

    def forward(self, source: PublicKey, frame: ClientToRelay) -> None:
        """Queue ``frame`` for its destination as a RelayToClient frame from ``source``."""
        destination = self._active.get(frame.peer)
        if destination is None:
            self._metrics.packets_dropped.labels("unknown_destination").inc(packet_count(frame))
            return
        message = encode(RelayToClient(source, frame.ecn, frame.payload, frame.segment_size))
        if destination.enqueue_datagrams(message, len(frame.payload), packet_count(frame)):
            self._sent_to.setdefault(source, set()).add(frame.peer)

    def stop_where(self, predicate: Callable[[Client], Ending | None]) -> None:
        """Stop every running client for which ``predicate`` returns an Ending."""
        for client in list(self._running):
            if (ending := predicate(client)) is not None:
                client.stop(ending)

    async def close_all(self, ending: Ending, timeout: float) -> None:
        """Stop everyone (and anyone who registers later) and wait up to ``timeout`` for them."""
        self._closing = ending
        self.stop_where(lambda _client: ending)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
