"""Sans-IO gossip state machine: unit tests of HyParView/PlumTree steps and in-memory swarms."""

from __future__ import annotations

import random
import time

from irohpy.protocols.gossip.proto import (
    Action,
    BroadcastCmd,
    ConnectionDown,
    DispatchIHave,
    EvictTimer,
    GraftTimer,
    JoinCmd,
    NeighborDown,
    NeighborRequestTimeout,
    NeighborUp,
    QuitCmd,
    Received,
    RecvMessage,
    ScheduleTimer,
    SendMessage,
    ShuffleTimer,
    TimerFired,
    TopicState,
    message_id,
)
from irohpy.protocols.gossip.sim import Simulation
from irohpy.protocols.gossip.wire import (
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Neighbor,
    PeerInfo,
    Priority,
    Prune,
    Shuffle,
    ShuffleReply,
)


def node(me: int = 0, seed: int = 1) -> TopicState[int]:
    return TopicState(me, random.Random(seed))


def sends(actions: list[Action[int]]) -> list[tuple[int, object]]:
    return [(a.peer, a.message) for a in actions if isinstance(a, SendMessage)]


def with_neighbors(state: TopicState[int], peers: list[int]) -> None:
    for p in peers:
        state.handle(RecvMessage(p, Neighbor(Priority.HIGH)), 0.0)


def test_join_sends_join_and_schedules_shuffle() -> None:
    out = node().handle(JoinCmd((5, 0, 6)), 1.0)
    assert sends(out) == [(5, Join(None)), (6, Join(None))]
    assert ScheduleTimer(3.0, ShuffleTimer()) in out


def test_contact_accepts_joiner_and_forwards_join() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    out = s.handle(RecvMessage(9, Join(b"d")), 0.0)
    assert 9 in s.active and 9 in s.eager
    assert (9, Neighbor(Priority.HIGH, None)) in sends(out)
    fj = ForwardJoin(PeerInfo(9, b"d"), 6)
    assert (1, fj) in sends(out) and (2, fj) in sends(out)
    assert NeighborUp(9) in out


def test_forward_join_ttl_zero_requests_neighbor_then_adds_on_reply() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    out = s.handle(RecvMessage(1, ForwardJoin(PeerInfo(9), 0)), 0.0)
    assert sends(out) == [(9, Neighbor(Priority.HIGH, None))]
    assert ScheduleTimer(0.5, NeighborRequestTimeout(9)) in out
    assert 9 not in s.active
    out = s.handle(RecvMessage(9, Neighbor(Priority.HIGH)), 0.1)
    assert 9 in s.active and NeighborUp(9) in out and sends(out) == []


def test_forward_join_walks_and_adds_passive_at_prwl() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    out = s.handle(RecvMessage(1, ForwardJoin(PeerInfo(9), 3)), 0.0)
    assert sends(out) == [(2, ForwardJoin(PeerInfo(9), 2))]
    assert 9 in s.passive and 9 not in s.active


def test_full_active_view_evicts_to_passive() -> None:
    s = node()
    with_neighbors(s, [1, 2, 3, 4, 5])
    out = s.handle(RecvMessage(9, Join()), 0.0)
    assert len(s.active) == 5 and 9 in s.active
    (victim,) = [a.peer for a in out if isinstance(a, NeighborDown)]
    assert (victim, Disconnect(alive=True)) in sends(out)
    assert victim in s.passive


def test_low_priority_neighbor_rejected_when_full() -> None:
    s = node()
    with_neighbors(s, [1, 2, 3, 4, 5])
    out = s.handle(RecvMessage(9, Neighbor(Priority.LOW)), 0.0)
    assert [m for p, m in sends(out) if p == 9 and not isinstance(m, ShuffleReply)] == [Disconnect(alive=True)]
    assert isinstance(sends(out)[0][1], ShuffleReply)  # upstream hands over peers before refusing
    assert 9 not in s.active and 9 in s.passive


def test_disconnect_refills_from_passive_and_timeout_tries_next() -> None:
    s = node()
    with_neighbors(s, [1])
    s.passive.update({7: None, 8: None})
    out = s.handle(RecvMessage(1, Disconnect(alive=False)), 0.0)
    assert NeighborDown(1) in out and 1 not in s.passive
    asked = [(p, m.priority) for p, m in sends(out) if isinstance(m, Neighbor)]
    assert sorted(asked) == [(7, Priority.HIGH), (8, Priority.LOW)]
    out = s.handle(TimerFired(NeighborRequestTimeout(7)), 0.5)
    assert 7 in s.passive  # slow is not dead: only ConnectionDown drops a peer we cannot reach
    out = s.handle(RecvMessage(8, Disconnect(alive=True)), 0.6)
    assert 8 in s.passive and not s.active


def test_connection_down_removes_peer() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    out = s.handle(ConnectionDown(1), 0.0)
    assert NeighborDown(1) in out and list(s.active) == [2]


def test_shuffle_cycle() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    s.passive.update({7: None, 8: None})
    out = s.handle(TimerFired(ShuffleTimer()), 60.0)
    (peer, msg), = sends(out)
    assert isinstance(msg, Shuffle) and msg.origin == 0 and msg.ttl == 6
    assert PeerInfo(0) in msg.nodes and {7, 8} <= {i.id for i in msg.nodes}
    assert ScheduleTimer(120.0, ShuffleTimer()) in out
    # a shuffle that ends here is answered to its origin and feeds the passive view
    r = node(me=3)
    with_neighbors(r, [4])
    r.passive[11] = None
    out = r.handle(RecvMessage(4, Shuffle(20, (PeerInfo(21), PeerInfo(22)), 2)), 0.0)
    assert sends(out) == [(20, ShuffleReply((PeerInfo(11), PeerInfo(4))))]  # passive, topped up from active
    assert {21, 22} <= set(r.passive)
    r.handle(RecvMessage(20, ShuffleReply((PeerInfo(30, b"x"),))), 0.0)
    assert r.passive[30] == b"x"


def test_quit_disconnects_everyone() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    out = s.handle(QuitCmd(), 0.0)
    assert sorted((p, m) for p, m in sends(out) if isinstance(m, Disconnect)) == [(1, Disconnect(False)), (2, Disconnect(False))]
    assert not s.active


def test_broadcast_eager_push_lazy_ihave_and_prune() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    s.handle(RecvMessage(2, Prune()), 0.0)
    assert list(s.lazy) == [2]
    mid = message_id(b"hi")
    out = s.handle(BroadcastCmd(b"hi"), 1.0)
    assert sends(out) == [(1, Gossip(mid, b"hi", 0))]
    assert ScheduleTimer(1.005, DispatchIHave()) in out
    out = s.handle(TimerFired(DispatchIHave()), 1.005)
    assert sends(out) == [(2, IHave(((mid, 0),)))]
    # a duplicate from an eager peer prunes it
    out = s.handle(RecvMessage(1, Gossip(mid, b"hi", 3)), 1.1)
    assert sends(out) == [(1, Prune())] and 1 in s.lazy and s.stats.duplicates == 1


def test_receive_delivers_once_and_forwards() -> None:
    s = node()
    with_neighbors(s, [1, 2, 3])
    mid = message_id(b"x")
    out = s.handle(RecvMessage(1, Gossip(mid, b"x", 4)), 0.0)
    assert Received(b"x", 1, 4) in out
    assert sorted(sends(out)) == [(2, Gossip(mid, b"x", 5)), (3, Gossip(mid, b"x", 5))]
    assert s.handle(RecvMessage(1, Gossip(message_id(b"y"), b"z", 0)), 0.0) == []  # bad id


def test_ihave_graft_timeout_and_graft_reply() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    mid = message_id(b"m")
    out = s.handle(RecvMessage(2, IHave(((mid, 2),))), 0.0)
    assert out == [ScheduleTimer(0.08, GraftTimer(mid))]
    out = s.handle(TimerFired(GraftTimer(mid)), 0.08)
    assert sends(out) == [(2, Graft(mid, 2))]
    assert ScheduleTimer(0.12, GraftTimer(mid, second=True)) in out
    out = s.handle(RecvMessage(2, Gossip(mid, b"m", 2)), 0.1)
    assert Received(b"m", 2, 2) in out
    assert s.handle(TimerFired(GraftTimer(mid, second=True)), 0.12) == []
    # the cache answers a Graft from a lazy peer and makes it eager
    s.handle(RecvMessage(1, Prune()), 0.2)
    out = s.handle(RecvMessage(1, Graft(mid, 3)), 0.2)
    assert sends(out) == [(1, Gossip(mid, b"m", 3))] and 1 in s.eager


def test_tree_optimisation_swaps_long_eager_path() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    s.handle(RecvMessage(2, Prune()), 0.0)
    mid = message_id(b"o")
    s.handle(RecvMessage(2, IHave(((mid, 1),))), 0.0)
    out = s.handle(RecvMessage(1, Gossip(mid, b"o", 9)), 0.05)
    assert (2, Graft(None, 1)) in sends(out) and (1, Prune()) in sends(out)
    assert 2 in s.eager and 1 in s.lazy


def test_neighbors_scope_not_forwarded() -> None:
    s = node()
    with_neighbors(s, [1, 2])
    mid = message_id(b"n")
    out = s.handle(BroadcastCmd(b"n", neighbors_only=True), 0.0)
    assert sorted(sends(out)) == [(1, Gossip(mid, b"n", None)), (2, Gossip(mid, b"n", None))]
    r = node(me=5)
    with_neighbors(r, [1, 2])
    out = r.handle(RecvMessage(1, Gossip(mid, b"n", None)), 0.0)
    assert out == [Received(b"n", 1, None)]


def test_cache_eviction() -> None:
    s = node()
    with_neighbors(s, [1])
    s.handle(BroadcastCmd(b"e"), 0.0)
    s.handle(TimerFired(GraftTimer(b"\x00" * 32)), 0.0)
    mid = message_id(b"e")
    for t in range(1, 92):
        s.handle(TimerFired(EvictTimer()), float(t))
    out = s.handle(RecvMessage(1, Graft(mid, 0)), 92.0)
    assert sends(out) == []
    out = s.handle(RecvMessage(1, Gossip(mid, b"e", 0)), 92.0)
    assert Received(b"e", 1, 0) in out


def test_simulation_is_deterministic() -> None:
    def run() -> list[tuple[int, int]]:
        sim = Simulation(30, seed=5)
        sim.bootstrap()
        mid = sim.broadcast(sim.joined()[3], b"det")
        sim.run_until(sim.now + 2)
        return sorted(sim.deliveries[mid].hops.items())

    assert run() == run()


def test_hundred_nodes_full_delivery_with_churn() -> None:
    """Three cycles of 20% leave (half crash) and rejoin, broadcasting in every phase.

    Messages sent at the very instant of a mass rejoin can, for some seeds, lose a tree link
    to eviction while in flight (PlumTree has no catch-up); bench/gossip_sim.py reports that
    rate. With this fixed seed every phase is exactly 100%.
    """
    started = time.process_time()  # CPU time: the simulation's own cost, whatever the machine's load
    sim = Simulation(100, seed=7)
    sim.bootstrap()
    assert all(len(s.active) >= 1 for s in sim.nodes.values())
    mids = [sim.broadcast(sim.rng.choice(sim.joined()), b"before %d" % i) for i in range(5)]
    sim.run_until(sim.now + 2)
    assert all(len(sim.deliveries[m].hops) == 99 for m in mids)
    for cycle in range(3):
        gone = sim.churn_out(0.2)
        mids = [sim.broadcast(sim.rng.choice(sim.joined()), b"down %d %d" % (cycle, i)) for i in range(3)]
        sim.run_until(sim.now + 2)
        sim.rejoin(gone)
        mids += [sim.broadcast(sim.rng.choice(sim.joined()), b"rejoin %d %d" % (cycle, i)) for i in range(3)]
        sim.run_until(sim.now + 2)
        mids += [sim.broadcast(sim.rng.choice(sim.joined()), b"after %d %d" % (cycle, i)) for i in range(3)]
        sim.run_until(sim.now + 2)
        assert [sim.delivery_ratio(m) for m in mids] == [1.0] * len(mids)
        sim.left.clear()
    assert time.process_time() - started < 10


def test_refused_neighbor_request_does_not_trigger_another() -> None:
    """A Low request refused with Disconnect must not start a Neighbor/Disconnect storm."""
    s = node()
    with_neighbors(s, [1])
    s.passive.update({7: None, 8: None})
    s.handle(RecvMessage(1, Disconnect(alive=True)), 0.0)
    s.handle(RecvMessage(2, Neighbor(Priority.HIGH)), 0.1)
    out = s.handle(RecvMessage(7, Disconnect(alive=True)), 0.2)
    assert sends(out) == [] and 7 in s.passive


def test_stable_swarm_is_quiet() -> None:
    """Once joined, an idle swarm sends no membership traffic until the shuffle timer."""
    sim = Simulation(200, seed=3)
    sim.bootstrap()
    sent: list[object] = []
    apply = sim._apply

    def counting(node: int, actions: list[Action[int]]) -> None:
        sent.extend(a.message for a in actions if isinstance(a, SendMessage))
        apply(node, actions)

    sim._apply = counting  # type: ignore[method-assign]
    sim.run_until(sim.now + 5)
    assert not [m for m in sent if isinstance(m, (Neighbor, Disconnect))]


def test_node_without_neighbors_keeps_asking_passive_peers() -> None:
    s = node()
    s.passive.update({7: None})
    s._pending[8] = None
    out = s.handle(RecvMessage(8, Disconnect(alive=True)), 0.0)
    assert sorted(p for p, m in sends(out) if isinstance(m, Neighbor)) == [7, 8]


def test_graft_answered_after_dropping_the_peer() -> None:
    """A Graft that crossed our Disconnect is still answered from the cache."""
    s = node()
    with_neighbors(s, [1])
    s.handle(BroadcastCmd(b"x"), 0.0)
    s.handle(RecvMessage(1, Disconnect(alive=True)), 0.01)
    out = s.handle(RecvMessage(1, Graft(message_id(b"x"), 0)), 0.02)
    assert sends(out) == [(1, Gossip(message_id(b"x"), b"x", 0))]


def test_contact_answer_to_join_is_not_answered_back() -> None:
    """The contact's Neighbor after our Join is the reply we expect, not a request to answer."""
    s = node()
    s.handle(JoinCmd((5,)), 0.0)
    out = s.handle(RecvMessage(5, Neighbor(Priority.HIGH)), 0.05)
    assert NeighborUp(5) in out and sends(out) == []


def test_neighbor_reply_has_the_request_priority() -> None:
    s = node()
    with_neighbors(s, [1])
    out = s.handle(RecvMessage(9, Neighbor(Priority.LOW)), 0.0)
    assert sends(out) == [(9, Neighbor(Priority.LOW, None))]
