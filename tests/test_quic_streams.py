"""Streams: send buffering and retransmission, reassembly, final size, flow control, IDs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import StreamError, StreamReset, StreamStopped
from irohpy.quic.errors import (
    FinalSizeError,
    FlowControlError,
    FrameValueError,
    QuicTransportStateError,
    StreamLimitError,
    StreamStateError,
)
from irohpy.quic.streams import RecvStream, RecvWindow, SendCredit, SendStream, StreamMap

BIG = 1 << 40


def _recv(window: int = BIG, conn: int = BIG) -> RecvStream:
    return RecvStream(0, RecvWindow(window, window), RecvWindow(conn, conn))


def _drain(s: SendStream, max_len: int, conn: SendCredit) -> list[tuple[int, memoryview, bool]]:
    out = []
    while (f := s.next_frame(max_len, conn)) is not None:
        out.append(f)
    return out


# -- send -----------------------------------------------------------------------


def test_frames_slice_the_written_bytes_without_copying() -> None:
    s = SendStream(0, BIG)
    a, b = b"a" * 2500, b"b" * 100
    s.write(a)
    s.write(b, fin=True)
    frames = _drain(s, 1000, SendCredit(BIG))
    assert [(o, len(d), f) for o, d, f in frames] == [
        (0, 1000, False),
        (1000, 1000, False),
        (2000, 500, False),  # never crosses a write boundary
        (2500, 100, True),
    ]
    assert frames[0][1].obj is a and frames[3][1].obj is b


def test_credit_limits_and_blocked_frames() -> None:
    conn = SendCredit(1500)
    s = SendStream(0, 1000)
    s.write(b"x" * 3000)
    assert [len(d) for _, d, _ in _drain(s, 1200, conn)] == [1000]
    assert s.wants_send() and not s.sendable(conn)  # blocked: the engine must not spin on it
    assert s.blocked_frame() == 1000 and s.blocked_frame() == -1
    s.on_max_stream_data(5000)
    assert [len(d) for _, d, _ in _drain(s, 1200, conn)] == [500]
    assert conn.blocked_frame() == 1500 and conn.blocked_frame() == -1
    assert not s.sendable(conn)
    conn.on_max_data(10_000)
    assert s.sendable(conn)
    assert sum(len(d) for _, d, _ in _drain(s, 1200, conn)) == 1500
    assert conn.used == 3000


def test_lost_ranges_go_first_and_acks_free_buffers() -> None:
    s = SendStream(0, BIG)
    conn = SendCredit(BIG)
    s.write(b"0123456789" * 100, fin=True)
    frames = _drain(s, 300, conn)
    assert len(frames) == 4 and frames[-1][2]
    s.on_frame_lost(300, 300, False)
    s.on_frame_lost(900, 100, True)
    s.on_frame_acked(0, 300, False)
    f = s.next_frame(200, conn)
    assert f is not None and (f[0], len(f[1]), f[2]) == (300, 200, False)
    s.on_frame_acked(300, 300, False)  # a late ACK of the original: skip the rest
    f = s.next_frame(1000, conn)
    assert f is not None and (f[0], bytes(f[1]), f[2]) == (900, b"0123456789" * 10, True)
    assert s.next_frame(1000, conn) is None
    s.on_frame_acked(600, 300, False)
    assert not s.is_done()
    s.on_frame_acked(900, 100, True)
    assert s.is_done() and s.buffered() == 0
    assert conn.used == 1000  # retransmissions do not take credit twice


def test_lost_empty_fin_is_resent() -> None:
    s = SendStream(0, BIG)
    conn = SendCredit(BIG)
    s.write(b"abc")
    _drain(s, 100, conn)
    s.write(b"", fin=True)
    f = s.next_frame(100, conn)
    assert f is not None and f[0] == 3 and len(f[1]) == 0 and f[2]
    s.on_frame_lost(3, 0, True)
    f = s.next_frame(100, conn)
    assert f is not None and f[2]


def test_write_after_fin_and_reset() -> None:
    s = SendStream(0, BIG)
    s.write(b"abc", fin=True)
    with pytest.raises(StreamError):
        s.write(b"d")
    t = SendStream(4, BIG)
    t.write(b"x" * 5000)
    _drain(t, 1000, SendCredit(2000))
    t.reset(7)
    assert t.take_reset() == (7, 2000) and t.take_reset() is None
    assert t.next_frame(1000, SendCredit(BIG)) is None
    t.on_reset_lost()
    assert t.take_reset() == (7, 2000)
    t.on_reset_acked()
    assert t.is_done()
    with pytest.raises(StreamError):
        t.write(b"more")


def test_stop_sending_answers_with_reset() -> None:
    s = SendStream(0, BIG)
    s.write(b"x" * 100)
    _drain(s, 50, SendCredit(BIG))
    s.on_stop_sending(42)
    assert s.take_reset() == (42, 100)
    with pytest.raises(StreamStopped) as e:
        s.write(b"y")
    assert e.value.error_code == 42


# -- receive ----------------------------------------------------------------------


def test_in_order_data_is_not_copied() -> None:
    r = _recv()
    a = b"hello "
    r.on_frame(0, a, False)
    r.on_frame(6, b"world", True)
    assert r.read_chunk() is a
    assert r.read() == b"world"
    assert r.is_finished()


def test_out_of_order_overlap_and_partial_reads() -> None:
    r = _recv()
    r.on_frame(5, b"56789", False)
    assert r.readable() == 0 and r.read() == b""
    r.on_frame(3, b"3456", False)
    r.on_frame(0, b"0123", False)
    assert r.readable() == 10
    assert r.read(4) == b"0123"
    assert r.read(100) == b"456789"
    r.on_frame(0, b"0123456789AB", True)
    assert r.read() == b"AB" and r.is_finished()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.randoms(use_true_random=False), st.data())
def test_reassembly_under_reordering_duplication_overlap(
    data: bytes, rnd: random.Random, draw: st.DataObject
) -> None:
    n = len(data)
    frames: list[tuple[int, int]] = []
    # Cover everything, then add random overlapping and duplicate frames.
    pos = 0
    while pos < n:
        length = rnd.randint(1, 400)
        frames.append((pos, min(n, pos + length)))
        pos += length
    for _ in range(draw.draw(st.integers(0, 20))):
        a = rnd.randint(0, n)
        frames.append((a, rnd.randint(a, n)))
    frames.append((n, n))  # an empty FIN frame
    frames += rnd.sample(frames, k=min(len(frames), 5))
    rnd.shuffle(frames)
    r = _recv()
    out = bytearray()
    for a, b in frames:
        r.on_frame(a, data[a:b], b == n and rnd.random() < 0.5 or (a, b) == (n, n))
        if rnd.random() < 0.3:
            out += r.read(rnd.randint(0, 500))
    out += r.read()
    assert bytes(out) == data
    assert r.is_finished()
    assert r.window.highest == n and r.conn.consumed == n


def test_final_size_rules() -> None:
    r = _recv()
    r.on_frame(0, b"abcd", True)
    with pytest.raises(FinalSizeError):
        r.on_frame(4, b"e", False)  # data past the final size
    with pytest.raises(FinalSizeError):
        r.on_frame(0, b"abc", True)  # a different final size
    r.on_frame(0, b"ab", False)  # a retransmission inside it is fine
    r.on_frame(0, b"abcd", True)
    with pytest.raises(FinalSizeError):
        r.on_reset(1, 5)
    s = _recv()
    s.on_frame(10, b"xyz", False)
    with pytest.raises(FinalSizeError):
        s.on_frame(0, b"ab", True)  # final size below data already received
    t = _recv()
    t.on_reset(9, 100)
    with pytest.raises(FinalSizeError):
        t.on_frame(95, b"0123456789", False)
    with pytest.raises(StreamReset) as e:
        t.read()
    assert e.value.error_code == 9


def test_flow_control_violations() -> None:
    r = _recv(window=100)
    r.on_frame(0, b"x" * 100, False)
    with pytest.raises(FlowControlError):
        r.on_frame(100, b"y", False)
    with pytest.raises(FlowControlError):
        _recv(window=100).on_reset(0, 101)
    m = StreamMap(is_server=True, conn_window=1000, stream_window=800)
    m.on_stream_frame(0, 0, b"a" * 800, False)
    with pytest.raises(FlowControlError):
        m.on_stream_frame(4, 0, b"b" * 201, False)  # connection window: 800 + 201 > 1000


def test_window_grows_with_reads_and_autotunes() -> None:
    r = RecvStream(0, RecvWindow(1000, 8000), RecvWindow(BIG, BIG))
    r.on_frame(0, b"x" * 400, False)
    r.read()
    assert not r.wants_window_update()
    r.on_frame(400, b"x" * 200, False)
    r.read()
    assert r.wants_window_update()
    # Updates come faster than every two RTTs: the window doubles each time up to the max.
    assert r.window.update(1.0, 0.1) == 1600
    assert r.window.update(1.05, 0.1) == 600 + 2000
    assert r.window.update(1.1, 0.1) == 600 + 4000
    assert r.window.update(1.15, 0.1) == 600 + 8000
    assert r.window.update(1.2, 0.1) == 600 + 8000
    # Slow reader: no growth.
    q = RecvWindow(1000, 8000)
    q.update(1.0, 0.1)
    q.update(5.0, 0.1)
    assert q.window == 1000


def test_data_read_without_credit_counts_only_once_consumed() -> None:
    m = StreamMap(is_server=True, conn_window=1000, stream_window=800)
    m.on_stream_frame(2, 0, b"a" * 600, True)
    rs = m.recv[2]
    assert rs.read(credit=False) == b"a" * 600 and rs.is_finished()
    assert rs.window.consumed == 0 and m.conn_recv.consumed == 0 and not rs.wants_window_update()
    assert m.consume(2, 100) is rs and rs.window.consumed == 100 and m.conn_recv.consumed == 100
    # A finished stream is let go; what the application reads later still frees connection credit.
    assert m.collect(2)
    assert m.consume(2, 500) is None and m.conn_recv.consumed == 600
    assert m.conn_recv.should_update()


def test_stop_returns_connection_credit_once_final_size_known() -> None:
    m = StreamMap(is_server=True, conn_window=10_000)
    m.on_stream_frame(0, 0, b"z" * 3000, False)
    rs = m.recv[0]
    rs.stop(5)
    assert rs.take_stop_sending() == 5
    assert m.conn_recv.consumed == 0
    rs.on_stop_sending_lost()
    assert rs.take_stop_sending() == 5  # resent while the final size is unknown
    m.on_stream_frame(0, 3000, b"z" * 1000, True)
    assert m.conn_recv.consumed == 4000 and rs.released
    rs.on_stop_sending_lost()
    assert rs.take_stop_sending() == -1  # the peer finished anyway: nothing to stop


# -- stream IDs -----------------------------------------------------------------


def _map(is_server: bool, **kw: int) -> StreamMap:
    m = StreamMap(is_server=is_server, **kw)
    m.set_peer_params(
        max_data=BIG,
        max_stream_data_bidi_local=1000,
        max_stream_data_bidi_remote=2000,
        max_stream_data_uni=3000,
        max_streams_bidi=2,
        max_streams_uni=1,
    )
    return m


def test_stream_ids_and_limits() -> None:
    c = _map(False)
    assert [c.open(False), c.open(False), c.open(False)] == [0, 4, -1]
    assert c.streams_blocked_frame(False) == 2 and c.streams_blocked_frame(False) == -1
    assert c.open(True) == 2 and c.open(True) == -1
    assert c.send[0].max_data == 2000 and c.send[2].max_data == 3000 and 2 not in c.recv
    s = _map(True)
    assert s.open(False) == 1 and s.open(True) == 3
    c.on_max_streams(False, 3)
    assert c.open(False) == 8
    with pytest.raises(FrameValueError):
        c.on_max_streams(True, (1 << 60) + 1)


def test_peer_streams_open_implicitly_and_are_limited() -> None:
    s = _map(True, max_bidi=3, max_uni=2)
    s.on_stream_frame(8, 0, b"hi", False)  # opens 0, 4, 8
    assert s.opened_by_peer == [0, 4, 8]
    assert s.send[4].max_data == 1000  # peer-initiated bidi: the peer's bidi_local limit
    with pytest.raises(StreamLimitError):
        s.on_stream_frame(12, 0, b"", False)
    s.on_stream_frame(6, 0, b"u", True)
    with pytest.raises(StreamLimitError):
        s.on_reset_stream(10, 0, 0)


def test_frames_on_the_wrong_stream_kind() -> None:
    s = _map(True)
    s.open(True)  # 3: our uni
    with pytest.raises(StreamStateError):
        s.on_stream_frame(3, 0, b"x", False)  # data on our send-only stream
    with pytest.raises(StreamStateError):
        s.on_stream_frame(1, 0, b"x", False)  # our bidi 1 never opened
    with pytest.raises(StreamStateError):
        s.on_max_stream_data(2, 10)  # peer's uni is receive-only for us
    with pytest.raises(StreamStateError):
        s.on_stop_sending(2, 0)
    with pytest.raises(StreamStateError):
        s.on_max_stream_data(7, 10)  # our uni 7 never opened


def test_finished_peer_streams_return_max_streams_credit() -> None:
    s = _map(True, max_bidi=8, max_uni=8)
    for i in range(8):
        sid = i * 4
        s.on_stream_frame(sid, 0, b"q", True)
        assert s.recv[sid].read() == b"q"
        ss = s.send[sid]
        ss.write(b"", fin=True)
        f = ss.next_frame(100, s.conn_send)
        assert f is not None
        ss.on_frame_acked(f[0], len(f[1]), f[2])
        assert s.collect(sid)
    assert s.max_streams_frame(False) == 16 and s.max_streams_frame(False) == -1
    # Late frames for collected streams are ignored, not errors.
    s.on_stream_frame(0, 0, b"q", True)
    s.on_stream_frame(32, 0, b"new", False)
    assert 32 in s.recv


FRAMES = st.lists(
    st.one_of(
        st.tuples(st.just("stream"), st.integers(0, 40), st.integers(0, 5000), st.integers(0, 2000), st.booleans()),
        st.tuples(st.just("reset"), st.integers(0, 40), st.integers(0, 9), st.integers(0, 9000), st.booleans()),
        st.tuples(st.just("stop"), st.integers(0, 40), st.integers(0, 9), st.integers(0, 0), st.booleans()),
        st.tuples(st.just("msd"), st.integers(0, 40), st.integers(0, 1 << 62), st.integers(0, 0), st.booleans()),
        st.tuples(st.just("ms"), st.integers(0, 1), st.integers(0, 1 << 62), st.integers(0, 0), st.booleans()),
        st.tuples(st.just("read"), st.integers(0, 40), st.integers(-1, 3000), st.integers(0, 0), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), FRAMES)
def test_random_frames_raise_only_typed_errors(is_server: bool, frames: list[tuple[str, int, int, int, bool]]) -> None:
    m = _map(is_server, max_bidi=4, max_uni=4, stream_window=4000, conn_window=12000)
    m.open(False)
    for kind, sid, a, b, flag in frames:
        try:
            if kind == "stream":
                m.on_stream_frame(sid, a, b"d" * b, flag)
            elif kind == "reset":
                m.on_reset_stream(sid, a, b)
            elif kind == "stop":
                m.on_stop_sending(sid, a)
            elif kind == "msd":
                m.on_max_stream_data(sid, a)
            elif kind == "ms":
                m.on_max_streams(bool(sid), a)
            elif sid in m.recv:
                m.recv[sid].read(a)
        except (QuicTransportStateError, StreamReset):
            continue
        assert m.conn_recv.highest <= m.conn_recv.limit
        for rs in m.recv.values():
            assert rs.window.highest <= rs.window.limit
            assert rs.final_size < 0 or rs.window.highest <= rs.final_size
