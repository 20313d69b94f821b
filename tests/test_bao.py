"""Bao-tree outboards, range encodings and the verifying decoder, checked against the blake3 package."""

from __future__ import annotations

import os
import random

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import BaoError, IrohError
from irohpy.protocols.blobs import blake3_np
from irohpy.protocols.blobs.bao import (
    BLOCK_SIZE,
    CHUNK_SIZE,
    Outboard,
    ResponseDecoder,
    check_outboard,
    compute_outboard,
    compute_outboard_from,
    encode_ranges,
    truncate_ranges,
)
from irohpy.protocols.blobs.ranges import ChunkRanges, chunks_for_size

KIB = 1024
MIB = 1024 * KIB


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def response(data: bytes, ranges: ChunkRanges, outboard: Outboard | None = None) -> bytes:
    ob = outboard or compute_outboard(data)
    body = b"".join(encode_ranges(lambda o, n: data[o : o + n], ob, ranges))
    return len(data).to_bytes(8, "little") + body


def decode(
    root: bytes, ranges: ChunkRanges, stream: bytes, step: int = 4096, window: int = 8 * MIB
) -> dict[int, bytes]:
    dec = ResponseDecoder(root, ranges, window=window)
    got: dict[int, bytes] = {}
    for i in range(0, len(stream), step):
        for leaf in dec.feed(stream[i : i + step]):
            got[leaf.offset] = leaf.data
    dec.finish()
    assert dec.done
    return got


def covered_chunks(data: bytes, got: dict[int, bytes]) -> set[int]:
    chunks = set()
    for offset, piece in got.items():
        assert data[offset : offset + len(piece)] == piece
        assert offset % CHUNK_SIZE == 0
        chunks.update(range(offset // CHUNK_SIZE, chunks_for_size(offset + len(piece))))
    return chunks


@pytest.mark.parametrize(
    "size", [0, 1, 1023, 1024, 1025, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 3 * 16 * KIB + 5, MIB + 7]
)
def test_root_matches_blake3(size: int) -> None:
    data = blob(size, size)
    ob = compute_outboard(data)
    assert ob.root == blake3.blake3(data).digest()
    assert ob.size == size
    assert len(ob.data) == 64 * (max(1, -(-size // BLOCK_SIZE)) - 1)


def test_root_matches_blake3_100mib() -> None:
    data = os.urandom(100 * MIB)
    assert compute_outboard(data).root == blake3.blake3(data).digest()


def test_subtree_cv_is_blake3_at_the_root() -> None:
    rng = random.Random(1)
    for size in [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 2049] + [rng.randrange(40_000) for _ in range(30)]:
        data = rng.randbytes(size)
        assert blake3_np.subtree_cv(data, 0, True) == blake3.blake3(data).digest()


def reference_outboard(data: bytes) -> bytes:
    """Pre-order parents over 16 KiB groups, written straight from the tree's definition."""
    groups = max(1, -(-len(data) // BLOCK_SIZE))

    def cv(start: int, count: int) -> bytes:
        piece = data[start * BLOCK_SIZE : (start + count) * BLOCK_SIZE]
        return blake3_np.subtree_cv(piece, start * 16)

    def walk(start: int, count: int) -> bytes:
        if count == 1:
            return b""
        left = 1 << ((count - 1).bit_length() - 1)
        return cv(start, left) + cv(start + left, count - left) + walk(start, left) + walk(start + left, count - left)

    return walk(0, groups)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 5, 7, 8, 9])
@pytest.mark.parametrize("tail", [0, 1, 1024, 5000])
def test_outboard_is_pre_order(groups: int, tail: int) -> None:
    data = blob((groups - 1) * BLOCK_SIZE + (tail or BLOCK_SIZE), groups)
    assert compute_outboard(data).data == reference_outboard(data)


def test_encoding_layout() -> None:
    data = blob(2 * BLOCK_SIZE + 100)
    ob = compute_outboard(data)
    body = response(data, ChunkRanges.all())[8:]
    # root pair, (group 0 | group 1) pair, then the three groups' data in order
    assert body == ob.data[0:64] + ob.data[64:128] + data
    # chunk 33 (in the last group) alone: root pair, then the last group's 1 chunk of 100 bytes
    body = response(data, ChunkRanges.from_range(32, 33))[8:]
    assert body == ob.data[0:64] + data[2 * BLOCK_SIZE :]
    # chunk 1 alone: root pair, groups pair, then the pairs inside group 0 down to chunk 1
    body = response(data, ChunkRanges.from_range(1, 2))[8:]
    g0 = data[:BLOCK_SIZE]
    inner = b""
    for size in (16, 8, 4, 2):
        half = size // 2 * KIB
        inner += blake3_np.subtree_cv(g0[:half], 0) + blake3_np.subtree_cv(g0[half : 2 * half], size // 2)
    assert body == ob.data[0:128] + inner + data[KIB : 2 * KIB]


def test_truncate_ranges_like_bao_tree() -> None:
    size = 7 * KIB
    cases = {
        (0, 6): (0, 6),
        (0, 7): (0,),
        (0, 10, 11, 12): (0,),
        (0, 6, 7, 10): (0,),
        (3, 6, 7, 10): (3,),
        (0, 5, 7, 10): (0, 5, 7),
    }
    for before, after in cases.items():
        assert truncate_ranges(ChunkRanges.from_boundaries(before), size).boundaries() == after


RANGES = [
    ChunkRanges.all(),
    ChunkRanges.empty(),
    ChunkRanges.from_range(0, 1),
    ChunkRanges.from_range(1, 3) | ChunkRanges.from_range(9, 13),
    ChunkRanges.from_range(15, 17),
    ChunkRanges.from_range(16, 48),
    ChunkRanges.from_range(20, 40) | ChunkRanges.from_range(70, 71),
    ChunkRanges.from_range(33),
    ChunkRanges.from_range(5000),
    ChunkRanges.from_range(3, 5) | ChunkRanges.from_range(10_000, 10_001),
]


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 50_000, 100_000])
@pytest.mark.parametrize("ranges", RANGES, ids=repr)
def test_encoded_ranges_verify(size: int, ranges: ChunkRanges) -> None:
    data = blob(size, size)
    root = blake3.blake3(data).digest()
    stream = response(data, ranges)
    got = decode(root, ranges, stream, step=777)
    total = chunks_for_size(size)
    wanted = {c for c in range(total) if truncate_ranges(ranges, size).contains(c)}
    have = covered_chunks(data, got)
    assert covered_chunks(data, decode(root, ranges, stream, step=5000, window=1)) == have
    assert wanted <= have
    if ranges.is_empty():
        assert have == set()


@pytest.mark.parametrize("size", [16 * KIB + 1, 5 * 16 * KIB, 37 * 16 * KIB + 5, 2 * MIB])
@pytest.mark.parametrize("ranges", RANGES, ids=repr)
def test_verified_pairs_are_the_outboards(size: int, ranges: ChunkRanges) -> None:
    """What take_pairs hands out is verified outboard, at its place: the union of all requests' pairs is the outboard."""
    data = blob(size, size)
    outboard = compute_outboard(data)
    stream = response(data, ranges, outboard)
    dec = ResponseDecoder(outboard.root, ranges, window=64 * KIB)
    pairs: dict[int, bytes] = {}
    for i in range(0, len(stream), 3000):
        dec.feed(stream[i : i + 3000])
        pairs.update(dec.take_pairs())
    dec.finish()
    for index, pair in pairs.items():
        assert outboard.data[index * 64 : (index + 1) * 64] == pair
    assert dec.take_pairs() == []
    if ranges == ChunkRanges.all():
        assert b"".join(pairs[i] for i in range(len(pairs))) == outboard.data


@pytest.mark.parametrize("size", [0, 16 * KIB, 16 * KIB + 1, 3 * 16 * KIB, 9 * 16 * KIB - 1, MIB + 7])
def test_check_outboard_takes_exactly_the_right_outboard(size: int) -> None:
    outboard = compute_outboard(blob(size, size))
    check_outboard(outboard)
    for i in range(0, len(outboard.data), 7):
        bad = bytearray(outboard.data)
        bad[i] ^= 0x10
        with pytest.raises(BaoError):
            check_outboard(Outboard(outboard.root, size, bytes(bad)))
    if outboard.data:
        with pytest.raises(BaoError):
            check_outboard(Outboard(bytes(32), size, outboard.data))
        with pytest.raises(BaoError):  # holes, as in a partial outboard
            check_outboard(Outboard(outboard.root, size, outboard.data[:-64] + bytes(64)))


def test_large_blob_ranges_verify_in_windows() -> None:
    data = blob(9 * MIB + 3)
    root = blake3.blake3(data).digest()
    ranges = ChunkRanges.from_range(100, 3000) | ChunkRanges.from_range(8000)
    stream = response(data, ranges)
    dec = ResponseDecoder(root, ranges, window=MIB)
    early = dec.feed(stream[: len(stream) // 2])
    assert early, "a full window releases leaves before the end"
    rest = dec.feed(stream[len(stream) // 2 :])
    dec.finish()
    have = covered_chunks(data, {leaf.offset: leaf.data for leaf in early + rest})
    assert set(range(100, 3000)) | set(range(8000, chunks_for_size(len(data)))) <= have


def test_wrong_root_rejected() -> None:
    data = blob(40_000)
    with pytest.raises(BaoError):
        decode(bytes(32), ChunkRanges.all(), response(data, ChunkRanges.all()))
    with pytest.raises(BaoError):
        decode(bytes(32), ChunkRanges.all(), response(b"", ChunkRanges.all()))


def test_empty_blob() -> None:
    root = blake3.blake3(b"").digest()
    stream = response(b"", ChunkRanges.all())
    assert stream == bytes(8)
    assert decode(root, ChunkRanges.all(), stream) == {}


def test_unused_bytes_are_kept_for_the_next_blob() -> None:
    data = blob(20_000)
    stream = response(data, ChunkRanges.all())
    dec = ResponseDecoder(blake3.blake3(data).digest(), ChunkRanges.all())
    dec.feed(stream + b"next")
    assert dec.done and dec.unused == b"next"


def test_truncated_response_rejected() -> None:
    data = blob(3 * BLOCK_SIZE + 10)
    root = blake3.blake3(data).digest()
    stream = response(data, ChunkRanges.all())
    for cut in [0, 7, 8, 70, 200, BLOCK_SIZE, len(stream) - 1]:
        dec = ResponseDecoder(root, ChunkRanges.all())
        for leaf in dec.feed(stream[:cut]):
            assert data[leaf.offset : leaf.offset + len(leaf.data)] == leaf.data
        assert not dec.done
        with pytest.raises(BaoError):
            dec.finish()


def flipped(stream: bytes, bit: int) -> bytes:
    b = bytearray(stream)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def assert_rejected(root: bytes, ranges: ChunkRanges, stream: bytes) -> None:
    dec = ResponseDecoder(root, ranges)
    with pytest.raises(BaoError):
        assert dec.feed(stream) == []
        dec.finish()


def test_every_bit_flip_detected_single_group() -> None:
    data = blob(1500)
    root = blake3.blake3(data).digest()
    stream = response(data, ChunkRanges.all())
    for bit in range(8 * 8, 8 * len(stream)):
        assert_rejected(root, ChunkRanges.all(), flipped(stream, bit))


def test_every_bit_flip_detected_in_parents_and_sampled_data() -> None:
    data = blob(5 * BLOCK_SIZE + 3000)
    root = blake3.blake3(data).digest()
    ranges = ChunkRanges.all()
    stream = response(data, ranges)
    parent_bytes: list[int] = []
    offset = 8
    for kind, length in _layout(len(data)):
        if kind == "parent":
            parent_bytes.extend(range(offset, offset + length))
        offset += length
    assert len(parent_bytes) == 5 * 64
    for bit in (8 * pos + i for pos in parent_bytes for i in range(8)):
        assert_rejected(root, ranges, flipped(stream, bit))
    data_bytes = sorted(set(range(8, len(stream))) - set(parent_bytes))
    rng = random.Random(7)
    for pos in rng.sample(data_bytes, 60):
        assert_rejected(root, ranges, flipped(stream, 8 * pos + rng.randrange(8)))


def _layout(size: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []

    def walk(start: int, count: int) -> None:
        if count == 1:
            out.append(("data", min(BLOCK_SIZE, size - start * BLOCK_SIZE)))
            return
        out.append(("parent", 64))
        left = 1 << ((count - 1).bit_length() - 1)
        walk(start, left)
        walk(start + left, count - left)

    walk(0, max(1, -(-size // BLOCK_SIZE)))
    return out


def test_every_bit_flip_detected_in_a_partial_group() -> None:
    data = blob(2 * BLOCK_SIZE + 2048)
    root = blake3.blake3(data).digest()
    ranges = ChunkRanges.from_range(5, 6)
    stream = response(data, ranges)
    # root pair, group pair, 4 pairs inside group 0, one chunk
    assert len(stream) == 8 + 6 * 64 + CHUNK_SIZE
    for bit in range(8 * 8, 8 * (8 + 6 * 64)):
        assert_rejected(root, ranges, flipped(stream, bit))
    for bit in random.Random(3).sample(range(8 * (8 + 6 * 64), 8 * len(stream)), 40):
        assert_rejected(root, ranges, flipped(stream, bit))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=4000),
    st.lists(st.integers(0, 40), unique=True, max_size=4).map(sorted),
    st.binary(min_size=32, max_size=32),
)
def test_decoder_fuzz_garbage(garbage: bytes, bounds: list[int], root: bytes) -> None:
    dec = ResponseDecoder(root, ChunkRanges.from_boundaries(bounds))
    try:
        dec.feed(garbage)
        dec.finish()
    except IrohError:
        pass


_FUZZ_DATA = blob(3 * BLOCK_SIZE + 777, 5)
_FUZZ_OUTBOARD = compute_outboard(_FUZZ_DATA)
_FUZZ_ROOT = _FUZZ_OUTBOARD.root


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), unique=True, max_size=4).map(sorted),
    st.integers(0, 10**9),
    st.sampled_from(["cut", "flip", "size"]),
)
def test_decoder_fuzz_mutated_responses(bounds: list[int], where: int, how: str) -> None:
    ranges = ChunkRanges.from_boundaries(bounds)
    stream = bytearray(response(_FUZZ_DATA, ranges, _FUZZ_OUTBOARD))
    if how == "cut":
        del stream[where % (len(stream) + 1) :]
    elif how == "flip":
        stream[8 + where % max(1, len(stream) - 8) if len(stream) > 8 else 0] ^= 1 << (where % 8)
    else:
        stream[0:8] = (where % (1 << 64)).to_bytes(8, "little")
    dec = ResponseDecoder(_FUZZ_ROOT, ranges)
    try:
        leaves = dec.feed(bytes(stream))
        dec.finish()
    except BaoError:
        return
    for leaf in leaves:
        assert _FUZZ_DATA[leaf.offset : leaf.offset + len(leaf.data)] == leaf.data


def test_outboard_shape_checked() -> None:
    with pytest.raises(BaoError):
        Outboard(bytes(32), 40_000, b"")
    with pytest.raises(BaoError):
        Outboard(bytes(31), 0, b"")


def test_threaded_chunk_hashing_matches_single_thread() -> None:
    data = blob(4 * blake3_np.MIN_TASK_LANES * CHUNK_SIZE, 9)
    one = blake3_np.chunk_cvs(data, 3, threads=1)
    assert (blake3_np.chunk_cvs(data, 3, threads=2) == one).all()
    assert (blake3_np.chunk_cvs(data, 3, threads=3) == one).all()


def test_scalar_and_vector_compression_agree() -> None:
    rng = np.random.default_rng(4)
    n = 3 * (blake3_np.SCALAR_LANES + 1)
    cv = rng.integers(0, 2**32, (8, n), dtype=np.uint32)
    m = rng.integers(0, 2**32, (16, n), dtype=np.uint32)
    counters = rng.integers(0, 2**63, n, dtype=np.uint64)
    lens = rng.integers(0, 65, n, dtype=np.uint32)
    flags = rng.integers(0, 16, n, dtype=np.uint32)
    vector = blake3_np.compress(cv, m, counters, lens, flags)
    for lane in range(n):
        one = slice(lane, lane + 1)
        scalar = blake3_np.compress(cv[:, one], m[:, one], counters[one], lens[one], flags[one])
        assert (scalar[:, 0] == vector[:, lane]).all()


def test_encoder_rejects_short_reads() -> None:
    data = blob(3 * BLOCK_SIZE)
    ob = compute_outboard(data)
    short = data[: 2 * BLOCK_SIZE + 100]
    for ranges in (ChunkRanges.all(), ChunkRanges.from_range(40, 41)):
        with pytest.raises(BaoError):
            b"".join(encode_ranges(lambda o, n: short[o : o + n], ob, ranges))


def test_outboard_from_file_reads(tmp_path) -> None:
    data = blob(3 * MIB + 5000, 11)
    path = tmp_path / "blob"
    path.write_bytes(data)
    with open(path, "rb") as f:
        reads: list[int] = []

        def read(offset: int, length: int) -> bytes:
            reads.append(length)
            return os.pread(f.fileno(), length, offset)

        assert compute_outboard_from(read, len(data)) == compute_outboard(data)
        assert max(reads) <= 16 * MIB
        with pytest.raises(BaoError):
            compute_outboard_from(read, len(data) + 1)


def test_many_partly_requested_groups() -> None:
    data = blob(8 * MIB + 5000, 12)
    chunks = chunks_for_size(len(data))
    ranges = ChunkRanges.from_boundaries([b for c in range(1, chunks, 3) for b in (c, c + 1)])
    stream = response(data, ranges)
    have = covered_chunks(data, decode(blake3.blake3(data).digest(), ranges, stream, step=100_000))
    assert have == set(range(1, chunks, 3))
