"""The iroh-blobs request codec against iroh-wire.md §11.1 and iroh-blobs' own hex dumps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irohpy.base.postcard import Reader, Writer
from irohpy.errors import BlobRequestError
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.wire import (
    MAX_MESSAGE_SIZE,
    ChunkRangesSeq,
    GetManyRequest,
    GetRequest,
    decode_range_spec,
    decode_request,
    encode_range_spec,
    size_header,
)

H = bytes(range(32))
LAST_CHUNK = ChunkRanges.from_range((1 << 64) - 1, None)


def spec_bytes(ranges: ChunkRanges) -> str:
    writer = Writer()
    encode_range_spec(writer, ranges)
    return writer.finish().hex()


def seq_bytes(seq: ChunkRangesSeq) -> str:
    writer = Writer()
    seq.encode(writer)
    return writer.finish().hex()


def test_spec_table() -> None:
    assert GetRequest.blob(H).to_bytes().hex() == "00" + H.hex() + "020001000100"
    assert GetRequest.all(H).to_bytes().hex() == "00" + H.hex() + "01000100"
    spec = ChunkRanges.from_range(1, 3) | ChunkRanges.from_range(9, 13)
    assert spec_bytes(spec) == "0401020604"


@pytest.mark.parametrize(
    ("ranges", "hex_"),
    [
        (ChunkRanges.empty(), "00"),
        (ChunkRanges.all(), "0100"),
        (ChunkRanges.from_range(64, None), "0140"),
        (ChunkRanges.from_range(10000, None), "01904e"),
        (ChunkRanges.from_range(0, 64), "020040"),
        (LAST_CHUNK, "01ffffffffffffffffff01"),
    ],
)
def test_range_spec_wire_format(ranges: ChunkRanges, hex_: str) -> None:
    """iroh-blobs `range_spec_wire_format` (plus the verified-size spec)."""
    assert spec_bytes(ranges) == hex_
    reader = Reader(bytes.fromhex(hex_))
    assert decode_range_spec(reader) == ranges
    reader.finish()


def test_range_spec_seq_wire_format() -> None:
    """iroh-blobs `range_spec_seq_wire_format`."""
    assert seq_bytes(ChunkRangesSeq.empty()) == "00"
    assert seq_bytes(ChunkRangesSeq.all()) == "01000100"
    two = ChunkRangesSeq.from_ranges([ChunkRanges.from_range(1, 3), ChunkRanges.from_range(7, 13)])
    assert seq_bytes(two) == "03" "00020102" "01020706" "0100"
    infinite = ChunkRangesSeq.from_ranges_infinite(
        [ChunkRanges.empty()] * 3 + [ChunkRanges.from_range(7, None), ChunkRanges.all()]
    )
    assert seq_bytes(infinite) == "02" "030107" "010100"
    for seq in (two, infinite):
        reader = Reader(bytes.fromhex(seq_bytes(seq)))
        assert ChunkRangesSeq.decode(reader) == seq


def test_seq_lookup_and_iteration() -> None:
    seq = ChunkRangesSeq.from_ranges([ChunkRanges.empty(), ChunkRanges.all(), ChunkRanges.all(), LAST_CHUNK])
    assert seq[0].is_empty() and seq[1] == seq[2] == ChunkRanges.all() and seq[3] == LAST_CHUNK
    assert seq[4].is_empty() and seq[10**6].is_empty()
    assert [i for i, _ in seq.non_empty(100)] == [1, 2, 3]
    assert [i for i, _ in seq.non_empty(2)] == [1]
    assert not seq.is_infinite
    assert [i for i, _ in ChunkRangesSeq.all().non_empty(4)] == [0, 1, 2, 3]


def test_get_many_roundtrip() -> None:
    request = GetManyRequest.with_ranges([(H, ChunkRanges.all()), (bytes(32), ChunkRanges.from_range(16, 32))])
    data = request.to_bytes()
    assert data[:2] == b"\x09\x02"
    assert decode_request(data) == request


def test_size_header() -> None:
    assert size_header(1025) == bytes.fromhex("0104000000000000")


@pytest.mark.parametrize(
    ("hex_", "what"),
    [
        ("", "empty"),
        ("01" + H.hex() + "0100", "observe is unsupported"),
        ("08" + H.hex() + "020001000100", "push is unsupported"),
        ("02", "reserved slot"),
        ("ff01", "unknown type"),
        ("00" + H.hex()[:10], "truncated hash"),
        ("00" + H.hex() + "02000100", "truncated ranges"),
        ("00" + H.hex() + "020001000100" + "00", "trailing byte"),
        ("00" + H.hex() + "01" + "00" + "020500", "zero-width span after the first boundary"),
        ("00" + H.hex() + "02" + "000100" + "000100", "repeated offset"),
        ("00" + H.hex() + "01" + "00" + "02ffffffffffffffffff01" + "01", "boundary overflows u64"),
        ("00" + H.hex() + "02" + "ffffffffffffffffff01" + "00" + "01" + "00", "offset overflows u64"),
        ("00" + H.hex() + "ffffffff0f", "absurd entry count"),
        ("09" + "ffffffff0f", "absurd hash count"),
        ("00" + H.hex() + "01" + "00" + "01" + "80", "unterminated varint"),
    ],
)
def test_malformed_requests(hex_: str, what: str) -> None:
    with pytest.raises(BlobRequestError):
        decode_request(bytes.fromhex(hex_))


def test_oversized_request() -> None:
    with pytest.raises(BlobRequestError):
        decode_request(b"\x00" * (MAX_MESSAGE_SIZE + 1))


boundaries = st.lists(st.integers(0, (1 << 64) - 1), max_size=12, unique=True).map(sorted)


@given(boundaries)
def test_range_spec_roundtrip(bounds: list[int]) -> None:
    ranges = ChunkRanges.from_boundaries(bounds)
    writer = Writer()
    encode_range_spec(writer, ranges)
    reader = Reader(writer.finish())
    assert decode_range_spec(reader) == ranges
    reader.finish()


@given(st.lists(boundaries, max_size=6), st.binary(min_size=32, max_size=32))
def test_request_roundtrip(specs: list[list[int]], digest: bytes) -> None:
    seq = ChunkRangesSeq.from_ranges(ChunkRanges.from_boundaries(b) for b in specs)
    request = GetRequest(digest, seq)
    data = request.to_bytes()
    assert decode_request(data) == request
    assert decode_request(data).to_bytes() == data


@given(st.binary(max_size=300))
def test_fuzz_decode_request(data: bytes) -> None:
    try:
        request = decode_request(data)
    except BlobRequestError:
        return
    assert decode_request(request.to_bytes()) == request


@given(st.binary(max_size=80))
def test_fuzz_get_prefix(tail: bytes) -> None:
    """Garbage after a valid Get header reaches the range decoder, not just the type check."""
    try:
        decode_request(b"\x00" + H + tail)
    except BlobRequestError:
        pass
