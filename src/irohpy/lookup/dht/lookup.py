"""The iterative Kademlia lookup as a state machine: feed it responses and time, it says whom to ask.

It keeps the candidates sorted by XOR distance to the target, keeps at most ``alpha`` queries in
flight, treats a query unanswered after ``timeout`` seconds as failed, and finishes when the
``k`` closest live candidates have all answered. Along the way it remembers each responder's
write token (for BEP 44 put) and the newest valid mutable item seen (for a most-recent get).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from irohpy.lookup.dht.krpc import NodeInfo
from irohpy.lookup.dht.routing import K, distance
from irohpy.lookup.dht.storage import MutableItem

ALPHA = 3


class _State(Enum):
    NEW = 0
    PENDING = 1
    DONE = 2
    FAILED = 3


class IterativeLookup:
    def __init__(
        self,
        target: bytes,
        seeds: Iterable[NodeInfo],
        *,
        own_id: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
        timeout: float = 1.0,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.timeout = timeout
        self._own_id = own_id
        self._nodes: dict[bytes, NodeInfo] = {}
        self._state: dict[bytes, _State] = {}
        self._sent_at: dict[bytes, float] = {}
        self.tokens: dict[bytes, bytes] = {}
        self.best_item: MutableItem | None = None
        self._add(seeds)

    def _add(self, nodes: Iterable[NodeInfo]) -> None:
        for node in nodes:
            if node.node_id != self._own_id and node.node_id not in self._nodes:
                self._nodes[node.node_id] = node
                self._state[node.node_id] = _State.NEW

    def _live_closest(self) -> list[bytes]:
        live = [i for i, s in self._state.items() if s is not _State.FAILED]
        live.sort(key=lambda i: distance(i, self.target))
        return live[: self.k]

    def _expire(self, now: float) -> None:
        for node_id, sent in list(self._sent_at.items()):
            if now - sent >= self.timeout:
                self.on_failure(node_id)

    def next_queries(self, now: float) -> list[NodeInfo]:
        """Nodes to query now; each is marked in flight until on_response/on_failure or timeout."""
        self._expire(now)
        budget = self.alpha - len(self._sent_at)
        out: list[NodeInfo] = []
        for node_id in self._live_closest():
            if budget <= 0:
                break
            if self._state[node_id] is _State.NEW:
                self._state[node_id] = _State.PENDING
                self._sent_at[node_id] = now
                out.append(self._nodes[node_id])
                budget -= 1
        return out

    def next_deadline(self) -> float | None:
        """When the oldest in-flight query times out, so the driver knows how long to wait."""
        return min(self._sent_at.values()) + self.timeout if self._sent_at else None

    def on_response(
        self,
        node_id: bytes,
        nodes: Iterable[NodeInfo],
        *,
        token: bytes | None = None,
        item: MutableItem | None = None,
    ) -> None:
        if self._state.get(node_id) is not _State.PENDING:
            return
        self._state[node_id] = _State.DONE
        self._sent_at.pop(node_id, None)
        if token is not None:
            self.tokens[node_id] = token
        if item is not None and (self.best_item is None or item.seq > self.best_item.seq):
            self.best_item = item
        self._add(nodes)

    def on_failure(self, node_id: bytes) -> None:
        if self._state.get(node_id) is _State.PENDING:
            self._state[node_id] = _State.FAILED
            self._sent_at.pop(node_id, None)

    @property
    def done(self) -> bool:
        return all(self._state[i] is _State.DONE for i in self._live_closest())

    def closest_responded(self) -> list[NodeInfo]:
        """The k closest nodes that answered, nearest first: where to put an item."""
        done = [i for i, s in self._state.items() if s is _State.DONE]
        done.sort(key=lambda i: distance(i, self.target))
        return [self._nodes[i] for i in done[: self.k]]
