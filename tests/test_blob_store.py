"""Blob stores: import, read, export, partial downloads through the real bao codec, tags and gc."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import BaoError, BlobsError, DecodeError
from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.ranges import GROUP_CHUNKS, GROUP_SIZE, ChunkRanges
from irohpy.protocols.blobs.store import BlobNotFound, FsStore, MemStore, Store, Tag
from irohpy.protocols.blobs.store.bitfield import ChunkBits
from irohpy.protocols.blobs.store.tags import decode_tags, encode_tags
from irohpy.protocols.blobs.ticket import BlobFormat

SIZES = [0, 1, 1023, 1024, 1025, GROUP_SIZE - 1, GROUP_SIZE, GROUP_SIZE + 1, (1 << 20) + 7]


@pytest.fixture(params=["mem", "fs"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Store]:
    """A factory of empty stores of one kind; each name is its own store (own directory)."""
    def make(name: str) -> Store:
        return MemStore() if request.param == "mem" else FsStore(tmp_path / name)

    return make


@pytest.fixture
async def stores(make_store: Callable[[str], Store]) -> AsyncIterator[tuple[Store, Store]]:
    """A source store and an empty destination store of the same kind."""
    src, dst = make_store("src"), make_store("dst")
    yield src, dst
    await src.close()
    await dst.close()


async def transfer(src: Store, dst: Store, hash: bytes, ranges: ChunkRanges) -> bool:
    """Encode ``ranges`` from ``src`` and feed them through a verifying decoder into ``dst``."""
    read, outboard = await src.reader(hash)
    response = outboard.size.to_bytes(8, "little") + b"".join(bao.encode_ranges(read, outboard, ranges))
    decoder = bao.ResponseDecoder(hash, ranges)
    complete = False
    for i in range(0, len(response), 50_000):
        leaves = decoder.feed(response[i : i + 50_000])
        if decoder.size is not None and i == 0:
            complete = await dst.begin_partial(hash, decoder.size)
        complete = await dst.write_leaves(hash, leaves) or complete
    decoder.finish()
    return complete


def groups(*spans: tuple[int, int | None]) -> ChunkRanges:
    """Chunk ranges from spans of chunk groups."""
    return ChunkRanges.from_intervals(
        (a * GROUP_CHUNKS, None if b is None else b * GROUP_CHUNKS) for a, b in spans
    )


# -- bitfield and tag codecs --------------------------------------------------


def test_bitfield_reports_whole_missing_groups_open_ended_until_the_size_is_verified() -> None:
    bits = ChunkBits.new(3 * GROUP_SIZE + 10)
    assert len(bits.bits) == 3 * GROUP_CHUNKS + 1
    assert bits.missing() == ChunkRanges.all()
    bits.mark(2 * GROUP_SIZE - 1, GROUP_SIZE + 1)
    assert bits.missing() == groups((0, 2), (3, None))
    bits.mark(3 * GROUP_SIZE, 10)
    assert bits.size_verified
    assert bits.missing() == groups((0, 2))
    # Group 1 arrives in two pieces that meet mid-group.
    bits.mark(0, GROUP_SIZE + 5 * 1024)
    assert bits.missing() == groups((1, 2))
    bits.mark(GROUP_SIZE + 5 * 1024, 2000)
    assert bits.missing() == groups((1, 2))
    bits.mark(GROUP_SIZE + 6 * 1024, 10 * 1024)
    assert bits.complete and bits.missing().is_empty()
    with pytest.raises(ValueError):
        bits.mark(3 * GROUP_SIZE, 11)


def test_bitfield_resize_keeps_chunks_whole_under_both_sizes_but_never_the_new_last() -> None:
    bits = ChunkBits.new(5 * GROUP_SIZE)
    bits.mark(0, 5 * GROUP_SIZE)
    assert bits.resized(3 * GROUP_SIZE).bits.tolist() == [True] * (3 * GROUP_CHUNKS - 1) + [False]
    assert bits.resized(2 * GROUP_SIZE + 5).bits.tolist() == [True] * (2 * GROUP_CHUNKS) + [False]
    assert bits.resized(9 * GROUP_SIZE).bits.tolist() == [True] * (5 * GROUP_CHUNKS) + [False] * (4 * GROUP_CHUNKS)


@given(st.integers(0, 1 << 28), st.data())
def test_bitfield_state_roundtrips(size: int, data: st.DataObject) -> None:
    bits = ChunkBits.new(size)
    picks = data.draw(st.lists(st.integers(0, len(bits.bits) - 1), max_size=20))
    bits.bits[picks] = True
    again = ChunkBits.from_bytes(bits.to_bytes())
    assert again.size == size and again.bits.tolist() == bits.bits.tolist()


@given(st.binary(max_size=64))
def test_bitfield_state_rejects_garbage_with_decode_error(data: bytes) -> None:
    for blob in (data, b"IPYPART1" + data):
        try:
            ChunkBits.from_bytes(blob)
        except DecodeError:
            pass


def test_bitfield_state_rejects_padding_bits_and_huge_sizes() -> None:
    with pytest.raises(DecodeError):
        ChunkBits.from_bytes(b"IPYPART1" + (10).to_bytes(8, "little") + b"\x01")
    with pytest.raises(DecodeError):
        ChunkBits.from_bytes(b"IPYPART1" + (1 << 63).to_bytes(8, "little"))


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_tags_file_rejects_garbage_with_decode_error(data: bytes) -> None:
    try:
        decode_tags(data)
    except DecodeError:
        pass


def test_tags_file_roundtrips() -> None:
    tags = {"a": Tag(b"\x01" * 32), "coll": Tag(b"\x02" * 32, BlobFormat.HASH_SEQ)}
    assert decode_tags(encode_tags(tags)) == tags
    with pytest.raises(DecodeError):
        decode_tags(b'{"a": {"hash": "00", "format": "raw"}}')


# -- complete blobs -----------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_import_read_and_serve(stores: tuple[Store, Store], size: int) -> None:
    src, _ = stores
    data = random.Random(size).randbytes(size)
    hash = await src.import_bytes(data)
    assert hash == blake3.blake3(data).digest()
    assert await src.has(hash) == "complete"
    assert await src.size(hash) == size
    assert await src.get_bytes(hash) == data
    assert await src.missing_ranges(hash) == ChunkRanges.empty()
    read, outboard = await src.reader(hash)
    assert outboard == bao.compute_outboard(data)
    assert read(0, size) == data
    assert await src.import_bytes(data) == hash


async def test_unknown_blobs(stores: tuple[Store, Store]) -> None:
    src, _ = stores
    unknown = b"\x07" * 32
    assert await src.has(unknown) is None
    assert await src.size(unknown) is None
    assert await src.missing_ranges(unknown) == ChunkRanges.all()
    for call in (src.get_bytes, src.reader):
        with pytest.raises(BlobNotFound):
            await call(unknown)
    with pytest.raises(BlobNotFound):
        await src.write_leaves(unknown, [])
    with pytest.raises(ValueError):
        await src.has(b"short")


async def test_export_refuses_to_overwrite(stores: tuple[Store, Store], tmp_path: Path) -> None:
    src, _ = stores
    hash = await src.import_bytes(b"hello")
    target = tmp_path / "out" / "hello.txt"
    assert await src.export(hash, target) == target
    assert target.read_bytes() == b"hello"
    other = await src.import_bytes(b"other")
    with pytest.raises(FileExistsError):
        await src.export(other, target)
    assert target.read_bytes() == b"hello"
    await src.export(other, target, overwrite=True)
    assert target.read_bytes() == b"other"
    assert [p.name for p in target.parent.iterdir()] == ["hello.txt"]


def make_tree(root: Path) -> Path:
    share = root / "photos"
    (share / "trip" / "c").mkdir(parents=True)
    (share / "a.txt").write_text("the first file\n")
    (share / "trip" / "b.txt").write_text("a file in a subdirectory\n")
    (share / "trip" / "c" / "d.txt").write_text("and one further down\n")
    (share / "link.txt").symlink_to(share / "a.txt")
    (share / "trip" / "linked").symlink_to(share / "trip" / "c")
    return share


async def test_import_directory_as_sendme_does_and_export_it(stores: tuple[Store, Store], tmp_path: Path) -> None:
    src, _ = stores
    share = make_tree(tmp_path / "in")
    result = await src.import_path(share)
    assert result.format == BlobFormat.HASH_SEQ
    # The same three files give this hash in sendme-compatible implementations.
    assert result.hash.hex() == "5f4f51f62ddbf573262350413348c4c905d5d10e5f87c72771c937948bcd569e"
    assert result.size == 15 + 25 + 21
    assert result.collection is not None
    assert result.collection.names == ["photos/a.txt", "photos/trip/b.txt", "photos/trip/c/d.txt"]
    assert await src.collection(result.hash) == result.collection

    out = tmp_path / "out"
    written = await src.export_collection(result.hash, out)
    assert [p.relative_to(out).as_posix() for p in written] == result.collection.names
    assert (out / "photos" / "trip" / "c" / "d.txt").read_text() == "and one further down\n"
    (out / "photos" / "a.txt").write_text("changed")
    with pytest.raises(FileExistsError):
        await src.export_collection(result.hash, out)
    assert (out / "photos" / "a.txt").read_text() == "changed"
    await src.export_collection(result.hash, out, overwrite=True)
    assert (out / "photos" / "a.txt").read_text() == "the first file\n"


async def test_import_file_raw_or_as_collection(stores: tuple[Store, Store], tmp_path: Path) -> None:
    src, _ = stores
    file = tmp_path / "report.pdf"
    file.write_bytes(os.urandom(40_000))
    raw = await src.import_path(file)
    assert (raw.format, raw.size, raw.collection) == (BlobFormat.RAW, 40_000, None)
    assert await src.get_bytes(raw.hash) == file.read_bytes()
    coll = await src.import_path(file, collection=True)
    assert coll.format == BlobFormat.HASH_SEQ
    assert coll.collection is not None and list(coll.collection) == [("report.pdf", raw.hash)]
    with pytest.raises(FileNotFoundError):
        await src.import_path(tmp_path / "nope")


async def test_collection_rejects_a_raw_blob(stores: tuple[Store, Store]) -> None:
    src, _ = stores
    with pytest.raises(DecodeError):
        await src.collection(await src.import_bytes(b"x" * 31))


# -- partial blobs ------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_download_everything(stores: tuple[Store, Store], size: int) -> None:
    src, dst = stores
    data = random.Random(size).randbytes(size)
    hash = await src.import_bytes(data)
    assert await transfer(src, dst, hash, await dst.missing_ranges(hash))
    assert await dst.has(hash) == "complete"
    assert await dst.get_bytes(hash) == data
    assert (await dst.reader(hash))[1] == (await src.reader(hash))[1]


async def test_download_in_pieces_tracks_what_is_missing(stores: tuple[Store, Store]) -> None:
    src, dst = stores
    size = 10 * GROUP_SIZE + 100
    data = os.urandom(size)
    hash = await src.import_bytes(data)
    assert not await transfer(src, dst, hash, groups((2, 4)))
    assert await dst.has(hash) == "partial"
    assert await dst.size(hash) == size
    assert await dst.missing_ranges(hash) == groups((0, 2), (4, None))
    # A chunk range that is not group-aligned fetches chunks of group 7; only whole groups count.
    assert not await transfer(src, dst, hash, ChunkRanges.from_range(7 * GROUP_CHUNKS + 3, 7 * GROUP_CHUNKS + 5))
    assert await dst.missing_ranges(hash) == groups((0, 2), (4, None))
    assert not await transfer(src, dst, hash, groups((10, None)))
    assert await dst.missing_ranges(hash) == groups((0, 2), (4, 10))
    assert not await transfer(src, dst, hash, groups((4, 9)))
    assert await transfer(src, dst, hash, await dst.missing_ranges(hash))
    assert await dst.get_bytes(hash) == data
    assert await dst.missing_ranges(hash) == ChunkRanges.empty()
    assert await dst.write_leaves(hash, [])


async def test_empty_blob_completes_on_its_header(stores: tuple[Store, Store]) -> None:
    _, dst = stores
    empty = blake3.blake3(b"").digest()
    assert await dst.begin_partial(empty, 0)
    assert await dst.has(empty) == "complete"
    with pytest.raises(BaoError):
        await dst.begin_partial(b"\x01" * 32, 0)


async def test_size_claims_before_and_after_verification(stores: tuple[Store, Store]) -> None:
    src, dst = stores
    size = 6 * GROUP_SIZE
    data = os.urandom(size)
    hash = await src.import_bytes(data)
    # A lying provider announced more; groups 0..2 verified under any size are genuine.
    await dst.begin_partial(hash, 9 * GROUP_SIZE)
    read, _ = await src.reader(hash)
    await dst.write_leaves(hash, [bao.Leaf(0, read(0, 3 * GROUP_SIZE))])
    assert await dst.missing_ranges(hash) == groups((3, None))
    assert not await dst.begin_partial(hash, size)
    assert await dst.size(hash) == size
    assert await dst.missing_ranges(hash) == groups((3, None))
    assert not await transfer(src, dst, hash, groups((5, 6)))
    with pytest.raises(BaoError):
        await dst.begin_partial(hash, size + 1)
    assert await transfer(src, dst, hash, await dst.missing_ranges(hash))
    assert await dst.get_bytes(hash) == data


async def test_data_not_matching_the_hash_is_never_marked_complete(stores: tuple[Store, Store]) -> None:
    _, dst = stores
    hash = blake3.blake3(b"a" * 40_000).digest()
    await dst.begin_partial(hash, 40_000)
    # Leaves that did not come from a verifying decoder: the final re-hash catches them.
    with pytest.raises(BaoError):
        await dst.write_leaves(hash, [bao.Leaf(0, b"b" * 40_000)])
    assert await dst.has(hash) is None
    assert await dst.missing_ranges(hash) == ChunkRanges.all()


async def test_leaves_outside_the_blob_are_refused(stores: tuple[Store, Store]) -> None:
    _, dst = stores
    hash = b"\x05" * 32
    await dst.begin_partial(hash, 100)
    with pytest.raises(ValueError):
        await dst.write_leaves(hash, [bao.Leaf(90, b"x" * 11)])
    assert await dst.missing_ranges(hash) == ChunkRanges.all()


async def test_import_finishes_a_partial_download(stores: tuple[Store, Store]) -> None:
    src, dst = stores
    data = os.urandom(5 * GROUP_SIZE)
    hash = await src.import_bytes(data)
    await transfer(src, dst, hash, groups((0, 1)))
    assert await dst.import_bytes(data) == hash
    assert await dst.has(hash) == "complete"
    assert await dst.write_leaves(hash, [])


# -- tags and gc --------------------------------------------------------------


async def test_gc_keeps_tagged_blobs_collection_children_and_downloads_in_progress(
    stores: tuple[Store, Store], tmp_path: Path
) -> None:
    store, _ = stores
    kept = await store.import_bytes(b"kept")
    loose = await store.import_bytes(b"loose")
    coll = await store.import_path(make_tree(tmp_path / "in"))
    assert coll.collection is not None
    partial = b"\x09" * 32
    await store.begin_partial(partial, 100_000)
    await store.set_tag("kept", kept)
    await store.set_tag("photos", coll.hash, BlobFormat.HASH_SEQ)
    assert await store.list_tags() == {"kept": Tag(kept), "photos": Tag(coll.hash, BlobFormat.HASH_SEQ)}

    assert await store.gc() == [loose]
    assert await store.has(loose) is None
    assert await store.has(partial) == "partial"
    for h in [kept, coll.hash, *coll.collection.hashes]:
        assert await store.has(h) == "complete"

    assert await store.delete_tag("photos")
    assert not await store.delete_tag("photos")
    meta = coll.collection.hash_seq()[0]
    assert set(await store.gc()) == {coll.hash, meta, *coll.collection.hashes}
    assert set(await store.blobs()) == {kept, partial}
    await store.delete(partial)
    assert await store.blobs() == {kept: "complete"}


async def test_a_raw_tag_on_a_hash_seq_protects_only_itself(stores: tuple[Store, Store], tmp_path: Path) -> None:
    store, _ = stores
    coll = await store.import_path(make_tree(tmp_path / "in"))
    await store.set_tag("seq", coll.hash)
    await store.gc()
    assert set(await store.blobs()) == {coll.hash}
    with pytest.raises(BlobsError):
        await store.export_collection(coll.hash, tmp_path / "out")


async def test_concurrent_writers_of_one_blob(stores: tuple[Store, Store]) -> None:
    """Several providers' leaves for one blob, interleaved, overlapping and repeated: one completion, right data."""
    src, dst = stores
    data = os.urandom(40 * GROUP_SIZE + 9)
    hash = await src.import_bytes(data)
    read, _ = await src.reader(hash)
    await dst.begin_partial(hash, len(data))

    async def writer(seed: int) -> bool:
        order = list(range(0, len(data), 3 * GROUP_SIZE))
        random.Random(seed).shuffle(order)
        done = False
        for offset in order:
            done = await dst.write_leaves(hash, [bao.Leaf(offset, read(offset, 3 * GROUP_SIZE))])
        return done

    assert await asyncio.gather(writer(1), writer(2), writer(3)) == [True, True, True]
    assert await dst.get_bytes(hash) == data


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(1, 9 * GROUP_SIZE),
    cuts=st.lists(st.integers(0, 9 * GROUP_CHUNKS), max_size=12),
    order=st.randoms(use_true_random=False),
    reopen_after=st.sets(st.integers(0, 12), max_size=3),
    kind=st.sampled_from(["mem", "fs"]),
)
def test_any_split_and_order_of_leaves_completes_exactly_once(
    size: int, cuts: list[int], order: random.Random, reopen_after: set[int], kind: str
) -> None:
    """Leaves cut at any chunk boundary, written in any order with store re-opens between: what is
    reported missing always covers what is not written, and the blob completes only at the end."""
    data = order.randbytes(size)
    hash = blake3.blake3(data).digest()
    bounds = sorted({0, size, *(c * 1024 for c in cuts if c * 1024 < size)})
    pieces = [bao.Leaf(a, data[a:b]) for a, b in zip(bounds, bounds[1:])]
    order.shuffle(pieces)

    async def run(root: Path) -> None:
        store: Store = MemStore() if kind == "mem" else FsStore(root)
        await store.begin_partial(hash, size)
        written: list[bao.Leaf] = []
        try:
            for i, leaf in enumerate(pieces):
                complete = await store.write_leaves(hash, [leaf])
                written.append(leaf)
                assert complete == (len(written) == len(pieces))
                if not complete:
                    # Every group not yet fully written is reported missing.
                    have = bytearray(size)
                    for w in written:
                        have[w.offset : w.offset + len(w.data)] = b"\x01" * len(w.data)
                    missing = await store.missing_ranges(hash)
                    for g in range(-(-size // GROUP_SIZE)):
                        if not all(have[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]):
                            assert missing.contains(g * GROUP_CHUNKS)
                if i in reopen_after and kind == "fs":
                    await store.close()
                    store = FsStore(root)
            assert await store.get_bytes(hash) == data
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))
