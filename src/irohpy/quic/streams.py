"""QUIC streams: send and receive state, flow control, and stream ID accounting (RFC 9000 §2–4).

Sans-IO and frame-shaped: the engine feeds decoded STREAM / RESET_STREAM / STOP_SENDING /
MAX_* frames in and asks for the next STREAM frame to send; acknowledgement and loss of those
frames come back by offset. Written data is kept as the caller's own ``bytes`` (sliced with
memoryviews, never copied) until acknowledged; received data is kept as the slices of the frames
that carried it, so in-order data is never copied before the application reads it.
"""

from __future__ import annotations

from bisect import bisect_right

from irohpy.errors import StreamError, StreamReset, StreamStopped
from irohpy.quic.errors import (
    FinalSizeError,
    FlowControlError,
    FrameValueError,
    QuicTransportStateError,
    StreamLimitError,
    StreamStateError,
)
from irohpy.quic.rangeset import RangeSet

MAX_STREAMS_LIMIT = 1 << 60
#: Out-of-order pieces above which a receive buffer is coalesced into fewer, copied pieces.
COALESCE_PIECES = 1024
#: Gaps a receive stream tolerates; a peer that fragments more is closed (RFC 9000 §21.9).
MAX_RECV_RANGES = 16384

EMPTY = memoryview(b"")

Data = bytes | memoryview


def stream_is_uni(stream_id: int) -> bool:
    return bool(stream_id & 2)


# -- flow control -------------------------------------------------------------


class SendCredit:
    """The peer's MAX_DATA limit on what we send, summed over all streams."""

    __slots__ = ("max_data", "used", "blocked_reported")

    def __init__(self, max_data: int) -> None:
        self.max_data = max_data
        self.used = 0
        self.blocked_reported = -1

    def available(self) -> int:
        return self.max_data - self.used

    def on_max_data(self, value: int) -> None:
        if value > self.max_data:
            self.max_data = value

    def blocked_frame(self) -> int:
        """The limit to report in a DATA_BLOCKED frame, once per limit, or -1."""
        if self.used >= self.max_data and self.blocked_reported != self.max_data:
            self.blocked_reported = self.max_data
            return self.max_data
        return -1


class RecvWindow:
    """A receive limit we advertise (MAX_DATA or MAX_STREAM_DATA), grown as the app reads.

    A new limit goes out once the application has consumed half the window. If that happens
    within two RTTs of the previous update, the window was the bottleneck, so it doubles (up to
    ``max_window``): credit grows to match the bandwidth-delay product without configuration.
    """

    __slots__ = ("limit", "window", "max_window", "consumed", "highest", "last_update", "sent")

    def __init__(self, window: int, max_window: int) -> None:
        self.limit = window
        self.window = window
        self.max_window = max_window if max_window > window else window
        self.consumed = 0
        self.highest = 0
        self.last_update = -1.0
        #: The highest limit already sent in a frame (or the transport parameter).
        self.sent = window

    def on_data(self, end: int) -> int:
        """Data up to ``end`` arrived; returns how much ``highest`` grew. Over the limit raises."""
        if end <= self.highest:
            return 0
        if end > self.limit:
            raise FlowControlError(f"data up to {end} exceeds the limit {self.limit}")
        grew = end - self.highest
        self.highest = end
        return grew

    def should_update(self) -> bool:
        return self.limit - self.consumed <= self.window // 2

    def update(self, now: float, srtt: float) -> int:
        """Compute and return the new limit to advertise."""
        if (
            self.last_update >= 0.0
            and now - self.last_update < 2.0 * srtt
            and self.window < self.max_window
        ):
            self.window = min(2 * self.window, self.max_window)
        self.last_update = now
        self.limit = self.consumed + self.window
        self.sent = self.limit
        return self.limit

    def on_update_lost(self, value: int) -> bool:
        """A frame carrying ``value`` was lost: True if that value still needs to be sent."""
        return value == self.limit


# -- send side ----------------------------------------------------------------


class SendStream:
    """The sending part of a stream: buffered data until acknowledged, FIN, reset.

    :meth:`next_frame` yields retransmissions first, then new data within the stream and
    connection credit. A frame never crosses a write boundary, so its data is a memoryview of
    the caller's ``bytes`` and nothing is copied.
    """

    __slots__ = (
        "stream_id",
        "_bufs",
        "_offs",
        "_head",
        "written",
        "sent",
        "acked",
        "retx",
        "fin_written",
        "fin_sent",
        "fin_acked",
        "max_data",
        "blocked_reported",
        "reset_code",
        "reset_pending",
        "reset_acked",
        "stop_code",
    )

    def __init__(self, stream_id: int, max_data: int) -> None:
        self.stream_id = stream_id
        self._bufs: list[memoryview] = []
        self._offs: list[int] = []
        self._head = 0
        self.written = 0
        self.sent = 0
        self.acked = RangeSet()
        self.retx = RangeSet()
        self.fin_written = False
        self.fin_sent = False
        self.fin_acked = False
        self.max_data = max_data
        self.blocked_reported = -1
        self.reset_code = -1
        self.reset_pending = False
        self.reset_acked = False
        self.stop_code = -1

    # -- application side ---------------------------------------------------

    def write(self, data: Data, fin: bool = False) -> None:
        """Queue ``data`` (kept by reference: do not mutate it) and optionally the FIN."""
        if self.stop_code >= 0:
            raise StreamStopped("peer sent STOP_SENDING", error_code=self.stop_code)
        if self.reset_code >= 0:
            raise StreamError("stream was reset")
        if self.fin_written:
            raise StreamError("write after finish")
        n = len(data)
        if n:
            self._bufs.append(data if isinstance(data, memoryview) else memoryview(data))
            self._offs.append(self.written)
            self.written += n
        if fin:
            self.fin_written = True

    def reset(self, error_code: int) -> None:
        """Abandon the stream: RESET_STREAM with final size = bytes sent so far (§3.1)."""
        if self.reset_code >= 0 or (self.fin_acked and self.all_acked()):
            return
        self.reset_code = error_code
        self.reset_pending = True
        self._bufs.clear()
        self._offs.clear()
        self._head = 0
        self.retx.clear()

    def _acked_prefix(self) -> int:
        acked = self.acked
        return acked.first_stop() if acked and acked.start == 0 else 0

    def buffered(self) -> int:
        """Bytes written and not yet acknowledged: what backpressure should look at."""
        return self.written - self._acked_prefix()

    def all_acked(self) -> bool:
        return self._acked_prefix() >= self.written

    def is_done(self) -> bool:
        """Nothing more will ever be sent or needs acknowledging."""
        if self.reset_code >= 0:
            return self.reset_acked
        return self.fin_acked and self.all_acked()

    def wants_send(self) -> bool:
        """Data, FIN or a reset is waiting to go out (credit permitting)."""
        if self.reset_code >= 0:
            return self.reset_pending
        return bool(self.retx) or self.sent < self.written or (self.fin_written and not self.fin_sent)

    def sendable(self, conn: SendCredit) -> bool:
        """:meth:`next_frame` would return a frame now (data within credit, FIN or a repair)."""
        if self.reset_code >= 0:
            return False
        if self.retx:
            return True
        if self.sent < self.written:
            return self.sent < self.max_data and conn.used < conn.max_data
        return self.fin_written and not self.fin_sent

    # -- engine side: sending ---------------------------------------------

    def _slice(self, offset: int, n: int) -> memoryview:
        i = bisect_right(self._offs, offset, self._head) - 1
        buf = self._bufs[i]
        rel = offset - self._offs[i]
        end = rel + n
        return buf[rel:end] if end < len(buf) else buf[rel:]

    def next_frame(self, max_len: int, conn: SendCredit) -> tuple[int, memoryview, bool] | None:
        """The next STREAM frame as (offset, data, fin) with ``len(data) <= max_len``, or None.

        Connection credit is taken for new bytes only; retransmissions are free.
        """
        if self.reset_code >= 0 or max_len <= 0:
            return None
        retx = self.retx
        if retx:
            start = retx.start
            n = retx.first_stop() - start
            if n > max_len:
                n = max_len
            data = self._slice(start, n)
            end = start + len(data)
            retx.remove(start, end)
            fin = self.fin_written and not self.fin_sent and end == self.written
            if fin:
                self.fin_sent = True
            return start, data, fin
        sent = self.sent
        end = self.written
        if end > self.max_data:
            end = self.max_data
        credit = sent + conn.available()
        if end > credit:
            end = credit
        if end > sent + max_len:
            end = sent + max_len
        if end > sent:
            data = self._slice(sent, end - sent)
            end = sent + len(data)
            conn.used += end - sent
            self.sent = end
            fin = self.fin_written and end == self.written
            if fin:
                self.fin_sent = True
            return sent, data, fin
        if self.fin_written and not self.fin_sent and sent == self.written:
            self.fin_sent = True
            return sent, EMPTY, True
        return None

    def blocked_frame(self) -> int:
        """The limit to report in STREAM_DATA_BLOCKED, once per limit, or -1."""
        if (
            self.reset_code < 0
            and self.written > self.sent
            and self.sent >= self.max_data
            and self.blocked_reported != self.max_data
        ):
            self.blocked_reported = self.max_data
            return self.max_data
        return -1

    def take_reset(self) -> tuple[int, int] | None:
        """A pending RESET_STREAM as (error code, final size), or None."""
        if not self.reset_pending:
            return None
        self.reset_pending = False
        return self.reset_code, self.sent

    # -- engine side: feedback --------------------------------------------

    def on_frame_acked(self, offset: int, length: int, fin: bool) -> None:
        if self.reset_code >= 0:
            return
        end = offset + length
        if length:
            self.acked.add(offset, end)
            self.retx.remove(offset, end)
        if fin:
            self.fin_acked = True
        prefix = self._acked_prefix()
        bufs = self._bufs
        offs = self._offs
        head = self._head
        n = len(bufs)
        while head < n and offs[head] + len(bufs[head]) <= prefix:
            bufs[head] = EMPTY
            head += 1
        if head > 32 and head * 2 > n:
            del bufs[:head]
            del offs[:head]
            head = 0
        self._head = head

    def on_frame_lost(self, offset: int, length: int, fin: bool) -> None:
        if self.reset_code >= 0:
            return
        end = offset + length
        for a, b in self.acked.gaps(offset, end):
            self.retx.add(a, b)
        if fin and not self.fin_acked:
            self.fin_sent = False

    def on_reset_acked(self) -> None:
        self.reset_acked = True

    def on_reset_lost(self) -> None:
        if not self.reset_acked:
            self.reset_pending = True

    def on_max_stream_data(self, value: int) -> None:
        if value > self.max_data:
            self.max_data = value

    def on_stop_sending(self, error_code: int) -> None:
        """The peer will not read: answer with RESET_STREAM carrying its code (§3.5)."""
        if self.stop_code < 0:
            self.stop_code = error_code
        if not (self.fin_acked and self.all_acked()):
            self.reset(error_code)


# -- receive side -------------------------------------------------------------


class RecvStream:
    """The receiving part of a stream: reassembly, final size, flow control, reset.

    ``received`` is the set of byte ranges that arrived; ``_pieces`` maps the start offset of
    every stored slice to it. Slices are disjoint and tile each received range, so reading is a
    chain of dict pops keyed by the read offset.
    """

    __slots__ = (
        "stream_id",
        "received",
        "_pieces",
        "read_offset",
        "final_size",
        "window",
        "conn",
        "reset_code",
        "stop_code",
        "stop_pending",
        "released",
    )

    def __init__(self, stream_id: int, window: RecvWindow, conn: RecvWindow) -> None:
        self.stream_id = stream_id
        self.received = RangeSet()
        self._pieces: dict[int, Data] = {}
        self.read_offset = 0
        self.final_size = -1
        self.window = window
        self.conn = conn
        self.reset_code = -1
        self.stop_code = -1
        self.stop_pending = False
        # Connection credit already returned for bytes the app will never read.
        self.released = False

    def _check_final_size(self, end: int, fin: bool) -> None:
        final = self.final_size
        if final >= 0:
            if end > final or (fin and end != final):
                raise FinalSizeError(f"stream {self.stream_id}: final size {final}, frame ends at {end}")
        elif fin and end < self.window.highest:
            raise FinalSizeError(
                f"stream {self.stream_id}: final size {end} below received {self.window.highest}"
            )

    def on_frame(self, offset: int, data: Data, fin: bool) -> int:
        """A STREAM frame; returns the growth of the highest offset (connection flow control)."""
        end = offset + len(data)
        self._check_final_size(end, fin)
        grew = self.window.on_data(end)
        if fin:
            self.final_size = end
        if self.reset_code >= 0 or self.stop_code >= 0:
            self._release()
            return grew
        if end <= self.read_offset or not data:
            return grew
        received = self.received
        if offset < self.read_offset:
            data = data[self.read_offset - offset :]
            offset = self.read_offset
        if received and offset == received.stop:
            self._pieces[offset] = data
            received.add(offset, end)
            return grew
        pieces = self._pieces
        for a, b in received.gaps(offset, end):
            pieces[a] = data[a - offset : b - offset] if (a != offset or b != end) else data
        received.add(offset, end)
        if len(received) > MAX_RECV_RANGES:
            raise QuicTransportStateError(f"stream {self.stream_id}: too fragmented")
        if len(pieces) > COALESCE_PIECES and len(pieces) > 4 * len(received):
            self._coalesce()
        return grew

    def _coalesce(self) -> None:
        """Join the slices of each received range into one ``bytes`` (bounds per-piece overhead)."""
        pieces = self._pieces
        out: dict[int, Data] = {}
        for start, stop in self.received:
            if stop <= self.read_offset:
                continue
            if start < self.read_offset:
                start = self.read_offset
            parts: list[Data] = []
            pos = start
            while pos < stop:
                piece = pieces[pos]
                parts.append(piece)
                pos += len(piece)
            out[start] = b"".join(parts)
        self._pieces = out

    def on_reset(self, error_code: int, final_size: int) -> int:
        """A RESET_STREAM frame; returns the growth of the highest offset."""
        self._check_final_size(final_size, True)
        grew = self.window.on_data(final_size)
        self.final_size = final_size
        if self.reset_code < 0:
            self.reset_code = error_code
        self._pieces.clear()
        self._release()
        return grew

    def stop(self, error_code: int) -> None:
        """The application will not read any more: send STOP_SENDING, drop buffered data."""
        if self.stop_code >= 0 or self.reset_code >= 0 or self.is_finished():
            return
        self.stop_code = error_code
        self.stop_pending = True
        self._pieces.clear()
        self._release()

    def _release(self) -> None:
        # Bytes the app will never read still count against connection credit until the final
        # size is known; then they are handed back in one go.
        if self.released or self.final_size < 0:
            return
        self.released = True
        self.conn.consumed += self.final_size - self.read_offset
        self.read_offset = self.final_size

    def readable(self) -> int:
        """Bytes available to read right now, in order."""
        if not self.received or self.received.start > self.read_offset:
            return 0
        return self.received.first_stop() - self.read_offset

    def is_finished(self) -> bool:
        """Everything up to the FIN was read."""
        return self.final_size >= 0 and self.read_offset >= self.final_size and self.reset_code < 0

    def read(self, max_bytes: int = -1, *, credit: bool = True) -> bytes:
        """Up to ``max_bytes`` (all available if negative) in-order bytes; ``b""`` if none yet.

        Raises :class:`StreamReset` once the peer reset the stream (the app sees the code).
        ``credit=False``: what is read is not yet consumed; :meth:`StreamMap.consume` returns
        its flow-control credit later, when the application itself has read it.
        """
        chunk = self.read_chunk(max_bytes, credit=credit)
        if chunk is None:
            return b""
        if max_bytes >= 0 and len(chunk) >= max_bytes:
            return bytes(chunk)
        parts = [chunk]
        n = len(chunk)
        while max_bytes < 0 or n < max_bytes:
            more = self.read_chunk(max_bytes - n if max_bytes >= 0 else -1, credit=credit)
            if more is None:
                break
            parts.append(more)
            n += len(more)
        return b"".join(parts)

    def read_chunk(self, max_bytes: int = -1, *, credit: bool = True) -> Data | None:
        """The next in-order slice as stored (no copy), or None when nothing is ready."""
        if self.reset_code >= 0:
            raise StreamReset("peer reset the stream", error_code=self.reset_code)
        piece = self._pieces.pop(self.read_offset, None)
        if piece is None:
            return None
        n = len(piece)
        if 0 <= max_bytes < n:
            self._pieces[self.read_offset + max_bytes] = piece[max_bytes:]
            piece = piece[:max_bytes]
            n = max_bytes
        self.read_offset += n
        if credit:
            self.window.consumed += n
            self.conn.consumed += n
        return piece

    def take_stop_sending(self) -> int:
        """A pending STOP_SENDING error code, or -1."""
        if not self.stop_pending:
            return -1
        self.stop_pending = False
        return self.stop_code

    def on_stop_sending_lost(self) -> None:
        if self.final_size < 0 and self.reset_code < 0:
            self.stop_pending = True

    def wants_window_update(self) -> bool:
        """MAX_STREAM_DATA is worth sending: the app read half the window and more may come."""
        return self.final_size < 0 and self.stop_code < 0 and self.window.should_update()


# -- stream IDs and the map ---------------------------------------------------


class StreamMap:
    """All streams of a connection: IDs, limits, implicit opening, connection flow control.

    Stream IDs encode initiator (bit 0) and direction (bit 1). Peer streams open implicitly
    when a frame names them (and every lower ID of that type opens with them); closed streams
    are forgotten and later frames for them ignored. MAX_STREAMS credit is returned as peer
    streams finish, so the peer can always have ``max_bidi``/``max_uni`` streams open at once.
    """

    __slots__ = (
        "is_server",
        "send",
        "recv",
        "conn_send",
        "conn_recv",
        "stream_window",
        "stream_max_window",
        "peer_stream_data_bidi_local",
        "peer_stream_data_bidi_remote",
        "peer_stream_data_uni",
        "local_limit",
        "local_next",
        "local_blocked_reported",
        "peer_initial_limit",
        "peer_limit",
        "peer_limit_sent",
        "peer_opened",
        "peer_closed",
        "opened_by_peer",
    )

    def __init__(
        self,
        *,
        is_server: bool,
        max_bidi: int = 100,
        max_uni: int = 100,
        stream_window: int = 1 << 20,
        stream_max_window: int = 16 << 20,
        conn_window: int = 4 << 20,
        conn_max_window: int = 64 << 20,
    ) -> None:
        self.is_server = is_server
        self.send: dict[int, SendStream] = {}
        self.recv: dict[int, RecvStream] = {}
        self.conn_send = SendCredit(0)
        self.conn_recv = RecvWindow(conn_window, conn_max_window)
        self.stream_window = stream_window
        self.stream_max_window = stream_max_window
        # The peer's transport parameters; set by set_peer_params.
        self.peer_stream_data_bidi_local = 0
        self.peer_stream_data_bidi_remote = 0
        self.peer_stream_data_uni = 0
        # Index 0 = bidi, 1 = uni. local_*: streams we open; peer_*: streams the peer opens.
        self.local_limit = [0, 0]
        self.local_next = [0, 0]
        self.local_blocked_reported = [-1, -1]
        self.peer_initial_limit = [max_bidi, max_uni]
        self.peer_limit = [max_bidi, max_uni]
        self.peer_limit_sent = [max_bidi, max_uni]
        self.peer_opened = [0, 0]
        self.peer_closed = [0, 0]
        #: Stream IDs the peer opened since the caller last cleared this list.
        self.opened_by_peer: list[int] = []

    def set_peer_params(
        self,
        *,
        max_data: int,
        max_stream_data_bidi_local: int,
        max_stream_data_bidi_remote: int,
        max_stream_data_uni: int,
        max_streams_bidi: int,
        max_streams_uni: int,
    ) -> None:
        """Apply the peer's flow-control transport parameters (from its point of view)."""
        self.conn_send.on_max_data(max_data)
        self.peer_stream_data_bidi_local = max_stream_data_bidi_local
        self.peer_stream_data_bidi_remote = max_stream_data_bidi_remote
        self.peer_stream_data_uni = max_stream_data_uni
        self.on_max_streams(False, max_streams_bidi)
        self.on_max_streams(True, max_streams_uni)

    # -- IDs ----------------------------------------------------------------

    def _is_local(self, stream_id: int) -> bool:
        return bool(stream_id & 1) == self.is_server

    def open(self, uni: bool) -> int:
        """Open a stream of ours; returns its ID, or -1 when the peer's MAX_STREAMS is reached."""
        d = 1 if uni else 0
        index = self.local_next[d]
        if index >= self.local_limit[d]:
            return -1
        self.local_next[d] = index + 1
        sid = (index << 2) | (d << 1) | (1 if self.is_server else 0)
        self._create(sid)
        return sid

    def streams_blocked_frame(self, uni: bool) -> int:
        """The limit to report in STREAMS_BLOCKED after :meth:`open` failed, once per limit."""
        d = 1 if uni else 0
        limit = self.local_limit[d]
        if self.local_next[d] >= limit and self.local_blocked_reported[d] != limit:
            self.local_blocked_reported[d] = limit
            return limit
        return -1

    def _create(self, sid: int) -> None:
        local = self._is_local(sid)
        uni = stream_is_uni(sid)
        if not uni or local:
            if uni:
                limit = self.peer_stream_data_uni
            elif local:
                limit = self.peer_stream_data_bidi_remote
            else:
                limit = self.peer_stream_data_bidi_local
            self.send[sid] = SendStream(sid, limit)
        if not uni or not local:
            window = RecvWindow(self.stream_window, self.stream_max_window)
            self.recv[sid] = RecvStream(sid, window, self.conn_recv)

    def _peer_stream(self, sid: int) -> bool:
        """Open a peer stream (and the lower ones) if new; False if it was already closed."""
        d = 1 if stream_is_uni(sid) else 0
        index = sid >> 2
        if index >= self.peer_limit[d]:
            raise StreamLimitError(f"stream {sid} beyond the limit {self.peer_limit[d]}")
        opened = self.peer_opened[d]
        if index < opened:
            return sid in self.recv or sid in self.send
        low_bits = sid & 3
        for i in range(opened, index + 1):
            new = (i << 2) | low_bits
            self._create(new)
            self.opened_by_peer.append(new)
        self.peer_opened[d] = index + 1
        return True

    def recv_stream(self, sid: int) -> RecvStream | None:
        """The stream a STREAM or RESET_STREAM frame names, or None if it is closed."""
        if self._is_local(sid):
            if stream_is_uni(sid):
                raise StreamStateError(f"receive frame for our send-only stream {sid}")
            if (sid >> 2) >= self.local_next[0]:
                raise StreamStateError(f"frame for stream {sid} we never opened")
            return self.recv.get(sid)
        if not self._peer_stream(sid):
            return None
        return self.recv.get(sid)

    def send_stream(self, sid: int) -> SendStream | None:
        """The stream a MAX_STREAM_DATA or STOP_SENDING frame names, or None if closed."""
        uni = stream_is_uni(sid)
        if self._is_local(sid):
            if (sid >> 2) >= self.local_next[1 if uni else 0]:
                raise StreamStateError(f"frame for stream {sid} we never opened")
            return self.send.get(sid)
        if uni:
            raise StreamStateError(f"send-side frame for the peer's send-only stream {sid}")
        if not self._peer_stream(sid):
            return None
        return self.send.get(sid)

    # -- frames in ------------------------------------------------------------

    def on_stream_frame(self, sid: int, offset: int, data: Data, fin: bool) -> None:
        rs = self.recv_stream(sid)
        if rs is None:
            return
        grew = rs.on_frame(offset, data, fin)
        if grew:
            self.conn_recv.on_data(self.conn_recv.highest + grew)

    def on_reset_stream(self, sid: int, error_code: int, final_size: int) -> None:
        rs = self.recv_stream(sid)
        if rs is None:
            return
        grew = rs.on_reset(error_code, final_size)
        if grew:
            self.conn_recv.on_data(self.conn_recv.highest + grew)

    def on_stop_sending(self, sid: int, error_code: int) -> None:
        ss = self.send_stream(sid)
        if ss is not None:
            ss.on_stop_sending(error_code)

    def on_max_stream_data(self, sid: int, value: int) -> None:
        ss = self.send_stream(sid)
        if ss is not None:
            ss.on_max_stream_data(value)

    def on_max_data(self, value: int) -> None:
        self.conn_send.on_max_data(value)

    def on_max_streams(self, uni: bool, value: int) -> None:
        if value > MAX_STREAMS_LIMIT:
            raise FrameValueError(f"MAX_STREAMS {value} above 2**60")
        d = 1 if uni else 0
        if value > self.local_limit[d]:
            self.local_limit[d] = value

    # -- closing and credit out ---------------------------------------------

    def collect(self, sid: int) -> bool:
        """Forget ``sid`` if both its parts are done; returns True if it was removed.

        A finished peer stream returns one unit of MAX_STREAMS credit.
        """
        ss = self.send.get(sid)
        rs = self.recv.get(sid)
        if ss is not None and not ss.is_done():
            return False
        if rs is not None and not (rs.is_finished() or rs.released):
            return False
        if ss is None and rs is None:
            return False
        self.send.pop(sid, None)
        self.recv.pop(sid, None)
        if not self._is_local(sid):
            d = 1 if stream_is_uni(sid) else 0
            self.peer_closed[d] += 1
            self.peer_limit[d] = self.peer_closed[d] + self.peer_initial_limit[d]
        return True

    def consume(self, sid: int, n: int) -> RecvStream | None:
        """The application read ``n`` bytes handed over with ``credit=False``: they count as
        consumed now. Returns the stream, or None if it is already forgotten (then only the
        connection's credit grows)."""
        self.conn_recv.consumed += n
        rs = self.recv.get(sid)
        if rs is not None:
            rs.window.consumed += n
        return rs

    def max_streams_frame(self, uni: bool) -> int:
        """A new MAX_STREAMS limit worth sending (an eighth of the initial limit freed), or -1."""
        d = 1 if uni else 0
        limit = self.peer_limit[d]
        step = self.peer_initial_limit[d] // 8
        if limit - self.peer_limit_sent[d] >= (step if step > 0 else 1):
            self.peer_limit_sent[d] = limit
            return limit
        return -1

    def max_data_frame(self, now: float, srtt: float) -> int:
        """A new MAX_DATA limit when the app has read half the connection window, or -1."""
        if self.conn_recv.should_update():
            return self.conn_recv.update(now, srtt)
        return -1
