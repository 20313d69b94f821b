"""Per-remote path state and path choice (sans-IO).

A path is one way to reach a remote endpoint: a direct UDP address
``(host, port)`` or a relay. A direct path counts once a round trip has
validated it (a Pong to our Ping, or for peers that do not speak our control
protocol, such as Rust iroh, an authenticated QUIC reply). Validated direct
paths beat the relay, lower RTT wins with hysteresis, and a direct path that
falls silent is dropped for the relay, which stays warm as the fallback. Fed
with times and receive events; no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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
# stays silent this long has moved (NAT rebinding, roaming): follow it. Only
# for peers without our control protocol; the others validate with pings.
SWITCH_AFTER_SILENCE = 1.0
# A selected direct path with nothing received for this long is dead: the
# relay takes over. Heartbeat pings every HEARTBEAT keep a quiet path fresh.
DEAD_AFTER = 3.0
# A direct path must beat the current one by this much RTT to take over.
HYSTERESIS = 0.005

PathKind = Literal["direct", "relay"]
EventKind = Literal["selected", "validated", "lost", "fallback"]


@dataclass(frozen=True)
class PathInfo:
    """One path of a connection, as ``Connection.paths()`` reports it."""

    kind: PathKind
    addr: str
    rtt: float | None
    selected: bool
    validated: bool
    bytes_sent: int
    bytes_recv: int


@dataclass(frozen=True)
class PathEvent:
    """A change of a remote's paths: ``selected`` (traffic moved here), ``validated``,
    ``lost`` (a direct path went silent) or ``fallback`` (back on the relay)."""

    kind: EventKind
    path: PathInfo
    time: float


@dataclass
class PathState:
    key: PathKey
    sources: set[str] = field(default_factory=set)
    last_recv: float | None = None
    validated: bool = False
    rtt: float | None = None
    bytes_sent: int = 0
    bytes_recv: int = 0

    def info(self, selected: bool) -> PathInfo:
        return PathInfo(
            "relay" if is_relay(self.key) else "direct", describe_path(self.key), self.rtt, selected,
            self.validated, self.bytes_sent, self.bytes_recv,
        )


class RemotePaths:
    """Candidate paths of one remote and the one we send on."""

    def __init__(self) -> None:
        self.paths: dict[PathKey, PathState] = {}
        self.selected: PathKey | None = None
        # Set once the remote answered a control packet: from then on direct
        # paths need a Pong to count, and silence means death.
        self.speaks_control = False
        self.listener: Callable[[PathEvent], None] | None = None
        # Direct paths the remote was heard on but that no round trip validated yet.
        self.to_probe: set[DirectPath] = set()

    # -- candidates ------------------------------------------------------------------

    def add_candidate(self, key: PathKey, source: str) -> PathState:
        state = self.paths.get(key)
        if state is None:
            if len(self.paths) >= MAX_CANDIDATES:
                self._evict_one()
            state = self.paths[key] = PathState(key)
        state.sources.add(source)
        return state

    def _evict_one(self) -> None:
        victims = [p for p in self.paths.values() if p.key != self.selected and not p.validated]
        if not victims:
            victims = [p for p in self.paths.values() if p.key != self.selected]
        if victims:
            oldest = min(victims, key=lambda p: p.last_recv or 0.0)
            del self.paths[oldest.key]
            self.to_probe.discard(oldest.key)  # type: ignore[arg-type]

    def direct_candidates(self) -> list[DirectPath]:
        return [k for k in self.paths if not isinstance(k, RelayPath)]

    def relay_paths(self) -> list[RelayPath]:
        return [k for k in self.paths if isinstance(k, RelayPath)]

    # -- receive events ----------------------------------------------------------------

    def on_authenticated(self, key: PathKey, now: float) -> bool:
        """An authenticated QUIC packet arrived on ``key``; True if the choice changed."""
        state = self.paths.get(key)
        if state is None:
            state = self.add_candidate(key, "incoming")
        if self.speaks_control and not is_relay(key):
            if state.validated:
                state.last_recv = now
                return False
            self.to_probe.add(key)  # type: ignore[arg-type]
            return False
        state.last_recv = now
        state.validated = True
        if self.selected is None:
            return self._select(key, now)
        if key == self.selected:
            return False
        if is_relay(self.selected) and not is_relay(key):
            return self._select(key, now)
        current = self.paths.get(self.selected)
        if current is None or current.last_recv is None or now - current.last_recv >= SWITCH_AFTER_SILENCE:
            return self._select(key, now)
        return False

    def on_pong(self, key: DirectPath, rtt: float, now: float) -> bool:
        """A Pong answered our Ping on ``key``: a validated round trip. True if the choice changed."""
        self.speaks_control = True
        state = self.paths.get(key) or self.add_candidate(key, "pong")
        state.rtt = rtt if state.rtt is None else 0.75 * state.rtt + 0.25 * rtt
        state.last_recv = now
        self.to_probe.discard(key)
        if not state.validated:
            state.validated = True
            self._emit("validated", state, now)
        return self.reselect(now)

    def received(self, key: PathKey, nbytes: int) -> None:
        state = self.paths.get(key)
        if state is not None:
            state.bytes_recv += nbytes

    def heard(self, key: PathKey, now: float) -> None:
        """Any authenticated packet from ``key`` (a Ping, or QUIC on the selected path)."""
        state = self.paths.get(key)
        if state is not None and (state.validated or is_relay(key)):
            state.last_recv = now

    # -- choice ----------------------------------------------------------------------

    def _live_direct(self, now: float) -> list[PathState]:
        return [
            s for s in self.paths.values()
            if not is_relay(s.key) and s.validated and s.last_recv is not None and now - s.last_recv < DEAD_AFTER
        ]

    def reselect(self, now: float) -> bool:
        """Apply the rules (direct over relay, lower RTT with hysteresis); True if the choice changed."""
        live = self._live_direct(now)
        current = self.paths.get(self.selected) if self.selected is not None else None
        if live:
            best = min(live, key=lambda s: s.rtt if s.rtt is not None else float("inf"))
            if current is None or current not in live:
                return self._select(best.key, now)
            if best is not current and best.rtt is not None and (
                current.rtt is None or best.rtt + HYSTERESIS < current.rtt
            ):
                return self._select(best.key, now)
            return False
        return False

    def check(self, now: float) -> bool:
        """Time passed: a silent direct path loses its place to the relay. True if the choice changed."""
        if not self.speaks_control or self.selected is None or is_relay(self.selected):
            return False
        state = self.paths.get(self.selected)
        if state is None or (state.last_recv is not None and now - state.last_recv < DEAD_AFTER):
            return False
        if state.validated:
            state.validated = False
            self._emit("lost", state, now)
        if self.reselect(now):
            return True
        relays = self.relay_paths()
        if not relays:
            return False
        fallback = max(relays, key=lambda k: self.paths[k].last_recv or 0.0)
        self.selected = fallback
        self._emit("fallback", self.paths[fallback], now)
        return True

    def _select(self, key: PathKey, now: float) -> bool:
        if key == self.selected:
            return False
        self.selected = key
        self._emit("selected", self.paths[key], now)
        return True

    def forget_stale_choice(self, now: float) -> None:
        """Before a new dial: a choice nothing confirmed lately may be gone; fan out again."""
        state = self.paths.get(self.selected) if self.selected is not None else None
        if state is not None and (state.last_recv is None or now - state.last_recv > DEAD_AFTER):
            self.selected = None

    def has_live_direct(self, now: float) -> bool:
        return bool(self._live_direct(now))

    # -- reporting -------------------------------------------------------------------

    def _emit(self, kind: EventKind, state: PathState, now: float) -> None:
        if self.listener is not None:
            self.listener(PathEvent(kind, state.info(state.key == self.selected), now))

    def infos(self) -> list[PathInfo]:
        return [s.info(s.key == self.selected) for s in self.paths.values()]

    def send_targets(self) -> list[PathKey]:
        """Where the next datagram goes: the chosen path, or every candidate while dialing."""
        if self.selected is not None:
            return [self.selected]
        return list(self.paths)

    def merge(self, other: RemotePaths) -> None:
        for key, state in other.paths.items():
            mine = self.paths.get(key)
            if mine is None:
                self.paths[key] = state
            else:
                mine.sources |= state.sources
                mine.validated = mine.validated or state.validated
                mine.bytes_sent += state.bytes_sent
                mine.bytes_recv += state.bytes_recv
                if state.last_recv is not None and (mine.last_recv or 0.0) < state.last_recv:
                    mine.last_recv = state.last_recv
        if other.selected is not None and self.selected is None:
            self.selected = other.selected
