"""QuicEndpoints wired through an in-memory, seeded link in simulated time (no sockets).

Each endpoint has an address; datagrams travel with a delay, seeded loss, reordering and
duplication. Everything that arrives at the same instant reaches its endpoint as one burst, as a
driver would hand it over. Per connection, what the application saw is gathered in :class:`Seen`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from irohpy.quic import connection as qc
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint, Transmit

INF = float("inf")
ALPN = b"irohpy/endpoint-test/0"


@dataclass
class Seen:
    streams: dict[int, bytearray] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    datagrams: list[bytes] = field(default_factory=list)
    resets: dict[int, int] = field(default_factory=dict)
    handshake: qc.HandshakeCompleted | None = None
    terminated: qc.ConnectionTerminated | None = None


@dataclass
class Link:
    delay: float = 0.005
    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.004
    duplicate: float = 0.0


class Sim:
    def __init__(self, link: Link | None = None, seed: int = 1) -> None:
        self.link = link or Link()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.endpoints: dict[object, QuicEndpoint] = {}
        self.heap: list[tuple[float, int, object, object, bytes]] = []
        self.seq = 0
        self.seen: dict[qc.QuicConnection, Seen] = {}
        self.accepted: dict[object, list[qc.QuicConnection]] = {}
        self.sent: list[tuple[object, object, bytes]] = []
        #: Called with (src, dst, datagram); True drops it.
        self.drop: Callable[[object, object, bytes], bool] | None = None

    def add(self, addr: object, secret: bytes, config: EndpointConfig | None = None) -> QuicEndpoint:
        ep = QuicEndpoint(secret, config)
        self.endpoints[addr] = ep
        self.accepted.setdefault(addr, [])
        return ep

    def replace(self, addr: object, ep: QuicEndpoint) -> None:
        """A restart: the address now belongs to a fresh endpoint."""
        self.endpoints[addr] = ep

    def inject(self, src: object, dst: object, data: bytes) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now, self.seq, dst, src, data))

    def _send(self, src: object, transmits: list[Transmit]) -> None:
        link = self.link
        rng = self.rng
        for t in transmits:
            assert t.datagrams and all(len(d) <= t.segment_size for d in t.datagrams)
            assert all(len(d) == t.segment_size for d in t.datagrams[:-1])
            for data in t.datagrams:
                self.sent.append((src, t.addr, data))
                if (self.drop is not None and self.drop(src, t.addr, data)) or rng.random() < link.loss:
                    continue
                arrive = self.now + link.delay
                if rng.random() < link.reorder:
                    arrive += rng.uniform(0.0, link.reorder_delay)
                for i in range(2 if rng.random() < link.duplicate else 1):
                    self.seq += 1
                    heapq.heappush(self.heap, (arrive + i * link.reorder_delay, self.seq, t.addr, src, data))

    def _collect(self, addr: object, ep: QuicEndpoint) -> None:
        for conn in ep.touched():
            seen = self.seen.setdefault(conn, Seen())
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, qc.StreamDataReceived):
                    seen.streams.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                    if ev.fin:
                        seen.finished.add(ev.stream_id)
                elif isinstance(ev, qc.DatagramReceived):
                    seen.datagrams.append(ev.data)
                elif isinstance(ev, qc.StreamReset):
                    seen.resets[ev.stream_id] = ev.error_code
                elif isinstance(ev, qc.HandshakeCompleted):
                    seen.handshake = ev
                elif isinstance(ev, qc.ConnectionTerminated):
                    if seen.terminated is None:
                        seen.terminated = ev

    def flush(self, addr: object) -> None:
        ep = self.endpoints[addr]
        self._send(addr, ep.transmits(self.now))
        self._collect(addr, ep)

    def flush_all(self) -> None:
        for addr in list(self.endpoints):
            self.flush(addr)

    def run(self, until: float, done: Callable[[], bool]) -> None:
        """Step until ``done()``; TimeoutError past ``until`` simulated seconds."""
        self.flush_all()
        while not done():
            best = INF
            if self.heap:
                best = self.heap[0][0]
            for ep in self.endpoints.values():
                t = ep.deadline()
                if t is not None and t < best:
                    best = t
            if best == INF:
                raise RuntimeError("nothing left to happen")
            if best > until:
                raise TimeoutError(f"simulation passed {until} s")
            self.now = max(self.now, best)
            bursts: dict[object, list[tuple[bytes, object]]] = {}
            while self.heap and self.heap[0][0] <= self.now:
                _, _, dst, src, data = heapq.heappop(self.heap)
                bursts.setdefault(dst, []).append((data, src))
            for addr, ep in list(self.endpoints.items()):
                batch = bursts.get(addr, [])
                transmits, created, _ = ep.poll(batch, self.now)
                self.accepted[addr].extend(created)
                self._send(addr, transmits)
                self._collect(addr, ep)

    def seen_of(self, conn: qc.QuicConnection) -> Seen:
        return self.seen.setdefault(conn, Seen())
