"""Streams of an :class:`~irohpy.endpoint.engine.EngineConnection`, as the application sees them.

Writes wait while too much is unacknowledged, so a slow peer slows the writer; reads return
flow-control credit as they consume, so a slow reader slows the peer. The data a write hands
over is kept by reference until acknowledged. The limits are those of the public streams
(:mod:`irohpy.endpoint.streams`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from irohpy.base.notify import Notify
from irohpy.errors import ReadError, StreamError, StreamReset, StreamStopped

if TYPE_CHECKING:
    from irohpy.endpoint.engine import EngineConnection

#: Unacknowledged bytes a stream may hold before write() waits.
SEND_HIGH_WATER = 2 * 1024 * 1024
#: Bytes a stream may queue beyond the peer's flow-control credit before ready() waits, so a
#: producer that awaits ready() pins at most this plus one write per stream at a peer that
#: never reads.
SEND_AHEAD = 64 * 1024


class EngineSendStream:
    """The sending half of a stream."""

    __slots__ = ("_conn", "id", "_finished", "_reset", "stop_code")

    def __init__(self, conn: EngineConnection, stream_id: int) -> None:
        self._conn = conn
        self.id = stream_id
        self._finished = False
        self._reset = False
        #: The peer's STOP_SENDING code, once it asked us to stop.
        self.stop_code: int | None = None

    def _must_wait(self) -> bool:
        """Too much unacknowledged, or too much queued beyond what the peer lets us send."""
        ss = self._conn.quic.streams.send.get(self.id)
        if ss is None:
            return False
        return ss.buffered() >= SEND_HIGH_WATER or ss.written - ss.max_data >= SEND_AHEAD

    def _unacked(self) -> int:
        ss = self._conn.quic.streams.send.get(self.id)
        return ss.buffered() if ss is not None else 0

    def _check_writable(self) -> None:
        if self.stop_code is not None:
            raise StreamStopped(f"stream {self.id} stopped by peer (code {self.stop_code})", error_code=self.stop_code)
        if self._reset or self._finished:
            raise StreamError(f"stream {self.id} is already finished or reset")
        self._conn._check_open()

    async def ready(self) -> None:
        """Wait until the peer's credit has room: lets a producer make data only when it can go out."""
        self._check_writable()
        while self._must_wait():
            await self._conn._progress.wait()
            self._check_writable()

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data`` (writable buffers are copied); waits while :data:`SEND_HIGH_WATER`
        bytes are unacknowledged. A writer may run that far ahead of a peer that is itself busy
        writing, so echo-style peers do not deadlock; :meth:`ready` also waits for credit."""
        self._check_writable()
        while self._unacked() >= SEND_HIGH_WATER:
            await self._conn._progress.wait()
            self._check_writable()
        if data:
            # The core keeps what it is given until acknowledged: anything writable (a bytearray,
            # a view of one) could change under it, so only read-only data goes by reference.
            if isinstance(data, bytearray) or (isinstance(data, memoryview) and not data.readonly):
                data = bytes(data)
            self._conn.quic.send_stream_data(self.id, data)
            self._conn._wake()
        return len(data)

    async def write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        chunk = 1 << 20
        for start in range(0, len(view), chunk):
            await self.write(view[start : start + chunk])

    def finish(self) -> None:
        """Send FIN: the peer's reads end after what was written."""
        self._check_writable()
        self._finished = True
        self._conn.quic.send_stream_data(self.id, b"", end_stream=True)
        self._conn._forget(self.id, send=True)
        self._conn._wake()

    def reset(self, error_code: int = 0) -> None:
        """Abandon the stream: unsent data is dropped and the peer sees the code."""
        if self._reset or self._conn.terminated is not None:
            return
        self._reset = True
        self._conn._forget(self.id, send=True)
        if self.id in self._conn.quic.streams.send:
            self._conn.quic.reset_stream(self.id, error_code)
            self._conn._wake()

    async def stopped(self) -> int | None:
        """Wait until the peer stops the stream (its code) or acknowledged everything (None)."""
        while True:
            if self.stop_code is not None:
                return self.stop_code
            ss = self._conn.quic.streams.send.get(self.id)
            if self._finished and (ss is None or ss.is_done()):
                return None
            self._conn._check_open()
            await self._conn._progress.wait()

    def __repr__(self) -> str:
        return f"EngineSendStream(id={self.id})"


class EngineRecvStream:
    """The receiving half of a stream."""

    __slots__ = ("_conn", "id", "_chunks", "_buffered", "_eof", "reset_code", "_stopped", "_readable", "bytes_read")

    def __init__(self, conn: EngineConnection, stream_id: int) -> None:
        self._conn = conn
        self.id = stream_id
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        #: The peer's RESET_STREAM code, once it abandoned the stream.
        self.reset_code: int | None = None
        self._stopped = False
        self._readable = Notify()
        self.bytes_read = 0

    def _on_data(self, data: bytes, fin: bool) -> None:
        if data:
            if self._stopped:
                self._conn._consumed(self.id, len(data))
            else:
                self._chunks.append(data)
                self._buffered += len(data)
        if fin:
            self._eof = True
        self._readable.notify_all()

    def _on_reset(self, error_code: int) -> None:
        self.reset_code = error_code
        self._readable.notify_all()

    def _wake(self) -> None:
        self._readable.notify_all()

    async def _wait_readable(self) -> bool:
        """Wait for data; False at a clean end of stream."""
        while not self._chunks:
            if self.reset_code is not None:
                self._conn._forget(self.id, send=False)
                code = self.reset_code
                raise StreamReset(f"stream {self.id} reset by peer (code {code})", error_code=code)
            if self._eof:
                self._conn._forget(self.id, send=False)
                return False
            if self._stopped:
                raise ReadError(f"stream {self.id} was stopped locally")
            self._conn._check_open()
            await self._readable.wait()
        return True

    def _take(self, n: int) -> bytes:
        first = self._chunks[0]
        if len(first) <= n:
            self._chunks.popleft()
            out = first
        else:
            out = first[:n]
            self._chunks[0] = first[n:]
        self._buffered -= len(out)
        self.bytes_read += len(out)
        self._conn._consumed(self.id, len(out))
        return out

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of what has arrived; ``b""`` at the end of the stream."""
        if n <= 0 or not await self._wait_readable():
            return b""
        return self._take(n)

    async def read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        remaining = n
        while remaining:
            if not await self._wait_readable():
                raise ReadError(f"stream {self.id} ended after {n - remaining} of {n} bytes")
            part = self._take(remaining)
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    async def read_to_end(self, limit: int) -> bytes:
        """Everything until FIN; more than ``limit`` bytes stops the stream and raises."""
        parts: list[bytes] = []
        total = 0
        while await self._wait_readable():
            part = self._take(self._buffered)
            total += len(part)
            if total > limit:
                self.stop(0)
                raise ReadError(f"stream {self.id} is longer than the {limit}-byte limit")
            parts.append(part)
        return b"".join(parts)

    def stop(self, error_code: int = 0) -> None:
        """Tell the peer we read no more; buffered data is discarded."""
        if self._stopped:
            return
        self._stopped = True
        self._chunks.clear()
        if self._buffered:
            self._conn._consumed(self.id, self._buffered)
        self._buffered = 0
        self._conn._forget(self.id, send=False)
        if not self._eof and self._conn.terminated is None and self.id in self._conn.quic.streams.recv:
            self._conn.quic.stop_stream(self.id, error_code)
            self._conn._wake()
        self._readable.notify_all()

    def __repr__(self) -> str:
        return f"EngineRecvStream(id={self.id})"
