"""Remote endpoints: who we talk to, their mapped address and paths.

State is per remote endpoint, shared by every connection to it whatever its
ALPN. An incoming connection is provisional until its handshake names the
remote; then it joins (or becomes) that remote's state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from irohpy.base.keys import EndpointId
from irohpy.socket.holepunch import HolePunch
from irohpy.socket.mapped import MappedAddr
from irohpy.socket.metrics import SocketMetrics, path_kind
from irohpy.socket.paths import PathEvent, PathKey, RemotePaths

EVENT_QUEUE = 256


@dataclass(eq=False)
class RemoteState:
    endpoint_id: EndpointId | None
    mapped: MappedAddr = field(default_factory=MappedAddr)
    paths: RemotePaths = field(default_factory=RemotePaths)
    connections: int = 0
    punch: HolePunch = field(default_factory=HolePunch)
    subscribers: list[asyncio.Queue[PathEvent]] = field(default_factory=list)
    metrics: SocketMetrics | None = None
    _open_paths: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.paths.listener = self._publish

    def _count(self, event: PathEvent) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        info = event.path
        kind = path_kind(info.addr, info.kind == "relay")
        if event.kind == "lost":
            if info.addr in self._open_paths:
                self._open_paths.discard(info.addr)
                metrics.paths_closed.labels(kind).inc()
            return
        if info.addr not in self._open_paths:
            self._open_paths.add(info.addr)
            metrics.paths_opened.labels(kind).inc()
        if event.kind in ("selected", "fallback"):
            metrics.path_selected.labels(kind).inc()

    def close_paths(self) -> None:
        """The last connection ended: every path we counted as open is closed."""
        if self.metrics is not None:
            for addr in self._open_paths:
                state = next((s for s in self.paths.infos() if s.addr == addr), None)
                is_relay = state is not None and state.kind == "relay"
                self.metrics.paths_closed.labels(path_kind(addr, is_relay)).inc()
        self._open_paths.clear()

    def _publish(self, event: PathEvent) -> None:
        self._count(event)
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[PathEvent]:
        queue: asyncio.Queue[PathEvent] = asyncio.Queue(EVENT_QUEUE)
        self.subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PathEvent]) -> None:
        if queue in self.subscribers:
            self.subscribers.remove(queue)


class RemoteMap:
    def __init__(self, metrics: SocketMetrics | None = None) -> None:
        self.metrics = metrics
        self.by_id: dict[EndpointId, RemoteState] = {}
        self.by_mapped: dict[MappedAddr, RemoteState] = {}

    def for_id(self, endpoint_id: EndpointId) -> RemoteState:
        state = self.by_id.get(endpoint_id)
        if state is None:
            state = RemoteState(endpoint_id, metrics=self.metrics)
            self.by_id[endpoint_id] = state
            self.by_mapped[state.mapped] = state
        return state

    def provisional(self, path: PathKey) -> RemoteState:
        """State for an incoming connection whose remote is not yet authenticated."""
        state = RemoteState(None, metrics=self.metrics)
        # The handshake on this path is its round trip: it counts as validated.
        path_state = state.paths.add_candidate(path, "incoming")
        path_state.validated = True
        state.paths.selected = path
        self.by_mapped[state.mapped] = state
        return state

    def identify(self, mapped: MappedAddr, endpoint_id: EndpointId) -> RemoteState:
        """Attach a provisional mapped address to the remote the handshake named."""
        provisional = self.by_mapped[mapped]
        if provisional.endpoint_id is not None:
            return provisional
        known = self.by_id.get(endpoint_id)
        if known is None:
            provisional.endpoint_id = endpoint_id
            self.by_id[endpoint_id] = provisional
            return provisional
        known.paths.merge(provisional.paths)
        known.connections += provisional.connections
        known.subscribers += provisional.subscribers
        known._open_paths |= provisional._open_paths
        self.by_mapped[mapped] = known
        return known

    def get(self, mapped: MappedAddr) -> RemoteState | None:
        return self.by_mapped.get(mapped)

    def release(self, mapped: MappedAddr) -> None:
        """A connection using ``mapped`` ended.

        Known remotes stay, so their addresses serve the next dial; aliases
        and unauthenticated remotes go.
        """
        state = self.by_mapped.get(mapped)
        if state is None:
            return
        state.connections -= 1
        if state.connections <= 0:
            state.close_paths()
        if state.mapped is not mapped or state.endpoint_id is None:
            del self.by_mapped[mapped]
