"""QUIC streams as the application sees them.

Writes wait while too much data is unacknowledged and reads grant credit as
they consume, so a slow reader slows the writer and memory stays bounded on
both ends.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from irohpy.base.notify import Notify
from irohpy.errors import ReadError, StreamError, StreamReset, StreamStopped

if TYPE_CHECKING:
    from irohpy.endpoint.connection import Connection

# Unacknowledged bytes a stream may hold before write() waits.
SEND_HIGH_WATER = 2 * 1024 * 1024
# Bytes a stream may hold beyond the peer's flow-control credit before write() waits, so a
# peer that never reads pins at most this plus one write of our memory per stream.
SEND_AHEAD = 64 * 1024


class SendStream:
    """The sending half of a stream."""

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self.id = stream_id
        self._finished = False
        self._reset_code: int | None = None
        self._stopped_code: int | None = None
        self._space = Notify()

    def _must_wait(self) -> bool:
        """Too much unacknowledged, or too much queued beyond what the peer lets us send."""
        stream = self._conn._quic._streams.get(self.id)
        if stream is None:
            return False
        sender = stream.sender
        return (
            sender._buffer_stop - sender._buffer_start >= SEND_HIGH_WATER
            or sender._buffer_stop - stream.max_stream_data_remote >= SEND_AHEAD
        )

    def _unacked(self) -> int:
        stream = self._conn._quic._streams.get(self.id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def _check_writable(self) -> None:
        if self._stopped_code is not None:
            raise StreamStopped(f"stream {self.id} stopped by peer (code {self._stopped_code})",
                                error_code=self._stopped_code)
        if self._reset_code is not None or self._finished:
            raise StreamError(f"stream {self.id} is already finished or reset")
        self._conn._check_open()

    async def ready(self) -> None:
        """Wait until :meth:`write` would not wait: lets a writer produce data only when it can go out."""
        self._check_writable()
        while self._must_wait():
            await self._wait_progress()
            self._check_writable()

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data``; waits first while :data:`SEND_HIGH_WATER` bytes are unacknowledged.

        A writer may run up to that far ahead of a reader that is itself busy writing, so
        echo-style peers do not deadlock; a producer that must not run ahead of the peer's
        credit awaits :meth:`ready` first.
        """
        self._check_writable()
        while self._unacked() >= SEND_HIGH_WATER:
            await self._wait_progress()
            self._check_writable()
        if data:
            # aioquic copies into its own send buffer, so a view needs no copy first.
            self._conn._quic.send_stream_data(self.id, data)  # type: ignore[arg-type]
            self._conn._wake()
        return len(data)

    async def write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        chunk = 256 * 1024
        for start in range(0, len(view), chunk):
            await self.write(view[start : start + chunk])

    async def finish(self) -> None:
        """Send FIN: the peer's reads end after the data written so far."""
        self._check_writable()
        self._finished = True
        self._conn._quic.send_stream_data(self.id, b"", end_stream=True)
        self._conn._wake()

    def reset(self, error_code: int = 0) -> None:
        """Abandon the stream: unsent data is dropped and the peer sees the code."""
        if self._reset_code is not None or self._conn._terminated:
            return
        self._reset_code = error_code
        try:
            self._conn._quic.reset_stream(self.id, error_code)
        except ValueError:
            pass  # aioquic already discarded the stream: both sides are done with it
        else:
            self._conn._wake()
        self._space.notify_all()

    async def stopped(self) -> int | None:
        """Wait until the peer stops the stream (its code) or has all data (None)."""
        while True:
            if self._stopped_code is not None:
                return self._stopped_code
            if self._finished and self._unacked() == 0 and self._all_acked():
                return None
            if self._conn._terminated:
                raise self._conn._close_error()
            await self._wait_progress()

    async def _wait_progress(self) -> None:
        self._conn._waiting_send.add(self)
        await self._space.wait()

    def _all_acked(self) -> bool:
        stream = self._conn._quic._streams.get(self.id)
        return stream is None or stream.sender.is_finished

    def _on_stop_sending(self, error_code: int) -> None:
        self._stopped_code = error_code
        self._space.notify_all()

    def _on_progress(self) -> None:
        self._space.notify_all()

    def __repr__(self) -> str:
        return f"SendStream(id={self.id})"


class RecvStream:
    """The receiving half of a stream."""

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self.id = stream_id
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._reset_code: int | None = None
        self._stopped = False
        self._readable = Notify()
        self.bytes_read = 0

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end_stream:
            self._eof = True
        self._readable.notify_all()

    def _on_reset(self, error_code: int) -> None:
        self._reset_code = error_code
        self._readable.notify_all()

    def _on_conn_closed(self) -> None:
        self._readable.notify_all()

    async def _wait_readable(self) -> bool:
        """Wait for data; False at a clean end of stream."""
        while not self._chunks:
            if self._reset_code is not None:
                raise StreamReset(f"stream {self.id} reset by peer (code {self._reset_code})",
                                  error_code=self._reset_code)
            if self._eof:
                return False
            if self._stopped:
                raise ReadError(f"stream {self.id} was stopped locally")
            if self._conn._terminated:
                raise self._conn._close_error()
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
        if n <= 0:
            return b""
        if not await self._wait_readable():
            return b""
        if len(self._chunks[0]) >= n or len(self._chunks) == 1:
            return self._take(n)
        parts = []
        remaining = n
        while remaining and self._chunks:
            part = self._take(remaining)
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

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
        """Everything until FIN; more than ``limit`` bytes is an error."""
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
        if self._stopped or self._eof or self._conn._terminated:
            self._stopped = True
            return
        self._stopped = True
        self._chunks.clear()
        self._buffered = 0
        try:
            self._conn._quic.stop_stream(self.id, error_code)
        except ValueError:
            pass  # aioquic already discarded the stream (the peer reset it and our FIN was acked)
        else:
            self._conn._wake()
        self._readable.notify_all()

    def received_reset(self) -> int | None:
        return self._reset_code

    def __repr__(self) -> str:
        return f"RecvStream(id={self.id})"
