"""Sans-IO iroh-gossip state for one topic: HyParView membership plus PlumTree broadcast.

The state machine never does IO and never reads a clock: the driver feeds it events with the
current time and carries out the returned actions. A seeded :class:`random.Random` makes runs
reproducible, and views are insertion-ordered dicts so the peer-id hash seed cannot change the
order of random choices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Generic, TypeVar, Union

import blake3

from irohpy.protocols.gossip.wire import (
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Message,
    Neighbor,
    PeerInfo,
    Priority,
    Prune,
    Shuffle,
    ShuffleReply,
)

P = TypeVar("P")

_MAX_ROUND = 0xFFFF


@dataclass(frozen=True)
class Config:
    """Defaults from wire spec §10.3; times are seconds.

    ``first_shuffle_delay`` is ours (upstream waits a full interval): a node that just joined
    shuffles soon, so its passive view has peers to fall back on if its first neighbors fail.
    """

    active_view_capacity: int = 5
    passive_view_capacity: int = 30
    active_random_walk_length: int = 6
    passive_random_walk_length: int = 3
    shuffle_random_walk_length: int = 6
    shuffle_active_view_count: int = 3
    shuffle_passive_view_count: int = 4
    shuffle_interval: float = 60.0
    first_shuffle_delay: float = 2.0
    neighbor_request_timeout: float = 0.5
    graft_timeout_1: float = 0.080
    graft_timeout_2: float = 0.040
    dispatch_timeout: float = 0.005
    optimization_threshold: int = 7
    message_cache_retention: float = 30.0
    message_id_retention: float = 90.0
    cache_evict_interval: float = 1.0


# -- timers -------------------------------------------------------------------


@dataclass(frozen=True)
class NeighborRequestTimeout(Generic[P]):
    peer: P


@dataclass(frozen=True)
class ShuffleTimer:
    pass


@dataclass(frozen=True)
class DispatchIHave:
    pass


@dataclass(frozen=True)
class GraftTimer:
    """``second`` marks the shorter retry timer after a Graft was already sent."""

    id: bytes
    second: bool = False


@dataclass(frozen=True)
class EvictTimer:
    pass


Timer = Union[NeighborRequestTimeout[P], ShuffleTimer, DispatchIHave, GraftTimer, EvictTimer]

# -- inputs -------------------------------------------------------------------


@dataclass(frozen=True)
class RecvMessage(Generic[P]):
    peer: P
    message: Message[P]


@dataclass(frozen=True)
class TimerFired(Generic[P]):
    timer: Timer[P]


@dataclass(frozen=True)
class JoinCmd(Generic[P]):
    peers: tuple[P, ...]


@dataclass(frozen=True)
class BroadcastCmd:
    """``neighbors_only`` is DeliveryScope::Neighbors: direct neighbors, not forwarded."""

    content: bytes
    neighbors_only: bool = False


@dataclass(frozen=True)
class QuitCmd:
    pass


@dataclass(frozen=True)
class ConnectionDown(Generic[P]):
    peer: P


Event = Union[RecvMessage[P], TimerFired[P], JoinCmd[P], BroadcastCmd, QuitCmd, ConnectionDown[P]]

# -- outputs ------------------------------------------------------------------


@dataclass(frozen=True)
class SendMessage(Generic[P]):
    peer: P
    message: Message[P]


@dataclass(frozen=True)
class Received(Generic[P]):
    content: bytes
    delivered_from: P
    round: int | None


@dataclass(frozen=True)
class NeighborUp(Generic[P]):
    peer: P


@dataclass(frozen=True)
class NeighborDown(Generic[P]):
    peer: P


@dataclass(frozen=True)
class ScheduleTimer(Generic[P]):
    at: float
    timer: Timer[P]


@dataclass(frozen=True)
class DisconnectPeer(Generic[P]):
    """The driver may close the connection once no topic uses the peer."""

    peer: P


Action = Union[SendMessage[P], Received[P], NeighborUp[P], NeighborDown[P], ScheduleTimer[P], DisconnectPeer[P]]


def message_id(content: bytes) -> bytes:
    """Gossip ids are BLAKE3(content) (spec §10.2)."""
    return blake3.blake3(content).digest()


@dataclass
class _Stats:
    """Counters a simulation reads to report protocol overhead."""

    duplicates: int = 0


@dataclass
class TopicState(Generic[P]):
    """Membership and broadcast state of one node in one topic."""

    me: P
    rng: random.Random
    config: Config = field(default_factory=Config)
    me_data: bytes | None = None
    active: dict[P, bytes | None] = field(default_factory=dict)
    passive: dict[P, bytes | None] = field(default_factory=dict)
    eager: dict[P, None] = field(default_factory=dict)
    lazy: dict[P, None] = field(default_factory=dict)
    stats: _Stats = field(default_factory=_Stats)
    _pending: dict[P, None] = field(default_factory=dict)
    _received: dict[bytes, float] = field(default_factory=dict)
    _cache: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    _missing: dict[bytes, list[tuple[P, int]]] = field(default_factory=dict)
    _ihave_queue: dict[P, list[tuple[bytes, int]]] = field(default_factory=dict)
    _shuffle_scheduled: bool = False
    _shuffling: bool = False
    _evict_scheduled: bool = False
    _out: list[Action[P]] = field(default_factory=list)
    _now: float = 0.0

    def handle(self, event: Event[P], now: float) -> list[Action[P]]:
        """Apply one input at time ``now``; return what the driver must do, in order."""
        self._now = now
        self._out = []
        if isinstance(event, RecvMessage):
            self._on_message(event.peer, event.message)
        elif isinstance(event, TimerFired):
            self._on_timer(event.timer)
        elif isinstance(event, JoinCmd):
            for peer in event.peers:
                if peer != self.me:
                    # The contact answers with Neighbor; expecting it keeps us from answering back.
                    self._pending[peer] = None
                    self._send(peer, Join(self.me_data))
                    self._schedule(self.config.neighbor_request_timeout, NeighborRequestTimeout(peer))
            self._schedule_shuffle(self.config.first_shuffle_delay)
        elif isinstance(event, BroadcastCmd):
            self._broadcast(event.content, event.neighbors_only)
        elif isinstance(event, QuitCmd):
            for peer in list(self.active):
                self._send_disconnect(peer, alive=False)
                self._remove_active(peer)
        elif isinstance(event, ConnectionDown):
            self._on_connection_down(event.peer)
        else:
            raise TypeError(f"unknown gossip event {type(event).__name__}")
        return self._out

    def uses(self, peer: P) -> bool:
        """Whether this topic still needs a connection to ``peer`` (neighbor or asked to be one)."""
        return peer in self.active or peer in self._pending

    # -- helpers -----------------------------------------------------------

    def _send(self, peer: P, message: Message[P]) -> None:
        self._out.append(SendMessage(peer, message))

    def _schedule(self, delay: float, timer: Timer[P]) -> None:
        self._out.append(ScheduleTimer(self._now + delay, timer))

    def _pick(self, items: list[P]) -> P | None:
        return self.rng.choice(items) if items else None

    def _schedule_shuffle(self, delay: float | None = None) -> None:
        if not self._shuffle_scheduled:
            self._shuffle_scheduled = True
            self._schedule(self.config.shuffle_interval if delay is None else delay, ShuffleTimer())

    def _send_disconnect(self, peer: P, *, alive: bool) -> None:
        """Like upstream, hand over some peers first so the other side does not run dry."""
        cfg = self.config
        handover = self._shuffle_sample(cfg.shuffle_active_view_count + cfg.shuffle_passive_view_count, peer)
        self._send(peer, ShuffleReply(tuple(handover)))
        self._send(peer, Disconnect(alive=alive))

    # -- HyParView -----------------------------------------------------------

    def _add_active(self, peer: P, data: bytes | None, *, reply: Priority | None) -> None:
        """Add ``peer``, evicting a random neighbor if full; ``reply`` sends our Neighbor.

        Like upstream, the reply has the request's priority: should our request have timed out
        meanwhile, a Low reply can then be refused instead of forcing an eviction.
        """
        if peer == self.me or peer in self.active:
            return
        self._pending.pop(peer, None)
        self.passive.pop(peer, None)
        while len(self.active) >= self.config.active_view_capacity:
            victim = self.rng.choice(list(self.active))
            self._send_disconnect(victim, alive=True)
            self._remove_active(victim)
            self._add_passive(victim, None)
        self.active[peer] = data
        self.eager[peer] = None
        self.lazy.pop(peer, None)
        if reply is not None:
            self._send(peer, Neighbor(reply, self.me_data))
        self._out.append(NeighborUp(peer))

    def _remove_active(self, peer: P) -> None:
        if peer not in self.active:
            return
        del self.active[peer]
        self.eager.pop(peer, None)
        self.lazy.pop(peer, None)
        # IHaves already queued for the peer still go out: they may be its only way to a message.
        self._out.append(NeighborDown(peer))
        self._out.append(DisconnectPeer(peer))

    def _add_passive(self, peer: P, data: bytes | None) -> None:
        if peer == self.me or peer in self.active:
            return
        if peer in self.passive:
            if data is not None:
                self.passive[peer] = data
            return
        while len(self.passive) >= self.config.passive_view_capacity:
            del self.passive[self.rng.choice(list(self.passive))]
        self.passive[peer] = data

    def _refill(self, skip: P | None = None) -> None:
        """Ask random passive peers (but ``skip``) to fill free active slots.

        Only one request is High (when we have no neighbor and none pending): each High one
        evicts someone, so several at once would cascade through the swarm.
        """
        free = self.config.active_view_capacity - len(self.active) - len(self._pending)
        candidates = [p for p in self.passive if p not in self._pending and p != skip]
        while free > 0 and candidates:
            peer = candidates.pop(self.rng.randrange(len(candidates)))
            prio = Priority.HIGH if not self.active and not self._pending else Priority.LOW
            self._request_neighbor(peer, prio)
            free -= 1

    def _request_neighbor(self, peer: P, priority: Priority) -> None:
        self._pending[peer] = None
        self._send(peer, Neighbor(priority, self.me_data))
        self._schedule(self.config.neighbor_request_timeout, NeighborRequestTimeout(peer))

    def _on_connection_down(self, peer: P) -> None:
        self._pending.pop(peer, None)
        self.passive.pop(peer, None)
        was_active = peer in self.active
        self._remove_active(peer)
        if was_active or not self.active:
            self._refill()

    def _on_message(self, sender: P, msg: Message[P]) -> None:
        if sender == self.me:
            return
        if isinstance(msg, Join):
            self._on_join(sender, msg)
        elif isinstance(msg, ForwardJoin):
            self._on_forward_join(sender, msg)
        elif isinstance(msg, Neighbor):
            self._on_neighbor(sender, msg)
        elif isinstance(msg, Disconnect):
            self._on_disconnect(sender, msg)
        elif isinstance(msg, Shuffle):
            self._on_shuffle(sender, msg)
        elif isinstance(msg, ShuffleReply):
            for info in msg.nodes:
                self._add_passive(info.id, info.data)
            if self._shuffling:
                self._shuffling = False
                self._refill()
        elif isinstance(msg, Gossip):
            self._on_gossip(sender, msg)
        elif isinstance(msg, Prune):
            if sender in self.active:
                self.eager.pop(sender, None)
                self.lazy[sender] = None
        elif isinstance(msg, Graft):
            self._on_graft(sender, msg)
        elif isinstance(msg, IHave):
            self._on_ihave(sender, msg)

    def _on_disconnect(self, sender: P, msg: Disconnect) -> None:
        """Refill when a neighbor left or we have none; refilling after every refused Low
        request would storm, while a High request (sent with no neighbor) is never refused."""
        self._pending.pop(sender, None)
        was_active = sender in self.active
        self._remove_active(sender)
        if msg.alive:
            self._add_passive(sender, None)
        else:
            self.passive.pop(sender, None)
        if was_active or not self.active:
            self._refill()

    def _on_join(self, sender: P, msg: Join) -> None:
        others = [p for p in self.active if p != sender]
        self._add_active(sender, msg.data, reply=Priority.HIGH)
        info = PeerInfo(sender, msg.data)
        for peer in others:
            if peer in self.active:
                self._send(peer, ForwardJoin(info, self.config.active_random_walk_length))

    def _on_forward_join(self, sender: P, msg: ForwardJoin[P]) -> None:
        peer = msg.peer.id
        if peer == self.me:
            return
        if msg.ttl == 0 or len(self.active) <= 1:
            if peer not in self.active and peer not in self._pending:
                self._request_neighbor(peer, Priority.HIGH)
            return
        if msg.ttl == self.config.passive_random_walk_length:
            self._add_passive(peer, msg.peer.data)
        nxt = self._pick([p for p in self.active if p not in (sender, peer)])
        if nxt is None:
            if peer not in self.active and peer not in self._pending:
                self._request_neighbor(peer, Priority.HIGH)
        else:
            self._send(nxt, ForwardJoin(msg.peer, msg.ttl - 1))

    def _on_neighbor(self, sender: P, msg: Neighbor) -> None:
        if sender in self.active:
            self._pending.pop(sender, None)
            return
        requested = sender in self._pending
        room = len(self.active) < self.config.active_view_capacity
        if requested or msg.priority == Priority.HIGH or room:
            self._add_active(sender, msg.data, reply=None if requested else msg.priority)
        else:
            self._send_disconnect(sender, alive=True)
            self._add_passive(sender, msg.data)

    def _sample(self, view: dict[P, bytes | None], n: int, exclude: P) -> list[PeerInfo[P]]:
        keys = [p for p in view if p != exclude]
        return [PeerInfo(p, view[p]) for p in self.rng.sample(keys, min(n, len(keys)))]

    def _shuffle_sample(self, n: int, exclude: P) -> list[PeerInfo[P]]:
        """``n`` passive peers, topped up from the active view when the passive one is short."""
        nodes = self._sample(self.passive, n, exclude)
        if len(nodes) < n:
            nodes += self._sample(self.active, n - len(nodes), exclude)
        return nodes

    def _on_shuffle(self, sender: P, msg: Shuffle[P]) -> None:
        if msg.origin == self.me:
            return
        if msg.ttl > 0 and len(self.active) > 1:
            nxt = self._pick([p for p in self.active if p not in (sender, msg.origin)])
            if nxt is not None:
                self._send(nxt, Shuffle(msg.origin, msg.nodes, msg.ttl - 1))
                return
        reply = self._shuffle_sample(len(msg.nodes), msg.origin)
        self._send(msg.origin, ShuffleReply(tuple(reply)))
        for info in msg.nodes:
            self._add_passive(info.id, info.data)

    def _do_shuffle(self) -> None:
        self._shuffle_scheduled = False
        target = self._pick(list(self.active))
        if target is None:
            # Not joined yet (joins are slow on a loaded machine): try again soon. Waiting a
            # whole interval left passive views empty, so nodes cut off by churn stayed cut off.
            self._schedule_shuffle(self.config.first_shuffle_delay)
            return
        self._schedule_shuffle()
        cfg = self.config
        nodes = self._sample(self.active, cfg.shuffle_active_view_count, target)
        nodes += self._sample(self.passive, cfg.shuffle_passive_view_count, target)
        nodes.append(PeerInfo(self.me, self.me_data))
        self._send(target, Shuffle(self.me, tuple(nodes), cfg.shuffle_random_walk_length))
        self._shuffling = True

    # -- PlumTree ------------------------------------------------------------

    def _remember(self, mid: bytes, content: bytes) -> None:
        self._received[mid] = self._now
        self._cache[mid] = (content, self._now)
        if not self._evict_scheduled:
            self._evict_scheduled = True
            self._schedule(self.config.cache_evict_interval, EvictTimer())

    def _broadcast(self, content: bytes, neighbors_only: bool) -> None:
        mid = message_id(content)
        if neighbors_only:
            for peer in self.active:
                self._send(peer, Gossip(mid, content, None))
            return
        self._remember(mid, content)
        self._push(mid, content, 0, None)

    def _push(self, mid: bytes, content: bytes, round_: int, skip: P | None) -> None:
        for peer in self.eager:
            if peer != skip:
                self._send(peer, Gossip(mid, content, round_))
        for peer in self.lazy:
            if peer != skip:
                if not self._ihave_queue:
                    self._schedule(self.config.dispatch_timeout, DispatchIHave())
                self._ihave_queue.setdefault(peer, []).append((mid, round_))

    def _on_gossip(self, sender: P, msg: Gossip) -> None:
        if message_id(msg.content) != msg.id:
            return
        if msg.round is None:
            if msg.id not in self._received:
                self._received[msg.id] = self._now
                self._out.append(Received(msg.content, sender, None))
            return
        if msg.id in self._received:
            self.stats.duplicates += 1
            if sender in self.eager:
                del self.eager[sender]
                self.lazy[sender] = None
                self._send(sender, Prune())
            return
        self._remember(msg.id, msg.content)
        announcers = self._missing.pop(msg.id, [])
        self._out.append(Received(msg.content, sender, msg.round))
        self._push(msg.id, msg.content, min(msg.round + 1, _MAX_ROUND), sender)
        self._optimize(sender, msg.round, announcers)

    def _optimize(self, sender: P, round_: int, announcers: list[tuple[P, int]]) -> None:
        """Swap a long eager path for a lazy one that announced the message much earlier."""
        if not announcers:
            return
        peer, ann_round = min(announcers, key=lambda a: a[1])
        if peer in self.active and round_ - ann_round >= self.config.optimization_threshold:
            self.lazy.pop(peer, None)
            self.eager[peer] = None
            self._send(peer, Graft(None, ann_round))
            if sender in self.eager:
                del self.eager[sender]
                self.lazy[sender] = None
                self._send(sender, Prune())

    def _on_ihave(self, sender: P, msg: IHave) -> None:
        for mid, round_ in msg.entries:
            if mid in self._received:
                continue
            first = mid not in self._missing
            self._missing.setdefault(mid, []).append((sender, round_))
            if first:
                self._schedule(self.config.graft_timeout_1, GraftTimer(mid))

    def _on_graft(self, sender: P, msg: Graft) -> None:
        """Answer even a peer we just dropped: its Graft may have crossed our Disconnect."""
        if sender in self.active:
            self.lazy.pop(sender, None)
            self.eager[sender] = None
        if msg.id is not None and msg.id in self._cache:
            self._send(sender, Gossip(msg.id, self._cache[msg.id][0], msg.round))

    def _on_graft_timer(self, timer: GraftTimer) -> None:
        announcers = self._missing.get(timer.id)
        if timer.id in self._received or not announcers:
            self._missing.pop(timer.id, None)
            return
        peer, round_ = announcers.pop(0)
        if peer in self.active:
            self.lazy.pop(peer, None)
            self.eager[peer] = None
        self._send(peer, Graft(timer.id, round_))
        self._schedule(self.config.graft_timeout_2, GraftTimer(timer.id, second=True))

    def _on_timer(self, timer: Timer[P]) -> None:
        if isinstance(timer, NeighborRequestTimeout):
            if timer.peer in self._pending:
                # Slow is not dead: a peer we cannot reach comes back as ConnectionDown and
                # leaves the passive view then. Dropping slow ones too drains passive views on
                # a loaded machine until a few nodes know nobody else and stay cut off.
                del self._pending[timer.peer]
                self._refill(skip=timer.peer)
        elif isinstance(timer, ShuffleTimer):
            self._do_shuffle()
        elif isinstance(timer, DispatchIHave):
            queue, self._ihave_queue = self._ihave_queue, {}
            for peer, entries in queue.items():
                self._send(peer, IHave(tuple(entries)))
        elif isinstance(timer, GraftTimer):
            self._on_graft_timer(timer)
        elif isinstance(timer, EvictTimer):
            self._evict()

    def _evict(self) -> None:
        cfg = self.config
        self._cache = {k: v for k, v in self._cache.items() if self._now - v[1] < cfg.message_cache_retention}
        self._received = {k: t for k, t in self._received.items() if self._now - t < cfg.message_id_retention}
        self._evict_scheduled = False
        if self._received:
            self._evict_scheduled = True
            self._schedule(cfg.cache_evict_interval, EvictTimer())
