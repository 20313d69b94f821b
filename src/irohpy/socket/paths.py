"""Per-remote path state and path choice (sans-IO).

A path is one way to reach a remote endpoint: for now a direct UDP address
``(host, port)``. The relay and hole-punching issues add path kinds and
probing; the choice logic stays here, fed with times and receive events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DirectPath = tuple[str, int]
PathKey = DirectPath

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
