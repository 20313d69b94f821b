"""Two multipath sans-IO QUIC connections over a simulated network of several routes.

Each :class:`Route` joins one client address to one server address with its own delay, rate,
seeded loss and an up/down switch. A side sends to the address its path names; the route that
address belongs to carries the datagram, and the receiver sees it come from the route's other
end. So opening a path to another server address moves traffic to another route, and taking a
route down kills exactly the paths on it. Simulated time only; a run depends only on its seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from irohpy.quic import connection as qc
from irohpy.quic.handshake import iroh_handshake
from tests.quic_conn_sim import ALPN, CLIENT_SECRET, SERVER_ID, SERVER_SECRET

INF = float("inf")


@dataclass
class Route:
    client_addr: tuple[str, int]
    server_addr: tuple[str, int]
    delay: float = 0.010
    rate: float = 12.5e6
    loss: float = 0.0
    up: bool = True
    #: Datagrams from this side (0 client, 1 server) are lost; -1: none.
    drop_from: int = -1
    #: Datagrams and bytes carried each way (index 0: client to server).
    datagrams: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    free_at: list[float] = field(default_factory=lambda: [0.0, 0.0])


class Side:
    """One connection and what its application saw."""

    def __init__(self, conn: qc.QuicConnection) -> None:
        self.conn = conn
        self.events: list[qc.Event] = []
        self.streams: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.terminated: qc.ConnectionTerminated | None = None

    def drain_events(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, qc.StreamDataReceived):
                self.streams.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.fin:
                    self.finished.add(ev.stream_id)
            elif isinstance(ev, qc.ConnectionTerminated) and self.terminated is None:
                self.terminated = ev

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [ev for ev in self.events if isinstance(ev, kind)]


class MpNet:
    """Index 0 is the client, 1 the server; ``routes[0]`` carries the handshake."""

    def __init__(self, client: Side, server: Side, routes: list[Route], seed: int = 1) -> None:
        self.sides = (client, server)
        self.routes = routes
        self.rng = random.Random(seed)
        self.now = 0.0
        self.heap: list[tuple[float, int, int, bytes, tuple[str, int]]] = []
        self.seq = 0
        self.unroutable = 0

    def route_to(self, src: int, addr: object) -> Route | None:
        for route in self.routes:
            if (route.server_addr if src == 0 else route.client_addr) == addr:
                return route
        return None

    def flush(self, index: int) -> None:
        side = self.sides[index]
        for addr, datagrams in side.conn.transmit(self.now):
            route = self.route_to(index, addr)
            if route is None:
                self.unroutable += len(datagrams)  # an address nobody in the simulation has
                continue
            for data in datagrams:
                self._carry(index, route, data)
        side.drain_events()

    def _carry(self, src: int, route: Route, data: bytes) -> None:
        route.datagrams[src] += 1
        route.bytes[src] += len(data)
        if not route.up or src == route.drop_from or self.rng.random() < route.loss:
            return
        start = max(route.free_at[src], self.now)
        route.free_at[src] = start + len(data) / route.rate
        source = route.client_addr if src == 0 else route.server_addr
        self.seq += 1
        heapq.heappush(self.heap, (route.free_at[src] + route.delay, self.seq, 1 - src, data, source))

    def run(self, until: float, done: Callable[[], bool]) -> None:
        """Step until ``done()``; TimeoutError past ``until`` simulated seconds."""
        self.flush(0)
        self.flush(1)
        same = 0
        while not done():
            best = INF
            kind = -1
            if self.heap:
                best = self.heap[0][0]
                kind = 2
            for i in (0, 1):
                t = self.sides[i].conn.get_timer()
                if t is not None and t < best:
                    best = t
                    kind = i
            if kind < 0:
                raise RuntimeError("nothing left to happen")
            if best > until:
                raise TimeoutError(f"simulation passed {until} s")
            if best <= self.now:
                same += 1
                if same > 10_000:
                    raise RuntimeError(f"stuck at {self.now}")
            else:
                same = 0
                self.now = best
            if kind == 2:
                _, _, dst, data, source = heapq.heappop(self.heap)
                self.sides[dst].conn.receive_datagram(data, source, self.now)
                self.sides[dst].drain_events()
                self.flush(dst)
            else:
                self.sides[kind].conn.handle_timer(self.now)
                self.sides[kind].drain_events()
                self.flush(kind)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass."""
        end = self.now + seconds
        try:
            self.run(end, lambda: False)
        except TimeoutError:
            self.now = end


def mp_pair(
    routes: list[Route],
    *,
    client_max: int | None = 7,
    server_max: int | None = 7,
    seed: int = 1,
    **config: object,
) -> tuple[Side, Side, MpNet]:
    """A client and server, multipath offered as given, with the handshake done over routes[0]."""
    client_cfg = qc.QuicConfig(is_client=True, max_path_id=client_max, **config)  # type: ignore[arg-type]
    server_cfg = qc.QuicConfig(is_client=False, max_path_id=server_max, **config)  # type: ignore[arg-type]
    client_conn = qc.QuicConnection(
        client_cfg, iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID)
    )
    client_conn.connect(routes[0].server_addr, 0.0)
    server_conn = qc.QuicConnection(server_cfg, iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]))
    client, server = Side(client_conn), Side(server_conn)
    net = MpNet(client, server, routes, seed)
    net.run(10.0, lambda: client_conn.handshake_complete and server_conn.handshake_complete)
    # Until both sides have the other's path IDs (a round trip after the handshake).
    net.run(net.now + 5.0, lambda: _has_path_cids(client_conn) and _has_path_cids(server_conn))
    return client, server, net


def _has_path_cids(conn: qc.QuicConnection) -> bool:
    return not conn.multipath or len(conn._peer_path_cids) > 1


def two_routes(**second: object) -> list[Route]:
    return [
        Route(("10.0.0.1", 1000), ("10.0.0.2", 2000)),
        Route(("fd00::1", 1000), ("fd00::2", 2000), **second),  # type: ignore[arg-type]
    ]
