"""Per-remote path state and path choice (sans-IO).

A path is one way to reach a remote endpoint: a direct UDP address
``(host, port)`` or a relay. Direct paths win over the relay as soon as they
carry authenticated packets; the relay takes over again only once the direct
path has gone silent. Fed with times and receive events, no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from irohpy.base.keys import EndpointId
from irohpy.base.relay_url import RelayUrl

DirectPath = tuple[str, int]


@dataclass(frozen=True)
class RelayPath:
    """Reaching a remote through a relay server it is connected to."""

    url: RelayUrl
    endpoint_id: EndpointId

    def __str__(self) -> str:
        return f"relay {self.url} to {self.endpoint_id.fmt_short()}"


PathKey = DirectPath | RelayPath


def is_relay(path: PathKey) -> bool:
    return isinstance(path, RelayPath)


def describe_path(path: PathKey) -> str:
    if isinstance(path, RelayPath):
        return str(path)
    host, port = path
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

MAX_CANDIDATES = 32
# A remote that sends authenticated packets from a new path while the old one
# stays silent this long has moved (NAT rebinding, roaming): follow it.
SWITCH_AFTER_SILENCE = 1.0


@dataclass
class PathState:
    key: PathKey
    sources: set[str] = field(default_factory=set)
    last_recv: float | None = None


class RemotePaths:
    """Candidate paths of one remote and the one we send on."""

    def __init__(self) -> None:
        self.paths: dict[PathKey, PathState] = {}
        self.selected: PathKey | None = None

    def add_candidate(self, key: PathKey, source: str) -> None:
        state = self.paths.get(key)
        if state is None:
            if len(self.paths) >= MAX_CANDIDATES:
                self._evict_one()
            state = self.paths[key] = PathState(key)
        state.sources.add(source)

    def _evict_one(self) -> None:
        victims = [p for p in self.paths.values() if p.key != self.selected]
        if victims:
            oldest = min(victims, key=lambda p: p.last_recv or 0.0)
            del self.paths[oldest.key]

    def on_authenticated(self, key: PathKey, now: float) -> bool:
        """Record an authenticated packet from ``key``; True if the choice changed."""
        state = self.paths.get(key)
        if state is None:
            self.add_candidate(key, "incoming")
            state = self.paths[key]
        state.last_recv = now
        if self.selected is None:
            self.selected = key
            return True
        if key == self.selected:
            return False
        if is_relay(self.selected) and not is_relay(key):
            self.selected = key
            return True
        current = self.paths.get(self.selected)
        if current is None or current.last_recv is None or now - current.last_recv >= SWITCH_AFTER_SILENCE:
            self.selected = key
            return True
        return False

    def touch(self, key: PathKey, now: float) -> None:
        """Liveness of the selected path, without the cost of an authenticity check."""
        state = self.paths.get(key)
        if state is not None:
            state.last_recv = now

    def send_targets(self) -> list[PathKey]:
        """Where the next datagram goes: the chosen path, or every candidate while dialing."""
        if self.selected is not None:
            return [self.selected]
        return list(self.paths)

    def merge(self, other: RemotePaths) -> None:
        for key, state in other.paths.items():
            mine = self.paths.get(key)
            if mine is None:
                self.paths[key] = PathState(key, set(state.sources), state.last_recv)
            else:
                mine.sources |= state.sources
                if state.last_recv is not None and (mine.last_recv or 0.0) < state.last_recv:
                    mine.last_recv = state.last_recv
        if other.selected is not None and self.selected is None:
            self.selected = other.selected
