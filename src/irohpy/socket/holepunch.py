"""The hole-punch state machine of one remote (sans-IO).

While a remote has connections but no live direct path, we run rounds: send
our candidates over the relay (CallMeMaybe) and ping every direct candidate
of theirs. The remote does the same when our CallMeMaybe arrives, so both
NATs see outgoing packets at about the same time and let the other side's
in. Rounds back off from 0.5 s to 5 s. Once direct, we ping the selected
path every second so that its death is noticed within a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from irohpy.socket.control import new_tx_id
from irohpy.socket.paths import DirectPath, RelayPath, RemotePaths, is_relay

ROUND_DELAYS = (0.5, 1.0, 2.0, 4.0)
ROUND_INTERVAL_MAX = 5.0
HEARTBEAT = 1.0
# One path is pinged at most this often (also bounds what a CallMeMaybe costs).
MIN_PING_GAP = 0.2
PING_TIMEOUT = 5.0
MAX_PENDING = 128
# A path we were merely heard on gets this many Pings; unanswered, it is dropped.
MAX_PROBES = 5


@dataclass(frozen=True)
class SendPing:
    path: DirectPath
    tx_id: bytes


@dataclass(frozen=True)
class SendCallMeMaybe:
    path: RelayPath


Action = SendPing | SendCallMeMaybe


class HolePunch:
    def __init__(self, new_tx: Callable[[], bytes] = new_tx_id) -> None:
        self._new_tx = new_tx
        self.pending: dict[bytes, tuple[DirectPath, float]] = {}
        self._last_ping: dict[DirectPath, float] = {}
        self._probes: dict[DirectPath, int] = {}
        self.next_round: float | None = None
        self.rounds = 0
        self.started_at: float | None = None
        self.attempts = 0

    def start(self, now: float) -> None:
        """Punch now (a new connection, new candidates, a network change, a lost path)."""
        self.next_round = now
        self.rounds = 0
        if self.started_at is None:
            self.started_at = now

    def stop(self) -> None:
        self.next_round = None
        self.started_at = None

    def _ping(self, path: DirectPath, now: float, out: list[Action]) -> bool:
        """Queue a Ping unless ``path`` had one within MIN_PING_GAP; True if queued."""
        last = self._last_ping.get(path)
        if last is not None and now - last < MIN_PING_GAP:
            return False
        if len(self.pending) >= MAX_PENDING:
            oldest = min(self.pending, key=lambda t: self.pending[t][1])
            del self.pending[oldest]
        tx = self._new_tx()
        self.pending[tx] = (path, now)
        self._last_ping[path] = now
        out.append(SendPing(path, tx))
        return True

    def tick(self, now: float, paths: RemotePaths) -> list[Action]:
        """What to send now, for a remote that has connections."""
        out: list[Action] = []
        for tx in [t for t, (_, sent) in self.pending.items() if now - sent > PING_TIMEOUT]:
            del self.pending[tx]
        self._last_ping = {p: t for p, t in self._last_ping.items() if now - t < HEARTBEAT}
        selected = paths.selected
        if selected is not None and not is_relay(selected):
            last = self._last_ping.get(selected)  # type: ignore[arg-type]
            if last is None or now - last >= HEARTBEAT:
                self._ping(selected, now, out)  # type: ignore[arg-type]
        self._probes = {p: n for p, n in self._probes.items() if p in paths.to_probe}
        for path in list(paths.to_probe):
            sent = self._probes.get(path, 0)
            if sent >= MAX_PROBES:
                paths.to_probe.discard(path)
            elif self._ping(path, now, out):
                self._probes[path] = sent + 1
        if paths.has_live_direct(now):
            self.next_round = None
            return out
        if self.next_round is None:
            self.start(now)
        relays = paths.relay_paths()
        assert self.next_round is not None
        if now >= self.next_round and relays:
            self.attempts += 1
            out.extend(SendCallMeMaybe(r) for r in relays)
            for path in paths.direct_candidates():
                self._ping(path, now, out)
            delay = ROUND_DELAYS[self.rounds] if self.rounds < len(ROUND_DELAYS) else ROUND_INTERVAL_MAX
            self.rounds += 1
            self.next_round = now + delay
        return out

    def on_call_me_maybe(self, now: float, paths: RemotePaths, candidates: tuple[DirectPath, ...]) -> list[Action]:
        """The remote pings these now; ping them back at once."""
        out: list[Action] = []
        direct = paths.has_live_direct(now)
        for addr in candidates:
            paths.add_candidate(addr, "call-me-maybe")
            if not direct:
                self._ping(addr, now, out)
        return out

    def on_pong(self, tx_id: bytes, src: DirectPath, now: float) -> tuple[DirectPath, float] | None:
        """Match a Pong to our Ping: the validated path and its RTT, or None if it answers nothing."""
        entry = self.pending.get(tx_id)
        if entry is None or entry[0] != src:
            return None
        del self.pending[tx_id]
        return src, now - entry[1]
