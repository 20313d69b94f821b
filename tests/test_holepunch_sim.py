"""Path selection and hole punching under NATs and loss, simulated (no sockets, seeded, fast).

Two peers run the real sans-IO cores (HolePunch + RemotePaths) against a model of two NAT
routers: cone (one mapping per socket, filtering by the remote address and port) or symmetric
(a new mapping per destination). CallMeMaybe travels over a lossless relay; direct packets can be
lost. This is the deterministic counterpart of the netns lab (irohpy.lab).
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

import pytest

from irohpy.base.keys import SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.socket.holepunch import HolePunch, SendCallMeMaybe, SendPing
from irohpy.socket.paths import RelayPath, RemotePaths, is_relay

Addr = tuple[str, int]
PORT = 40000
DIRECT_DELAY = 0.020
RELAY_DELAY = 0.040
TICK = 0.1


@dataclass
class Nat:
    public_ip: str
    symmetric: bool
    rng: random.Random
    mappings: dict[Addr, int] = field(default_factory=dict)  # destination -> public port
    allowed: set[tuple[int, Addr]] = field(default_factory=set)  # (public port, remote) let in

    def outbound(self, dst: Addr) -> Addr:
        if not self.symmetric:
            port = PORT
        else:
            port = self.mappings.setdefault(dst, self.rng.randrange(20000, 60000))
        self.allowed.add((port, dst))
        return self.public_ip, port

    def inbound(self, port: int, src: Addr) -> bool:
        return (port, src) in self.allowed


@dataclass
class Peer:
    name: str
    nat: Nat
    paths: RemotePaths = field(default_factory=RemotePaths)
    punch: HolePunch = field(default_factory=HolePunch)
    selections: list[str] = field(default_factory=list)


class Sim:
    def __init__(self, seed: int, a_symmetric: bool, b_symmetric: bool, loss: float) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.queue: list[tuple[float, int, object]] = []
        self.seq = itertools.count()
        self.a = Peer("a", Nat("203.0.113.21", a_symmetric, self.rng))
        self.b = Peer("b", Nat("203.0.113.22", b_symmetric, self.rng))
        self.peers = {"a": self.a, "b": self.b}
        url = RelayUrl.parse("http://203.0.113.10:3340")
        key = SecretKey.generate().public()
        for peer in (self.a, self.b):
            tx_ids = (i.to_bytes(12, "big") for i in itertools.count(self.rng.randrange(1 << 40)))
            peer.punch = HolePunch(lambda ids=tx_ids: next(ids))  # type: ignore[misc]
            relay = RelayPath(url, key)
            peer.paths.add_candidate(relay, "dial")
            peer.paths.on_authenticated(relay, 0.0)
            peer.paths.speaks_control = True
            peer.paths.listener = lambda e, p=peer: p.selections.append(e.path.kind) if e.kind in (
                "selected", "fallback") else None
            peer.punch.start(0.0)

    def other(self, peer: Peer) -> Peer:
        return self.b if peer is self.a else self.a

    def candidates(self, peer: Peer) -> tuple[Addr, ...]:
        private = ("198.51.100.2" if peer is self.a else "198.51.100.130", PORT)
        reflexive = peer.nat.outbound(("203.0.113.10", 3478))  # what STUN at the relay saw
        return private, reflexive

    def at(self, delay: float, event: object) -> None:
        heapq.heappush(self.queue, (self.now + delay, next(self.seq), event))

    def send_direct(self, sender: Peer, dst: Addr, kind: str, tx: bytes) -> None:
        src = sender.nat.outbound(dst)
        if self.rng.random() >= self.loss:
            self.at(DIRECT_DELAY, ("udp", src, dst, kind, tx))

    def run_actions(self, peer: Peer, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, SendPing):
                self.send_direct(peer, action.path, "ping", action.tx_id)
            elif isinstance(action, SendCallMeMaybe):
                self.at(RELAY_DELAY, ("cmm", self.other(peer).name, self.candidates(peer)))

    def deliver(self, event: tuple) -> None:  # type: ignore[type-arg]
        if event[0] == "cmm":
            peer = self.peers[event[1]]
            self.run_actions(peer, peer.punch.on_call_me_maybe(self.now, peer.paths, event[2]))
            return
        _, src, dst, kind, tx = event
        peer = next((p for p in (self.a, self.b) if p.nat.public_ip == dst[0]), None)
        if peer is None or not peer.nat.inbound(dst[1], src):
            return  # a private address, or the NAT's filter
        if kind == "ping":
            state = peer.paths.add_candidate(src, "ping")
            if not state.validated:
                peer.paths.to_probe.add(src)
            self.send_direct(peer, src, "pong", tx)
        else:
            matched = peer.punch.on_pong(tx, src, self.now)
            if matched is not None:
                peer.paths.on_pong(src, matched[1], self.now)

    def run(self, until: float) -> None:
        next_tick = 0.0
        while self.now < until:
            if self.queue and self.queue[0][0] <= next_tick:
                self.now, _, event = heapq.heappop(self.queue)
                self.deliver(event)  # type: ignore[arg-type]
                continue
            self.now = next_tick
            for peer in (self.a, self.b):
                peer.paths.check(self.now)
                self.run_actions(peer, peer.punch.tick(self.now, peer.paths))
            next_tick += TICK

    def direct(self, peer: Peer) -> bool:
        return peer.paths.selected is not None and not is_relay(peer.paths.selected)


def time_to_direct(sim: Sim, limit: float) -> float | None:
    while sim.now < limit:
        sim.run(sim.now + TICK)
        if sim.direct(sim.a) and sim.direct(sim.b):
            return sim.now
    return None


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.20])
def test_cone_cone_goes_direct_every_time(loss: float) -> None:
    times = []
    for seed in range(200):
        took = time_to_direct(Sim(seed, False, False, loss), 20.0)
        assert took is not None, f"seed {seed}: no direct path with {loss:.0%} loss"
        times.append(took)
    times.sort()
    # Without loss: the first round plus a round trip; with loss a later round catches up.
    assert times[len(times) // 2] <= (0.3 if loss == 0 else 1.0)
    assert times[-1] <= (0.3 if loss == 0 else 10.0)


@pytest.mark.parametrize(("a_sym", "b_sym"), [(True, False), (False, True), (True, True)])
def test_symmetric_stays_on_the_relay_without_flapping(a_sym: bool, b_sym: bool) -> None:
    for seed in range(50):
        sim = Sim(seed, a_sym, b_sym, 0.05)
        sim.run(60.0)
        assert not sim.direct(sim.a) and not sim.direct(sim.b)
        assert sim.a.selections == [] and sim.b.selections == []  # never left the relay


def test_a_dead_direct_path_falls_back_and_comes_back() -> None:
    sim = Sim(1, False, False, 0.0)
    assert time_to_direct(sim, 5.0) is not None
    sim.loss = 1.0  # the direct path dies
    cut = sim.now
    while sim.direct(sim.a):
        sim.run(sim.now + TICK)
    assert sim.now - cut < 5.0
    sim.loss = 0.0
    back = time_to_direct(sim, sim.now + 15.0)
    assert back is not None
    assert sim.a.selections.count("direct") == 2 and "relay" in sim.a.selections
