"""Gossip over iroh connections: the asyncio driver around the sans-IO :class:`TopicState`.

One :class:`Gossip` per endpoint serves ALPN ``/iroh-gossip/1`` (register it on a Router). It
keeps one connection per peer for sending, opens one uni stream per topic on it (header frame
first, then messages), and reads every uni stream the peer opens on any connection. Incoming
bytes and timer expiries become core events; the core's actions become frames, timers and
subscriber events. Like iroh: a bad stream header closes the connection, a bad frame after the
header drops that stream, a message for a topic we are not in is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import GossipError, IrohError
from irohpy.protocols.gossip.metrics import GossipMetrics
from irohpy.protocols.gossip import proto
from irohpy.protocols.gossip.proto import (
    BroadcastCmd,
    Config,
    ConnectionDown,
    Event,
    JoinCmd,
    QuitCmd,
    RecvMessage,
    Timer,
    TimerFired,
    TopicState,
    message_id,
)
from irohpy.protocols.gossip.wire import (
    ALPN,
    DEFAULT_MAX_MESSAGE_SIZE,
    MIN_MAX_MESSAGE_SIZE,
    TOPIC_ID_LENGTH,
    Disconnect,
    ForwardJoin,
    FrameDecoder,
    IHave,
    Join,
    Message,
    Neighbor,
    Shuffle,
    ShuffleReply,
    decode_header,
    decode_message,
    decode_peer_data,
    encode_frame,
    encode_header,
    encode_message,
    encode_peer_data,
)

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0
JOIN_TIMEOUT = 30.0
FINISH_TIMEOUT = 2.0
EVENT_CAPACITY = 256
QUEUE_HIGH_WATER = 512
QUEUE_LIMIT = 8192
DRAIN_TIMEOUT = 10.0
BAD_HEADER_CODE = 1
BAD_FRAME_CODE = 1
_IHAVE_ENTRY_MAX = 32 + 3
_MAX_ROUND = 0xFFFF


@dataclass(frozen=True)
class TopicId:
    """32 bytes naming a topic; peers meet in a topic by agreeing on its id."""

    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes) or len(self.value) != TOPIC_ID_LENGTH:
            raise ValueError("a topic id is exactly 32 bytes")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> TopicId:
        return cls(bytes(data))

    @classmethod
    def from_name(cls, name: str) -> TopicId:
        """SHA-256 of the UTF-8 name, so every app that agrees on a name finds the same topic."""
        return cls(hashlib.sha256(name.encode()).digest())

    def to_bytes(self) -> bytes:
        return self.value

    def __bytes__(self) -> bytes:
        return self.value

    def fmt_short(self) -> str:
        return self.value.hex()[:10]

    def __str__(self) -> str:
        return self.value.hex()


@dataclass(frozen=True)
class Received:
    """A broadcast reached us; ``delivered_from`` is the neighbor that passed it on, not the author."""

    content: bytes
    delivered_from: EndpointId
    neighbors_only: bool = False


@dataclass(frozen=True)
class NeighborUp:
    endpoint_id: EndpointId


@dataclass(frozen=True)
class NeighborDown:
    endpoint_id: EndpointId


@dataclass(frozen=True)
class Lagged:
    """The receiver fell behind and events were dropped; the topic itself is fine."""


GossipEvent = Received | NeighborUp | NeighborDown | Lagged
Bootstrap = EndpointAddr | EndpointId


class GossipReceiver:
    """Events of one subscription, in order; a bounded queue that reports overflow as Lagged."""

    def __init__(self, topic: _Topic, capacity: int) -> None:
        self._topic = topic
        self._queue: deque[GossipEvent] = deque()
        self._capacity = capacity
        self._lagged = False
        self._ready = asyncio.Event()
        self._closed = False

    def _push(self, event: GossipEvent) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._lagged = True
        self._queue.append(event)
        self._ready.set()

    def _close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def neighbors(self) -> frozenset[EndpointId]:
        return frozenset(self._topic.neighbors)

    async def joined(self, timeout: float | None = JOIN_TIMEOUT) -> None:
        """Wait until the topic has at least one neighbor."""
        try:
            async with asyncio.timeout(timeout):
                await self._topic.joined.wait()
        except TimeoutError:
            raise TimeoutError(f"no gossip neighbor within {timeout:g} s for topic {self._topic.id.fmt_short()}") from None

    def __aiter__(self) -> AsyncIterator[GossipEvent]:
        return self

    async def __anext__(self) -> GossipEvent:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        if self._lagged:
            self._lagged = False
            return Lagged()
        return self._queue.popleft()


class GossipSender:
    """Broadcasts into one topic."""

    def __init__(self, topic: _Topic) -> None:
        self._topic = topic

    async def broadcast(self, content: bytes) -> None:
        """Send to every subscriber of the topic (it is relayed hop by hop)."""
        await self._topic.gossip._broadcast(self._topic, bytes(content), neighbors_only=False)

    async def broadcast_neighbors(self, content: bytes) -> None:
        """Send only to our direct neighbors; they do not pass it on."""
        await self._topic.gossip._broadcast(self._topic, bytes(content), neighbors_only=True)


class GossipTopic:
    """A subscription: ``sender`` and ``receiver`` (use :meth:`split` to hand them to two tasks).

    Closing it (or leaving ``async with``) leaves the topic once no other subscription uses it.
    """

    def __init__(self, topic: _Topic, capacity: int) -> None:
        self._topic = topic
        self.sender = GossipSender(topic)
        self.receiver = GossipReceiver(topic, capacity)

    @property
    def id(self) -> TopicId:
        return self._topic.id

    @property
    def neighbors(self) -> frozenset[EndpointId]:
        return self.receiver.neighbors

    def split(self) -> tuple[GossipSender, GossipReceiver]:
        return self.sender, self.receiver

    async def joined(self, timeout: float | None = JOIN_TIMEOUT) -> None:
        await self.receiver.joined(timeout)

    async def broadcast(self, content: bytes) -> None:
        await self.sender.broadcast(content)

    async def broadcast_neighbors(self, content: bytes) -> None:
        await self.sender.broadcast_neighbors(content)

    def __aiter__(self) -> AsyncIterator[GossipEvent]:
        return self.receiver

    async def close(self) -> None:
        self._topic.gossip._unsubscribe(self._topic, self.receiver)

    async def __aenter__(self) -> GossipTopic:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


@dataclass(eq=False)
class _Topic:
    gossip: Gossip
    id: TopicId
    state: TopicState[EndpointId]
    receivers: list[GossipReceiver] = field(default_factory=list)
    neighbors: set[EndpointId] = field(default_factory=set)
    joined: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Conn:
    """One QUIC connection to a peer and the tasks reading its streams."""

    conn: Connection
    reader: asyncio.Task[None] | None = None
    streams: set[asyncio.Task[None]] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Peer:
    id: EndpointId
    conns: list[_Conn] = field(default_factory=list)
    send: _Conn | None = None
    streams: dict[bytes, SendStream] = field(default_factory=dict)
    queue: deque[tuple[bytes, Message[EndpointId]]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    topics: set[bytes] = field(default_factory=set)
    closing: bool = False


class Gossip:
    """Publish and subscribe on topics over an endpoint; register it on a Router under :attr:`alpn`.

    ``async with Gossip(endpoint) as gossip`` shuts it down on exit, which sends Disconnect to
    every neighbor. Must be created inside a running event loop.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        config: Config | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        alpn: bytes = ALPN,
        event_capacity: int = EVENT_CAPACITY,
        seed: int | None = None,
    ) -> None:
        if max_message_size < MIN_MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be at least {MIN_MAX_MESSAGE_SIZE}")
        self._endpoint = endpoint
        self._config = config or Config()
        self._max = max_message_size
        self._alpn = bytes(alpn)
        self._capacity = event_capacity
        self._rng = random.Random(seed)
        self._loop = asyncio.get_running_loop()
        self._topics: dict[bytes, _Topic] = {}
        self._peers: dict[EndpointId, _Peer] = {}
        self._addrs: dict[EndpointId, EndpointAddr] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[tuple[float, int, _Topic, Timer[EndpointId]]] = []
        self._timer_seq = 0
        self._timer_handle: asyncio.TimerHandle | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
        self.metrics = endpoint.metrics().group(GossipMetrics)

    @property
    def alpn(self) -> bytes:
        return self._alpn

    @property
    def max_message_size(self) -> int:
        return self._max

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    async def __aenter__(self) -> Gossip:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.shutdown()

    # -- public API ------------------------------------------------------------

    async def subscribe(self, topic_id: TopicId, bootstrap: Iterable[Bootstrap] = ()) -> GossipTopic:
        """Join ``topic_id`` through the ``bootstrap`` peers (none: wait to be joined by others).

        Returns at once; ``await topic.joined()`` waits for the first neighbor.
        """
        self._check_open()
        if not isinstance(topic_id, TopicId):
            raise TypeError(f"topic_id must be a TopicId, not {type(topic_id).__name__}")
        ids: list[EndpointId] = []
        for peer in bootstrap:
            if isinstance(peer, EndpointAddr):
                self._remember_addr(peer)
                ids.append(peer.id)
            elif isinstance(peer, EndpointId):
                ids.append(peer)
            else:
                raise TypeError(f"bootstrap peers are EndpointAddr or EndpointId, not {type(peer).__name__}")
        topic = self._topics.get(topic_id.value)
        if topic is None:
            state = TopicState(self._endpoint.id, random.Random(self._rng.getrandbits(64)), self._config,
                               me_data=encode_peer_data(self._endpoint.addr()))
            topic = self._topics[topic_id.value] = _Topic(self, topic_id, state)
        handle = GossipTopic(topic, self._capacity)
        for neighbor in sorted(topic.neighbors):
            handle.receiver._push(NeighborUp(neighbor))
        topic.receivers.append(handle.receiver)
        self._handle(topic, JoinCmd(tuple(i for i in ids if i != self._endpoint.id)))
        return handle

    async def subscribe_and_join(self, topic_id: TopicId, bootstrap: Iterable[Bootstrap],
                                 timeout: float | None = JOIN_TIMEOUT) -> GossipTopic:
        """:meth:`subscribe`, then wait for the first neighbor (leaving again on timeout)."""
        topic = await self.subscribe(topic_id, bootstrap)
        try:
            await topic.joined(timeout)
        except BaseException:
            await topic.close()
            raise
        return topic

    async def accept(self, conn: Connection) -> None:
        """Router entry point: take over an incoming connection."""
        if self._closed or conn.remote_id is None:
            conn.close(0, b"")
            return
        self._add_conn(conn.remote_id, conn)

    async def shutdown(self) -> None:
        """Leave every topic (Disconnect to neighbors), flush briefly, then stop all tasks."""
        if self._closed:
            return
        for topic in list(self._topics.values()):
            self._leave(topic)
        self._closed = True
        writers = [p.writer for p in self._peers.values() if p.writer is not None and not p.writer.done()]
        if writers:
            await asyncio.wait(writers, timeout=2 * FINISH_TIMEOUT)
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        for peer in list(self._peers.values()):
            for c in peer.conns:
                c.conn.close(0, b"")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._peers.clear()

    close = shutdown

    # -- topics ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GossipError("gossip is shut down")

    def _unsubscribe(self, topic: _Topic, receiver: GossipReceiver) -> None:
        receiver._close()
        if receiver in topic.receivers:
            topic.receivers.remove(receiver)
        if not topic.receivers and self._topics.get(topic.id.value) is topic:
            self._leave(topic)

    def _leave(self, topic: _Topic) -> None:
        self._handle(topic, QuitCmd())
        for receiver in topic.receivers:
            receiver._close()
        topic.receivers.clear()
        del self._topics[topic.id.value]
        for peer in list(self._peers.values()):
            if topic.id.value in peer.topics:
                peer.topics.discard(topic.id.value)
                self._release(peer)

    async def _broadcast(self, topic: _Topic, content: bytes, *, neighbors_only: bool) -> None:
        self._check_open()
        if self._topics.get(topic.id.value) is not topic:
            raise GossipError("this topic subscription is closed")
        size = len(encode_message(proto.Gossip(message_id(content), content, None if neighbors_only else _MAX_ROUND)))
        if size >= self._max:
            raise GossipError(
                f"gossip message too large: {len(content)} bytes of content encode to {size} bytes, "
                f"which must be below max_message_size={self._max}"
            )
        if not self._drained.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await self._drained.wait()
        self._handle(topic, BroadcastCmd(content, neighbors_only))

    # -- the core ------------------------------------------------------------------

    def _handle(self, topic: _Topic, event: Event[EndpointId]) -> None:
        tid = topic.id.value
        metrics = self.metrics
        duplicates = topic.state.stats.duplicates
        actions = topic.state.handle(event, self._loop.time())
        metrics.msgs_duplicate_recv.inc(topic.state.stats.duplicates - duplicates)
        for action in actions:
            if isinstance(action, proto.SendMessage):
                self._send(action.peer, tid, action.message)
            elif isinstance(action, proto.ScheduleTimer):
                self._schedule(action.at, topic, action.timer)
            elif isinstance(action, proto.Received):
                metrics.msgs_delivered.inc()
                self._emit(topic, Received(action.content, action.delivered_from, action.round is None))
            elif isinstance(action, proto.NeighborUp):
                if action.peer not in topic.neighbors:
                    metrics.neighbor_up.inc()
                    metrics.neighbors.inc()
                topic.neighbors.add(action.peer)
                topic.joined.set()
                self._emit(topic, NeighborUp(action.peer))
            elif isinstance(action, proto.NeighborDown):
                if action.peer in topic.neighbors:
                    metrics.neighbor_down.inc()
                    metrics.neighbors.dec()
                topic.neighbors.discard(action.peer)
                if not topic.neighbors:
                    topic.joined.clear()
                self._emit(topic, NeighborDown(action.peer))
            elif isinstance(action, proto.DisconnectPeer):
                peer = self._peers.get(action.peer)
                if peer is not None:
                    peer.topics.discard(tid)
                    self._release(peer)

    @staticmethod
    def _emit(topic: _Topic, event: GossipEvent) -> None:
        for receiver in topic.receivers:
            receiver._push(event)

    def _schedule(self, at: float, topic: _Topic, timer: Timer[EndpointId]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, topic, timer))
        if self._timer_handle is None or at < self._timer_handle.when():
            if self._timer_handle is not None:
                self._timer_handle.cancel()
            self._timer_handle = self._loop.call_at(at, self._run_timers)

    def _run_timers(self) -> None:
        self._timer_handle = None
        now = self._loop.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, topic, timer = heapq.heappop(self._timers)
            if self._topics.get(topic.id.value) is topic and not self._closed:
                self._handle(topic, TimerFired(timer))
        if self._timers and self._timer_handle is None and not self._closed:
            self._timer_handle = self._loop.call_at(self._timers[0][0], self._run_timers)

    def _on_message(self, peer_id: EndpointId, tid: bytes, msg: Message[EndpointId]) -> None:
        topic = self._topics.get(tid)
        if topic is None or self._closed:
            log.debug("dropping %s from %s for topic %s we are not in", type(msg).__name__,
                      peer_id.fmt_short(), tid.hex()[:10])
            return
        self._learn(peer_id, msg)
        self._handle(topic, RecvMessage(peer_id, msg))
        peer = self._peers.get(peer_id)
        if peer is None:
            return
        if topic.state.uses(peer_id):
            peer.topics.add(tid)
            peer.closing = False
        elif tid in peer.topics:
            peer.topics.discard(tid)
            self._release(peer)
        elif not peer.topics:
            self._release(peer)

    def _learn(self, peer_id: EndpointId, msg: Message[EndpointId]) -> None:
        """Keep the addresses peers announce in PeerData, so we can dial them by id later."""
        infos: list[tuple[EndpointId, bytes | None]] = []
        if isinstance(msg, Join | Neighbor):
            infos.append((peer_id, msg.data))
        elif isinstance(msg, ForwardJoin):
            infos.append((msg.peer.id, msg.peer.data))
        elif isinstance(msg, Shuffle | ShuffleReply):
            infos += [(i.id, i.data) for i in msg.nodes]
        for endpoint_id, data in infos:
            if data:
                try:
                    self._remember_addr(decode_peer_data(endpoint_id, data))
                except GossipError as exc:
                    log.debug("ignoring bad peer data for %s: %s", endpoint_id.fmt_short(), exc)

    def _remember_addr(self, addr: EndpointAddr) -> None:
        if addr.id == self._endpoint.id or addr.is_empty():
            return
        old = self._addrs.get(addr.id)
        self._addrs[addr.id] = addr if old is None else old.with_addrs(addr.addrs)

    # -- peers and connections -------------------------------------------------------

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _peer(self, peer_id: EndpointId) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(peer_id)
        return peer

    def _send(self, peer_id: EndpointId, tid: bytes, msg: Message[EndpointId]) -> None:
        if self._closed:
            return
        peer = self._peer(peer_id)
        peer.topics.add(tid)
        peer.closing = False
        if len(peer.queue) >= QUEUE_LIMIT:
            log.warning("gossip peer %s is not reading; dropping it", peer_id.fmt_short())
            self._peer_failed(peer)
            return
        if isinstance(msg, IHave):
            per = max(1, (self._max - 8) // _IHAVE_ENTRY_MAX)
            for i in range(0, len(msg.entries), per):
                peer.queue.append((tid, IHave(msg.entries[i : i + per])))
        else:
            peer.queue.append((tid, msg))
        if len(peer.queue) >= QUEUE_HIGH_WATER:
            self._drained.clear()
        self._kick(peer)

    def _kick(self, peer: _Peer) -> None:
        peer.wake.set()
        if peer.writer is None or peer.writer.done():
            peer.writer = self._spawn(self._write_loop(peer))

    def _release(self, peer: _Peer) -> None:
        """No topic needs ``peer`` any more: flush, finish our streams, then close."""
        if peer.topics or self._peers.get(peer.id) is not peer:
            return
        peer.closing = True
        if peer.writer is None and not peer.conns:
            del self._peers[peer.id]
            return
        self._kick(peer)

    def _peer_failed(self, peer: _Peer) -> None:
        """Dial failed, the connection died, or the peer stopped reading: tell every topic."""
        if self._peers.get(peer.id) is not peer:
            return
        del self._peers[peer.id]
        for c in peer.conns:
            c.conn.close(0, b"")
        if peer.writer is not None and peer.writer is not asyncio.current_task():
            peer.writer.cancel()
        self._update_drained()
        if self._closed:
            return
        for topic in list(self._topics.values()):
            self._handle(topic, ConnectionDown(peer.id))

    def _update_drained(self) -> None:
        if all(len(p.queue) < QUEUE_HIGH_WATER // 2 for p in self._peers.values()):
            self._drained.set()

    def _add_conn(self, peer_id: EndpointId, conn: Connection) -> _Conn:
        peer = self._peer(peer_id)
        c = _Conn(conn)
        peer.conns.append(c)
        if peer.send is None or peer.send.conn.is_closed:
            peer.send = c
            peer.streams.clear()
        c.reader = self._spawn(self._read_conn(peer_id, c))
        return c

    def _conn_ended(self, peer_id: EndpointId, c: _Conn) -> None:
        peer = self._peers.get(peer_id)
        if peer is None or c not in peer.conns:
            return
        peer.conns.remove(c)
        if peer.send is c:
            live = [o for o in peer.conns if not o.conn.is_closed]
            peer.send = live[-1] if live else None
            peer.streams.clear()
            if peer.send is None:
                if peer.closing or not self._needed(peer_id):
                    del self._peers[peer_id]
                    if peer.writer is not None and peer.writer is not asyncio.current_task():
                        peer.writer.cancel()
                else:
                    self._peer_failed(peer)

    def _needed(self, peer_id: EndpointId) -> bool:
        """Whether a topic counts on ``peer_id``; losing a peer nobody needs is no failure."""
        return any(topic.state.uses(peer_id) for topic in self._topics.values())

    async def _dial(self, peer: _Peer) -> _Conn:
        target: EndpointAddr | EndpointId = self._addrs.get(peer.id, peer.id)
        conn = await self._endpoint.connect(target, self._alpn, timeout=DIAL_TIMEOUT)
        if self._peers.get(peer.id) is not peer:
            conn.close(0, b"")
            raise GossipError("peer dropped while dialing")
        if peer.send is not None and not peer.send.conn.is_closed:
            self._add_conn(peer.id, conn)
            return peer.send
        return self._add_conn(peer.id, conn)

    async def _write_loop(self, peer: _Peer) -> None:
        try:
            while True:
                if not peer.queue:
                    if peer.closing:
                        if await self._finish(peer):
                            return
                        if peer.topics:
                            peer.closing = False
                        continue
                    peer.wake.clear()
                    await peer.wake.wait()
                    continue
                c = peer.send if peer.send is not None and not peer.send.conn.is_closed else await self._dial(peer)
                batch = list(peer.queue)
                peer.queue.clear()
                self._update_drained()
                try:
                    await self._write_batch(peer, c, batch)
                except IrohError:
                    if c.conn.is_closed and c is not peer.send and peer.send is not None:
                        peer.queue.extendleft(reversed(batch))
                        continue
                    raise
        except asyncio.CancelledError:
            raise
        except (IrohError, OSError) as exc:
            log.debug("gossip peer %s failed: %s", peer.id.fmt_short(), exc)
            self._peer_failed(peer)

    def _count(self, msg: Message[EndpointId], size: int, *, sent: bool) -> None:
        m = self.metrics
        if isinstance(msg, proto.Gossip):
            count, nbytes = (m.msgs_data_sent, m.msgs_data_sent_size) if sent else (m.msgs_data_recv, m.msgs_data_recv_size)
        else:
            count, nbytes = (m.msgs_ctrl_sent, m.msgs_ctrl_sent_size) if sent else (m.msgs_ctrl_recv, m.msgs_ctrl_recv_size)
        count.inc()
        nbytes.inc(size)

    async def _write_batch(self, peer: _Peer, c: _Conn, batch: list[tuple[bytes, Message[EndpointId]]]) -> None:
        """Write frames grouped per topic stream; a Disconnect ends its stream (spec §10.1)."""
        chunks: dict[bytes, bytearray] = {}
        for tid, msg in batch:
            stream = peer.streams.get(tid)
            if stream is None:
                stream = peer.streams[tid] = await c.conn.open_uni()
                chunks.setdefault(tid, bytearray()).extend(encode_header(tid))
            body = encode_message(msg)
            self._count(msg, len(body), sent=True)
            chunks.setdefault(tid, bytearray()).extend(encode_frame(body, self._max))
            if isinstance(msg, Disconnect):
                await stream.write_all(chunks.pop(tid))
                await stream.finish()
                del peer.streams[tid]
        for tid, data in chunks.items():
            await peer.streams[tid].write_all(data)

    async def _finish(self, peer: _Peer) -> bool:
        """Finish our streams, give the peer a moment to finish its own, then close.

        False if the peer was needed again meanwhile (or is gone) and the writer must go on.
        """
        streams = list(peer.streams.values())
        peer.streams.clear()
        with contextlib.suppress(IrohError, TimeoutError):
            async with asyncio.timeout(FINISH_TIMEOUT):
                for stream in streams:
                    await stream.finish()
                for stream in streams:
                    await stream.stopped()
                for c in list(peer.conns):
                    await c.idle.wait()
        if self._peers.get(peer.id) is not peer:
            return True
        if not peer.closing or peer.queue or peer.topics:
            return False
        del self._peers[peer.id]
        for c in peer.conns:
            c.conn.close(0, b"")
        return True

    async def _read_conn(self, peer_id: EndpointId, c: _Conn) -> None:
        c.idle.set()
        try:
            while True:
                stream = await c.conn.accept_uni()
                task = self._spawn(self._read_stream(peer_id, c, stream))
                c.streams.add(task)
                c.idle.clear()
                task.add_done_callback(lambda t: self._stream_done(c, t))
        except IrohError:
            pass
        finally:
            for task in list(c.streams):
                task.cancel()
            self._conn_ended(peer_id, c)

    @staticmethod
    def _stream_done(c: _Conn, task: asyncio.Task[None]) -> None:
        c.streams.discard(task)
        if not c.streams:
            c.idle.set()

    async def _read_stream(self, peer_id: EndpointId, c: _Conn, stream: RecvStream) -> None:
        decoder = FrameDecoder(self._max)
        tid: bytes | None = None
        try:
            while data := await stream.read(65536):
                for body in decoder.feed(data):
                    if tid is None:
                        tid = decode_header(body)
                        continue
                    msg = decode_message(body)
                    self._count(msg, len(body), sent=False)
                    self._on_message(peer_id, tid, msg)
            if tid is None:
                raise GossipError("gossip stream ended before its header")
        except GossipError as exc:
            if tid is None:
                log.debug("bad gossip stream header from %s: %s; closing", peer_id.fmt_short(), exc)
                c.conn.close(BAD_HEADER_CODE, b"bad gossip stream header")
            else:
                log.debug("bad gossip frame from %s: %s; dropping the stream", peer_id.fmt_short(), exc)
                stream.stop(BAD_FRAME_CODE)
        except IrohError as exc:
            log.debug("gossip stream from %s ended: %s", peer_id.fmt_short(), exc)
