"""One authenticated relay client: a reader, a writer with bounded queues, and a pinger.

The three run as tasks owned by :meth:`Client.run`; whichever ends first decides how the
connection ends, and ``run`` cancels the others and closes the WebSocket with a reason.
Datagrams for the client wait in a queue bounded in frames *and* bytes, so a client that
never reads costs at most that much memory; every write has a timeout, after which the
client is dropped. Control frames (Pong, EndpointGone, Status) have a queue of their own
that is served first; at most ``CONTROL_QUEUE`` Pongs wait in it, so a Ping flood gets its
excess Pongs dropped rather than queued.

Every frame a client sends, of any type, is metered by its receive rate limit (if one is
configured), and the reader yields to the event loop after ``READ_SLICE`` of work, so a
client flooding tiny frames gets its turn like everyone else instead of the whole loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from irohpy.base.keys import PublicKey
from irohpy.errors import RelayProtocolError
from irohpy.relay.protocol import (
    ClientToRelay, Frame, FrameType, Health, Ping, Pong, Status, StatusFrame, decode, encode,
)
from irohpy.relay.server.config import Limits, RateLimit, Timers
from irohpy.relay.server.liveness import PingTracker
from irohpy.relay.server.metrics import RelayMetrics
from irohpy.relay.server.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

CONTROL_QUEUE = 64
READ_SLICE = 0.002  # seconds one client's reads (or writes) may run before yielding to the others
REPLACED_TEXT = "another connection with the same endpoint id replaced this one"
_MAX_CLOSE_REASON = 123  # a close frame carries at most 125 bytes, 2 of them the code


class Forwarder(Protocol):
    def forward(self, source: PublicKey, frame: ClientToRelay) -> None: ...


class _Queued(NamedTuple):
    message: bytes
    payload_len: int
    packets: int


@dataclass(frozen=True)
class Ending:
    """How a client's connection ends: a metrics label, and what the client is told."""

    why: str
    code: int = WSCloseCode.OK
    reason: str = ""
    final: bytes | None = None


def close_reason(text: str) -> bytes:
    """``text`` cut to fit a WebSocket close frame without splitting a UTF-8 character."""
    return text.encode("utf-8")[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")


def packet_count(frame: ClientToRelay) -> int:
    if frame.segment_size is None:
        return 1
    return -(-len(frame.payload) // frame.segment_size)


def wire_size(message_len: int) -> int:
    """Bytes a client's (masked) WebSocket message of ``message_len`` bytes takes on the wire."""
    extended = 0 if message_len < 126 else 2 if message_len < 1 << 16 else 8
    return 2 + extended + 4 + message_len


def frame_cost(frame: Frame | None, message_len: int, rx: RateLimit) -> int:
    """What a frame costs against the receive budget: its wire size, but at least
    ``rx.min_frame_bytes`` for each datagram it carries (one for any other message, including
    WebSocket-level ones, ``frame`` None)."""
    units = packet_count(frame) if isinstance(frame, ClientToRelay) else 1
    return max(wire_size(message_len), units * rx.min_frame_bytes)


class Client:
    def __init__(self, ws: web.WebSocketResponse, endpoint_id: PublicKey, version: int, *,
                 forwarder: Forwarder, limits: Limits, timers: Timers, metrics: RelayMetrics,
                 token: str | None) -> None:
        loop = asyncio.get_running_loop()
        self.endpoint_id = endpoint_id
        self.version = version
        self.token = token
        self.authorized_at = time.time()
        self._ws = ws
        self._forwarder = forwarder
        self._limits = limits
        self._metrics = metrics
        self._data: deque[_Queued] = deque()
        self._data_bytes = 0
        self._control: deque[bytes] = deque()
        self._pongs_queued = 0
        self._wake = asyncio.Event()
        self._ending: asyncio.Future[Ending] = loop.create_future()
        rx = limits.client_rx
        self._bucket = TokenBucket(rx.bytes_per_second, rx.max_burst_bytes, loop.time()) if rx else None
        self._throttled = False
        self._tracker = PingTracker(timers.ping_interval, timers.ping_jitter, timers.pong_timeout, loop.time())
        self._ponged = asyncio.Event()

    def __repr__(self) -> str:
        return f"<relay Client {self.endpoint_id.fmt_short()} v{self.version}>"

    # -- what others call -------------------------------------------------------

    def enqueue_datagrams(self, message: bytes, payload_len: int, packets: int) -> bool:
        """Queue a RelayToClient frame; False (and counted) if it had to be dropped."""
        if self._ending.done():
            self._metrics.packets_dropped.labels("client_gone").inc(packets)
            return False
        size = len(message)
        limits = self._limits
        if len(self._data) >= limits.send_queue_packets or self._data_bytes + size > limits.send_queue_bytes:
            self._metrics.packets_dropped.labels("queue_full").inc(packets)
            return False
        self._data.append(_Queued(message, payload_len, packets))
        self._data_bytes += size
        self._metrics.queued_packets.inc()
        self._metrics.queued_bytes.inc(size)
        self._wake.set()
        return True

    def enqueue_control(self, frame: Frame) -> None:
        """Queue a control frame; Pongs (the only kind a client can multiply) are capped."""
        if self._ending.done():
            return
        if isinstance(frame, Pong):
            if self._pongs_queued >= CONTROL_QUEUE:
                self._metrics.packets_dropped.labels("control_queue_full").inc()
                return
            self._pongs_queued += 1
        self._control.append(encode(frame))
        self._wake.set()

    def stop(self, ending: Ending) -> None:
        """End the connection (first call wins); :meth:`run` then closes it."""
        if not self._ending.done():
            self._ending.set_result(ending)

    def replaced(self) -> None:
        final = StatusFrame(Status.SAME_ENDPOINT_ID_CONNECTED) if self.version >= 2 else Health(REPLACED_TEXT)
        self.stop(Ending("replaced", WSCloseCode.OK, REPLACED_TEXT, encode(final)))

    @property
    def why(self) -> str:
        """Why the connection ended, for metrics ("closed" if it was simply torn down)."""
        return self._ending.result().why if self._ending.done() else "closed"

    async def run(self) -> None:
        """Serve the client until the connection ends, then close it with the reason."""
        tasks = [asyncio.create_task(self._guard(loop()), name=f"{self!r} {loop.__name__}")
                 for loop in (self._read_loop, self._write_loop, self._ping_loop)]
        try:
            ending = await self._ending
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._discard_queue()
        logger.info("%r ends: %s %s", self, ending.why, ending.reason)
        await self._close(ending)

    # -- the three loops -----------------------------------------------------------

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            logger.exception("%r failed", self)
            self.stop(Ending("internal_error", WSCloseCode.INTERNAL_ERROR, "internal error"))

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        slice_end = loop.time() + READ_SLICE
        while True:
            msg = await self._ws.receive()
            if msg.type is WSMsgType.BINARY:
                wait = self._handle(msg.data)
                if wait is None:
                    return
            elif msg.type in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG):
                # iroh ignores non-binary messages. aiohttp's autoping is off so that WebSocket
                # pings are metered and take turns like everything else; they still get a pong.
                if msg.type is WSMsgType.PING and not await self._ws_pong(msg.data):
                    return
                size = len(msg.data.encode() if isinstance(msg.data, str) else msg.data)
                wait = self._meter(None, size, loop.time())
            elif msg.type is WSMsgType.ERROR:
                # aiohttp already closed the socket with the matching code (e.g. 1009 too big).
                self.stop(Ending("protocol_error", self._ws.close_code or WSCloseCode.PROTOCOL_ERROR, str(msg.data)))
                return
            else:
                self.stop(Ending("closed"))
                return
            # receive() does not yield while frames are buffered: give the others their turn.
            if wait > 0 or loop.time() >= slice_end:
                await asyncio.sleep(wait)
                slice_end = loop.time() + READ_SLICE

    async def _ws_pong(self, data: bytes) -> bool:
        try:
            async with asyncio.timeout(self._limits.write_timeout):
                await self._ws.pong(data)
        except TimeoutError:
            self.stop(Ending("write_timeout", WSCloseCode.GOING_AWAY, "write timed out"))
            return False
        except ConnectionError:
            self.stop(Ending("closed"))
            return False
        return True

    def _handle(self, data: bytes) -> float | None:
        """Act on one message; the seconds to pause reading after it, None to stop."""
        now = asyncio.get_running_loop().time()
        try:
            frame = decode(data, version=self.version)
        except RelayProtocolError as exc:
            self.stop(Ending("protocol_error", WSCloseCode.PROTOCOL_ERROR, str(exc)))
            return None
        self._tracker.on_activity(now)
        match frame:
            case ClientToRelay():
                self._on_datagrams(frame)
            case Ping(payload):
                self.enqueue_control(Pong(payload))
            case Pong(payload):
                self._tracker.on_pong(payload, now)
                self._ponged.set()
            case _:
                reason = f"unexpected {type(frame).__name__} frame from a client"
                self.stop(Ending("protocol_error", WSCloseCode.PROTOCOL_ERROR, reason))
                return None
        return self._meter(frame, len(data), now)

    def _meter(self, frame: Frame | None, size: int, now: float) -> float:
        rx = self._limits.client_rx
        if self._bucket is None or rx is None:
            return 0.0
        cost = frame_cost(frame, size, rx)
        wait = self._bucket.take(cost, now)
        if wait > 0:
            self._metrics.rx_ratelimited_bytes.inc(cost)
            if not self._throttled:
                self._throttled = True
                self._metrics.rate_limited_clients.inc()
                if self.version >= 2:
                    self.enqueue_control(StatusFrame(Status.RATE_LIMITED))
        return wait

    def _on_datagrams(self, frame: ClientToRelay) -> None:
        segment = frame.segment_size
        if segment is not None and segment < self._limits.min_segment_size and len(frame.payload) > segment:
            self._metrics.packets_dropped.labels("segment_too_small").inc(packet_count(frame))
            return
        self._forwarder.forward(self.endpoint_id, frame)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            slice_end = loop.time() + READ_SLICE
            while self._control or self._data:
                if loop.time() >= slice_end:  # each write is a syscall: others get their turn too
                    await asyncio.sleep(0)
                    slice_end = loop.time() + READ_SLICE
                item = None
                if self._control:
                    message = self._control.popleft()
                    if message[0] == FrameType.PONG:
                        self._pongs_queued -= 1
                else:
                    item = self._data.popleft()
                    message = item.message
                    self._unqueue(item)
                try:
                    async with asyncio.timeout(self._limits.write_timeout):
                        await self._ws.send_bytes(message)
                except TimeoutError:
                    self.stop(Ending("write_timeout", WSCloseCode.GOING_AWAY, "write timed out"))
                    return
                except ConnectionError:
                    self.stop(Ending("closed"))
                    return
                if item is not None:
                    self._metrics.packets_forwarded.inc(item.packets)
                    self._metrics.bytes_forwarded.inc(item.payload_len)

    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._tracker.expired(now):
                self.stop(Ending("ping_timeout", WSCloseCode.GOING_AWAY, "no pong in time"))
                return
            payload = self._tracker.due(now)
            if payload is not None:
                self.enqueue_control(Ping(payload))
                self._metrics.pings_sent.inc()
            # A Pong moves the next wakeup from the pong deadline to the next ping.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self._tracker.next_wakeup()):
                    await self._ponged.wait()
            self._ponged.clear()

    # -- ending ---------------------------------------------------------------------

    def _unqueue(self, item: _Queued) -> None:
        self._data_bytes -= len(item.message)
        self._metrics.queued_packets.dec()
        self._metrics.queued_bytes.dec(len(item.message))

    def _discard_queue(self) -> None:
        while self._data:
            item = self._data.popleft()
            self._unqueue(item)
            self._metrics.packets_dropped.labels("client_gone").inc(item.packets)
        self._control.clear()
        self._pongs_queued = 0

    async def _close(self, ending: Ending) -> None:
        """Send the final frame (if any) and a close frame with the reason, all bounded in time."""
        if self._ws.closed:
            return
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(self._limits.write_timeout):
                if ending.final is not None:
                    await self._ws.send_bytes(ending.final)
                await self._ws.close(code=ending.code, message=close_reason(ending.reason))
