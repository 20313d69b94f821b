"""Deterministic in-memory network of :class:`TopicState` nodes, for tests and benchmarks.

Messages travel as Python objects. Each pair of nodes gets a fixed latency drawn once from a
seeded RNG, so a link is FIFO like a QUIC stream and the fastest tree is stable, as on a real
network. Sending to a node that is not up yields ``ConnectionDown`` at the sender, as a failed
dial would. Each node's state is
replaced on rejoin, and a generation number keeps old timers from firing on the new state.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from irohpy.protocols.gossip.proto import (
    Action,
    BroadcastCmd,
    Config,
    ConnectionDown,
    Event,
    JoinCmd,
    QuitCmd,
    Received,
    RecvMessage,
    ScheduleTimer,
    SendMessage,
    TimerFired,
    TopicState,
    message_id,
)
from irohpy.protocols.gossip.wire import Gossip


@dataclass
class Delivery:
    """Who got one broadcast, at which hop, and who was connected to the sender when it was sent."""

    sender: int
    sent_at: float
    expected: set[int]
    hops: dict[int, int] = field(default_factory=dict)
    receipts: int = 0


class Simulation:
    def __init__(
        self,
        n: int,
        seed: int = 0,
        config: Config | None = None,
        latency: tuple[float, float] = (0.005, 0.050),
    ) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.config = config or Config()
        self.latency = latency
        self.now = 0.0
        self.nodes: dict[int, TopicState[int]] = {}
        self.gen: dict[int, int] = {}
        self.deliveries: dict[bytes, Delivery] = {}
        self.left: dict[int, float] = {}
        self._queue: list[tuple[float, int, int, int, Event[int]]] = []
        self._seq = 0
        self._links: dict[tuple[int, int], float] = {}

    def _push(self, at: float, node: int, gen: int, event: Event[int]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, node, gen, event))

    def _delay(self, a: int, b: int) -> float:
        key = (a, b) if a < b else (b, a)
        delay = self._links.get(key)
        if delay is None:
            delay = self._links[key] = self.rng.uniform(*self.latency)
        return delay

    def _apply(self, node: int, actions: list[Action[int]]) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                if action.peer in self.nodes:
                    self._push(self.now + self._delay(node, action.peer), action.peer, -1, RecvMessage(node, action.message))
                else:
                    self._push(self.now + 2 * self._delay(node, action.peer), node, self.gen[node], ConnectionDown(action.peer))
            elif isinstance(action, ScheduleTimer):
                self._push(action.at, node, self.gen[node], TimerFired(action.timer))
            elif isinstance(action, Received):
                d = self.deliveries.get(message_id(action.content))
                if d is not None and action.round is not None and node not in d.hops:
                    d.hops[node] = action.round + 1

    def _handle(self, node: int, event: Event[int]) -> None:
        self._apply(node, self.nodes[node].handle(event, self.now))

    def join(self, node: int, contacts: list[int]) -> None:
        """Start a fresh state for ``node`` and send Join to ``contacts``."""
        self.gen[node] = self.gen.get(node, 0) + 1
        self.nodes[node] = TopicState(node, random.Random(self.rng.getrandbits(64)), self.config)
        self.left.pop(node, None)
        self._handle(node, JoinCmd(tuple(contacts)))

    def leave(self, node: int, graceful: bool) -> None:
        """Quit with Disconnect messages, or crash so neighbors see the connection drop."""
        state = self.nodes[node]
        if graceful:
            self._handle(node, QuitCmd())
        else:
            for peer in state.active:
                if peer in self.nodes:
                    self._push(self.now + 2 * self._delay(node, peer), peer, self.gen[peer], ConnectionDown(node))
        del self.nodes[node]
        self.left[node] = self.now

    def joined(self) -> list[int]:
        """Nodes that are up and have at least one neighbor, in id order."""
        return [p for p in sorted(self.nodes) if self.nodes[p].active]

    def connected(self, node: int) -> set[int]:
        """Nodes reachable from ``node`` over active-view links to nodes that are up."""
        seen = {node}
        stack = [node]
        while stack:
            for peer in self.nodes[stack.pop()].active:
                if peer in self.nodes and peer not in seen:
                    seen.add(peer)
                    stack.append(peer)
        return seen - {node}

    def broadcast(self, node: int, content: bytes) -> bytes:
        """Send from ``node``; delivery is judged against the nodes connected to it right now."""
        mid = message_id(content)
        self.deliveries[mid] = Delivery(node, self.now, self.connected(node))
        self._handle(node, BroadcastCmd(content))
        return mid

    def run_until(self, t: float) -> None:
        while self._queue and self._queue[0][0] <= t:
            at, _, node, gen, event = heapq.heappop(self._queue)
            if node not in self.nodes or (gen != -1 and gen != self.gen[node]):
                continue
            self.now = at
            if isinstance(event, RecvMessage) and isinstance(event.message, Gossip):
                d = self.deliveries.get(event.message.id)
                if d is not None:
                    d.receipts += 1
            self._handle(node, event)
        self.now = t

    def delivery_ratio(self, mid: bytes) -> float:
        """Share of the nodes connected to the sender at send time and still up that got it."""
        d = self.deliveries[mid]
        expected = {p for p in d.expected if p in self.nodes and p not in self.left}
        if not expected:
            return 1.0
        return len(expected & d.hops.keys()) / len(expected)

    def bootstrap(self, spacing: float = 0.01, settle: float = 3.0) -> None:
        """Node 0 starts alone; every other node joins through node 0, ``spacing`` apart."""
        self.join(0, [])
        for node in range(1, self.n):
            self.run_until(self.now + spacing)
            self.join(node, [0])
        self.run_until(self.now + settle)

    def churn_out(self, fraction: float) -> list[int]:
        """Take ``fraction`` of nodes down at once, half gracefully and half by crashing."""
        gone = self.rng.sample(sorted(self.nodes), int(len(self.nodes) * fraction))
        for i, node in enumerate(gone):
            self.leave(node, graceful=i % 2 == 0)
        return gone

    def rejoin(self, nodes: list[int]) -> None:
        """Bring ``nodes`` back, each through a random node that was joined before any of them."""
        contacts = self.joined()
        for node in nodes:
            self.join(node, [self.rng.choice(contacts)])
