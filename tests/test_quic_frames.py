"""irohpy.quic.frames: every frame round-trips, the packet-type table of RFC 9000 §12.4 holds,
ACK encodings agree with aioquic, extension frames have the layouts noq uses, and fuzzed
payloads raise QuicDecodeError and nothing else."""

from __future__ import annotations

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import pull_ack_frame, push_ack_frame
from aioquic.quic.rangeset import RangeSet
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic import frames as f
from irohpy.quic.buffer import Writer
from irohpy.quic.packet import PACKET_HANDSHAKE, PACKET_INITIAL, PACKET_ONE_RTT, PACKET_ZERO_RTT
from irohpy.quic.varint import VARINT_MAX

PACKET_TYPES = [PACKET_INITIAL, PACKET_ZERO_RTT, PACKET_HANDSHAKE, PACKET_ONE_RTT]

varint = st.integers(0, VARINT_MAX)
small = st.integers(0, 2**20)
path_id = st.integers(0, 2**32 - 1)
ip = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
port = st.integers(0, 65535)
cid = st.binary(min_size=1, max_size=20)
token16 = st.binary(min_size=16, max_size=16)


@st.composite
def ack_ranges(draw: st.DrawFn) -> list[tuple[int, int]]:
    largest = draw(st.integers(0, 2**40))
    ranges = []
    high = largest
    for _ in range(draw(st.integers(1, 20))):
        low = high - draw(st.integers(0, min(high, 1000)))
        ranges.append((low, high + 1))
        if low < 2:
            break
        high = low - 2 - draw(st.integers(0, min(low - 2, 1000)))
    return ranges


@st.composite
def new_connection_id(draw: st.DrawFn) -> f.NewConnectionId:
    seq = draw(varint)
    return f.NewConnectionId(seq, draw(st.integers(0, seq)), draw(cid), draw(token16), draw(st.none() | path_id))


frame_strategy = st.one_of(
    st.builds(f.Ping),
    st.builds(f.Ack, ack_ranges(), varint, st.none() | st.tuples(varint, varint, varint), st.none() | path_id),
    st.builds(f.ResetStream, varint, varint, varint),
    st.builds(f.StopSending, varint, varint),
    st.builds(f.Crypto, small, st.binary(max_size=100)),
    st.builds(f.NewToken, st.binary(min_size=1, max_size=100)),
    st.builds(f.Stream, varint, small, st.binary(max_size=200), st.booleans()),
    st.builds(f.MaxData, varint),
    st.builds(f.MaxStreamData, varint, varint),
    st.builds(f.MaxStreams, st.booleans(), st.integers(0, 2**60)),
    st.builds(f.DataBlocked, varint),
    st.builds(f.StreamDataBlocked, varint, varint),
    st.builds(f.StreamsBlocked, st.booleans(), st.integers(0, 2**60)),
    new_connection_id(),
    st.builds(f.RetireConnectionId, varint, st.none() | path_id),
    st.builds(f.PathChallenge, st.binary(min_size=8, max_size=8)),
    st.builds(f.PathResponse, st.binary(min_size=8, max_size=8)),
    st.builds(f.ConnectionClose, varint, st.binary(max_size=50), varint, st.just(False)),
    st.builds(f.ConnectionClose, varint, st.binary(max_size=50), st.just(0), st.just(True)),
    st.builds(f.HandshakeDone),
    st.builds(f.Datagram, st.binary(max_size=200)),
    st.builds(f.AckFrequency, varint, varint, varint, varint),
    st.builds(f.ImmediateAck),
    st.builds(f.ObservedAddress, varint, ip, port),
    st.builds(f.AddAddress, varint, ip, port),
    st.builds(f.ReachOut, varint, ip, port),
    st.builds(f.RemoveAddress, varint),
    st.builds(f.PathAbandon, path_id, varint),
    st.builds(f.PathStatus, path_id, varint, st.booleans()),
    st.builds(f.MaxPathId, path_id),
    st.builds(f.PathsBlocked, path_id),
    st.builds(f.PathCidsBlocked, path_id, varint),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(frame_strategy, min_size=1, max_size=8))
def test_frames_round_trip_in_one_rtt(frames: list[f.Frame]) -> None:
    assert f.decode_frames(f.encode_frames(frames), PACKET_ONE_RTT) == frames


def test_padding_runs_collapse_and_stream_without_length_runs_to_the_end() -> None:
    w = Writer(100)
    w.push_uint8(f.FRAME_PING)
    w.push_zeros(10)
    f.push_stream_header(w, 4, 0, 0, fin=True, with_length=False)
    w.push_bytes(b"to the end")
    assert f.decode_frames(w.getvalue(), PACKET_ONE_RTT) == [f.Ping(), f.Padding(10), f.Stream(4, 0, b"to the end", True)]
    assert f.stream_header_size(4, 0, 0, with_length=False) == 2
    assert f.stream_header_size(64, 2**20, 1000) == 1 + 2 + 4 + 2


# RFC 9000 Table 3 (and RFC 9221, the ack-frequency, multipath, QAD and NAT-traversal drafts).
ALLOWED = {
    "IZHO": [f.Padding(3), f.Ping(), f.ConnectionClose(1, b"x", 6)],
    "IHO": [f.Ack([(0, 4)]), f.Crypto(0, b"hi")],
    "ZO": [
        f.ResetStream(0, 1, 2), f.StopSending(0, 1), f.Stream(0, 0, b"x"), f.MaxData(5), f.MaxStreamData(0, 5),
        f.MaxStreams(True, 3), f.DataBlocked(1), f.StreamDataBlocked(0, 1), f.StreamsBlocked(False, 2),
        f.NewConnectionId(1, 0, b"abcd", bytes(16)), f.PathChallenge(bytes(8)),
        f.ConnectionClose(1, b"", 0, True), f.Datagram(b"d"), f.ImmediateAck(), f.AckFrequency(0, 1, 2, 3),
    ],
    "O": [
        f.NewToken(b"t"), f.RetireConnectionId(1), f.PathResponse(bytes(8)), f.HandshakeDone(),
        f.Ack([(0, 2)], path_id=1), f.NewConnectionId(1, 0, b"abcd", bytes(16), path_id=1),
        f.RetireConnectionId(1, path_id=1), f.PathAbandon(1, 0), f.PathStatus(1, 1), f.PathStatus(1, 1, False),
        f.MaxPathId(3), f.PathsBlocked(3), f.PathCidsBlocked(1, 2), f.ObservedAddress(0, bytes(4), 1),
        f.AddAddress(0, bytes(16), 1), f.ReachOut(1, bytes(4), 2), f.RemoveAddress(0),
    ],
}
LETTER = {PACKET_INITIAL: "I", PACKET_ZERO_RTT: "Z", PACKET_HANDSHAKE: "H", PACKET_ONE_RTT: "O"}


@pytest.mark.parametrize("packet_type", PACKET_TYPES)
def test_packet_type_rules(packet_type: int) -> None:
    for letters, frames in ALLOWED.items():
        for frame in frames:
            payload = f.encode_frames([frame])
            if LETTER[packet_type] in letters:
                assert f.decode_frames(payload, packet_type) == [frame]
            else:
                with pytest.raises(QuicDecodeError) as info:
                    f.decode_frames(payload, packet_type)
                assert info.value.error_code == QuicError.PROTOCOL_VIOLATION, frame
                assert info.value.frame_type != 0 or isinstance(frame, f.Padding)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", QuicError.PROTOCOL_VIOLATION),  # a packet needs a frame
        (b"\x21", QuicError.FRAME_ENCODING_ERROR),  # unknown type
        (b"\x40\x21", QuicError.FRAME_ENCODING_ERROR),  # unknown type, two-byte encoding
        (b"\x02\x05\x00\x00\x06", QuicError.FRAME_ENCODING_ERROR),  # first ACK range below zero
        (b"\x02\x05\x00\x01\x00\x04\x00", QuicError.FRAME_ENCODING_ERROR),  # later range below zero
        (b"\x07\x00", QuicError.FRAME_ENCODING_ERROR),  # empty NEW_TOKEN
        (b"\x18\x01\x02\x04abcd" + bytes(16), QuicError.FRAME_ENCODING_ERROR),  # retire > sequence
        (b"\x18\x01\x00\x00" + bytes(16), QuicError.FRAME_ENCODING_ERROR),  # zero-length CID
        (b"\x18\x01\x00\x15" + bytes(37), QuicError.FRAME_ENCODING_ERROR),  # 21-byte CID
        (b"\x12\xd0\x00\x00\x00\x00\x00\x00\x01", QuicError.FRAME_ENCODING_ERROR),  # MAX_STREAMS > 2^60
        (b"\x0e\x00\xff\xff\xff\xff\xff\xff\xff\xff\x01x", QuicError.FRAME_ENCODING_ERROR),  # offset + len > 2^62-1
        (b"\x1a\x01\x02", QuicError.FRAME_ENCODING_ERROR),  # truncated PATH_CHALLENGE
        (b"\x80\x00\x3e\x7a\xc0\x00\x00\x01\x00\x00\x00\x00", QuicError.FRAME_ENCODING_ERROR),  # path id > 2^32-1
        (b"\x0a\x00\x05ab", QuicError.FRAME_ENCODING_ERROR),  # STREAM length beyond payload
    ],
)
def test_malformed_frames(payload: bytes, code: int) -> None:
    with pytest.raises(QuicDecodeError) as info:
        f.decode_frames(payload, PACKET_ONE_RTT)
    assert info.value.error_code == code


def test_extension_codepoints_and_layouts() -> None:
    """Byte layouts of iroh-wire.md §3.4 (noq's frame.rs)."""
    assert f.encode_frames([f.ObservedAddress(1, bytes([10, 0, 0, 1]), 4433)]).hex() == "809f81a6010a0000011151"
    assert f.encode_frames([f.AddAddress(2, bytes(16), 1)]).hex() == "803d7f9102" + "00" * 16 + "0001"
    assert f.encode_frames([f.ReachOut(3, bytes([1, 2, 3, 4]), 2)]).hex() == "803d7f92030102030400" + "02"
    assert f.encode_frames([f.RemoveAddress(4)]).hex() == "803d7f9404"
    assert f.encode_frames([f.PathAbandon(1, 2)]).hex() == "7e750102"
    assert f.encode_frames([f.PathStatus(1, 5, False)]).hex() == "7e760105"
    assert f.encode_frames([f.PathStatus(1, 5, True)]).hex() == "7e770105"
    assert f.encode_frames([f.MaxPathId(7)]).hex() == "7e7a07"
    assert f.encode_frames([f.Ack([(3, 6)], 1, None, 2)]).hex() == "3e0205010002"
    assert f.encode_frames([f.AckFrequency(1, 2, 3, 4)]).hex() == "40af01020304"
    assert f.encode_frames([f.ImmediateAck()]).hex() == "1f"
    assert f.encode_frames([f.Datagram(b"ab")]).hex() == "31026162"


@settings(max_examples=300, deadline=None)
@given(ack_ranges(), st.integers(0, 2**20))
def test_ack_agrees_with_aioquic(ranges: list[tuple[int, int]], delay: int) -> None:
    rangeset = RangeSet()
    for start, stop in ranges:
        rangeset.add(start, stop)
    buf = Buffer(capacity=4096)
    push_ack_frame(buf, rangeset, delay, 4096)
    theirs = b"\x02" + buf.data
    w = Writer(4096)
    f.push_ack(w, ranges, delay)
    assert w.getvalue() == theirs
    [ack] = f.decode_frames(theirs, PACKET_ONE_RTT)
    assert isinstance(ack, f.Ack) and ack.ranges == ranges and ack.delay == delay
    parsed, parsed_delay = pull_ack_frame(Buffer(data=w.getvalue()[1:]))
    assert [(r.start, r.stop) for r in reversed(list(parsed))] == ranges and parsed_delay == delay


@settings(max_examples=300, deadline=None)
@given(ack_ranges(), st.integers(0, 2**20), st.none() | st.tuples(*[st.integers(0, 2**40)] * 3),
       st.none() | st.integers(0, 2**32 - 1))
def test_the_fast_ack_parse_agrees_with_decode_frame(
    ranges: list[tuple[int, int]], delay: int, ecn: tuple[int, int, int] | None, path_id: int | None
) -> None:
    w = Writer(4096)
    w.push_uint8(0x01)  # a PING before it: the parse starts where it is told
    f.push_ack(w, ranges, delay, ecn, path_id)
    payload = w.getvalue() + b"\x01"
    fast, end = f.pull_ack_frame(payload, 1)
    slow, slow_end = f.decode_frame(payload, 1, PACKET_ONE_RTT)
    assert fast == slow and end == slow_end == len(payload) - 1


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([0x02, 0x03, 0x3E, 0x3F]), st.binary(max_size=60))
def test_fuzz_fast_ack_parse_only_typed_errors(frame_type: int, body: bytes) -> None:
    try:
        frame, end = f.pull_ack_frame(bytes((frame_type,)) + body, 0)
    except QuicDecodeError as exc:
        assert exc.frame_type == frame_type
        return
    assert isinstance(frame, f.Ack) and 1 < end <= len(body) + 1


def test_ack_without_ranges_is_refused() -> None:
    with pytest.raises(QuicError):
        f.push_ack(Writer(10), [], 0)


def test_ack_eliciting() -> None:
    assert not f.is_ack_eliciting(f.Ack([(0, 1)]))
    assert not f.is_ack_eliciting(f.Padding(1))
    assert not f.is_ack_eliciting(f.ConnectionClose(0))
    assert f.is_ack_eliciting(f.Ping()) and f.is_ack_eliciting(f.Stream(0, 0, b""))


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.sampled_from(PACKET_TYPES))
def test_fuzz_frames_only_typed_errors(payload: bytes, packet_type: int) -> None:
    try:
        frames = f.decode_frames(payload, packet_type)
    except QuicDecodeError:
        return
    again = f.decode_frames(f.encode_frames(frames), packet_type)
    assert len(again) <= len(frames) + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_strategy, min_size=1, max_size=4), st.data())
def test_fuzz_mutated_frames_only_typed_errors(frames: list[f.Frame], data: st.DataObject) -> None:
    payload = bytearray(f.encode_frames(frames))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        f.decode_frames(bytes(payload[:cut]), PACKET_ONE_RTT)
    except QuicDecodeError:
        pass
