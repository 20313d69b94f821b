"""Two sans-IO QUIC connections joined by a seeded, simulated link (no sockets, simulated time).

Either end may be irohpy's :class:`~irohpy.quic.connection.QuicConnection` or aioquic's; both
are wrapped as :class:`End`. The link has a propagation delay, a serialisation rate with a
bounded queue, and seeded loss, reordering and duplication, so a run depends only on its seed.
"""

from __future__ import annotations

import heapq
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from aioquic.quic import events as aio_events
from aioquic.quic.connection import QuicConnection as AioConnection

from irohpy.quic import connection as qc
from irohpy.quic.handshake import Handshake, iroh_handshake
from irohpy.quic.packet import peek_dcid
from irohpy.tls import quic_configuration
from irohpy.tls.connection import IrohQuicConnection
from irohpy.tls.keys import private_key, public_key_bytes
from irohpy.tls.resumption import TicketCache, TicketStore

INF = float("inf")
CLIENT_ADDR = ("127.0.0.1", 1111)
SERVER_ADDR = ("127.0.0.1", 2222)
ALPN = b"irohpy/test/0"
CLIENT_SECRET = bytes(range(32))
SERVER_SECRET = bytes(range(32, 64))
SERVER_ID = public_key_bytes(private_key(SERVER_SECRET))
CLIENT_ID = public_key_bytes(private_key(CLIENT_SECRET))


class End(ABC):
    """One side, as the simulator drives it; collects what the application saw."""

    def __init__(self) -> None:
        self.streams: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.datagrams: list[bytes] = []
        self.handshake_done = False
        self.early_data_accepted = False
        self.session_resumed = False
        self.alpn: bytes | None = None
        self.peer_id: bytes | None = None
        self.terminated: tuple[int, bytes, str] | None = None

    @abstractmethod
    def receive(self, data: bytes, now: float) -> None: ...

    @abstractmethod
    def send(self, now: float) -> list[bytes]: ...

    @abstractmethod
    def timer(self) -> float | None: ...

    @abstractmethod
    def on_timer(self, now: float) -> None: ...


class Ours(End):
    def __init__(self, conn: qc.QuicConnection) -> None:
        super().__init__()
        self.conn = conn

    def _events(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, qc.StreamDataReceived):
                self.streams.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.fin:
                    self.finished.add(ev.stream_id)
            elif isinstance(ev, qc.HandshakeCompleted):
                self.handshake_done = True
                self.alpn = ev.alpn
                self.peer_id = ev.peer_id
                self.early_data_accepted = ev.early_data_accepted
                self.session_resumed = ev.session_resumed
            elif isinstance(ev, qc.DatagramReceived):
                self.datagrams.append(ev.data)
            elif isinstance(ev, qc.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
            elif isinstance(ev, qc.StopSendingReceived):
                self.stops[ev.stream_id] = ev.error_code
            elif isinstance(ev, qc.ConnectionTerminated):
                if self.terminated is None:
                    self.terminated = (ev.error_code, ev.reason, ev.cause)

    def receive(self, data: bytes, now: float) -> None:
        self.conn.receive_datagram(data, CLIENT_ADDR, now)
        self._events()

    def send(self, now: float) -> list[bytes]:
        out = self.conn.datagrams_to_send(now)
        self._events()
        return out

    def timer(self) -> float | None:
        return self.conn.get_timer()

    def on_timer(self, now: float) -> None:
        self.conn.handle_timer(now)
        self._events()


class Theirs(End):
    """aioquic; a server is made on its first datagram, since it needs the original DCID."""

    def __init__(self, conn: AioConnection | Callable[[bytes], AioConnection], peer_addr: tuple[str, int]) -> None:
        super().__init__()
        self._factory = None if isinstance(conn, AioConnection) else conn
        self._conn = conn if isinstance(conn, AioConnection) else None
        self.peer_addr = peer_addr

    @property
    def conn(self) -> AioConnection:
        assert self._conn is not None
        return self._conn

    def _events(self) -> None:
        if self._conn is None:
            return
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, aio_events.StreamDataReceived):
                self.streams.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if ev.end_stream:
                    self.finished.add(ev.stream_id)
            elif isinstance(ev, aio_events.HandshakeCompleted):
                self.handshake_done = True
                self.alpn = ev.alpn_protocol.encode() if ev.alpn_protocol else None
                self.early_data_accepted = ev.early_data_accepted
                self.session_resumed = ev.session_resumed
            elif isinstance(ev, aio_events.DatagramFrameReceived):
                self.datagrams.append(ev.data)
            elif isinstance(ev, aio_events.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
            elif isinstance(ev, aio_events.ConnectionTerminated):
                if self.terminated is None:
                    self.terminated = (ev.error_code, ev.reason_phrase.encode(), "aioquic")

    def receive(self, data: bytes, now: float) -> None:
        if self._conn is None:
            assert self._factory is not None
            self._conn = self._factory(peek_dcid(data, 8))
        self.conn.receive_datagram(data, self.peer_addr, now)
        self._events()

    def send(self, now: float) -> list[bytes]:
        if self._conn is None:
            return []
        out = [data for data, _ in self.conn.datagrams_to_send(now)]
        self._events()
        return out

    def timer(self) -> float | None:
        return self.conn.get_timer() if self._conn is not None else None

    def on_timer(self, now: float) -> None:
        self.conn.handle_timer(now)
        self._events()


@dataclass
class Link:
    delay: float = 0.010
    rate: float = 12.5e6
    queue_bytes: int = 400_000
    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.005
    duplicate: float = 0.0
    #: Larger datagrams are dropped (change it mid-run for a route change: a black hole).
    mtu: int = 1452


@dataclass
class Stats:
    datagrams: int = 0
    bytes: int = 0
    lost: int = 0
    too_big: int = 0
    steps: int = 0
    largest: int = 0


class Net:
    """Index 0 is the client, 1 the server."""

    def __init__(self, client: End, server: End, link: Link, seed: int) -> None:
        self.ends = (client, server)
        self.link = link
        self.rng = random.Random(seed)
        self.now = 0.0
        self.heap: list[tuple[float, int, int, bytes]] = []
        self.seq = 0
        self.free_at = [0.0, 0.0]
        self.stats = Stats()
        #: Datagrams dropped in transit when this returns True (by index and content).
        self.drop: Callable[[int, bytes], bool] | None = None

    def _transmit(self, src: int, data: bytes) -> None:
        link = self.link
        rng = self.rng
        self.stats.datagrams += 1
        self.stats.bytes += len(data)
        if len(data) > link.mtu:
            self.stats.too_big += 1
            return
        self.stats.largest = max(self.stats.largest, len(data))
        if (self.drop is not None and self.drop(src, data)) or rng.random() < link.loss:
            self.stats.lost += 1
            return
        start = max(self.free_at[src], self.now)
        if (start - self.now) * link.rate > link.queue_bytes:
            self.stats.lost += 1
            return
        self.free_at[src] = start + len(data) / link.rate
        arrive = self.free_at[src] + link.delay
        if rng.random() < link.reorder:
            arrive += rng.uniform(0.0, link.reorder_delay)
        copies = 2 if rng.random() < link.duplicate else 1
        for i in range(copies):
            self.seq += 1
            heapq.heappush(self.heap, (arrive + i * rng.uniform(0.0, link.reorder_delay), self.seq, 1 - src, data))

    def flush(self, index: int) -> None:
        for data in self.ends[index].send(self.now):
            self._transmit(index, data)

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
                t = self.ends[i].timer()
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
                if same > 2:
                    # A timer due now that does not move (aioquic's pacer measures elapsed time):
                    # let a microsecond pass, as it would in real time.
                    self.now += 1e-6
            else:
                same = 0
                self.now = best
            self.stats.steps += 1
            if kind == 2:
                _, _, dst, data = heapq.heappop(self.heap)
                self.ends[dst].receive(data, self.now)
                self.flush(dst)
            else:
                self.ends[kind].on_timer(self.now)
                self.flush(kind)


def our_client(
    config: qc.QuicConfig | None = None,
    expected: bytes = SERVER_ID,
    *,
    ticket_cache: TicketCache | None = None,
    handshake: Handshake | None = None,
) -> Ours:
    cfg = config or qc.QuicConfig(is_client=True)
    hs = handshake or iroh_handshake(
        CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=expected, ticket_cache=ticket_cache
    )
    conn = qc.QuicConnection(cfg, hs)
    conn.connect(SERVER_ADDR, 0.0)
    return Ours(conn)


def our_server(
    config: qc.QuicConfig | None = None,
    alpns: list[bytes] | None = None,
    *,
    ticket_store: TicketStore | None = None,
    early_data: bool = True,
) -> Ours:
    cfg = config or qc.QuicConfig(is_client=False)
    hs = iroh_handshake(
        SERVER_SECRET, is_client=False, alpns=alpns or [ALPN], ticket_store=ticket_store, early_data=early_data
    )
    return Ours(qc.QuicConnection(cfg, hs))


def aioquic_client(**overrides: object) -> Theirs:
    config = quic_configuration(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, **overrides)
    conn = IrohQuicConnection(configuration=config, expected_peer=SERVER_ID)
    conn.connect(SERVER_ADDR, now=0.0)
    return Theirs(conn, SERVER_ADDR)


def aioquic_server(**overrides: object) -> Theirs:
    config = quic_configuration(SERVER_SECRET, is_client=False, alpns=[ALPN], **overrides)

    def make(dcid: bytes) -> AioConnection:
        return IrohQuicConnection(configuration=config, original_destination_connection_id=dcid)

    return Theirs(make, CLIENT_ADDR)
