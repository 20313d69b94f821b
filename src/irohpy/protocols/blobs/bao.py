"""Bao-tree verified streaming as iroh-blobs uses it: 16 KiB chunk groups, pre-order.

A blob's BLAKE3 tree is cut at 16 KiB chunk groups: the outboard stores the
parents above the groups, a response sends the parents and group data that a
set of chunk ranges needs, and the receiver checks every byte against the root
hash before handing it on. A group that is only partly requested is sent with
the parents inside it down to single 1 KiB chunks, as bao-tree does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import blake3
import numpy as np

from irohpy.errors import BaoError
from irohpy.protocols.blobs import blake3_np as b3
from irohpy.protocols.blobs.ranges import (
    CHUNK_LOG,
    CHUNK_SIZE,
    GROUP_CHUNKS,
    ChunkRanges,
    chunks_for_size,
    groups_for_size,
)

BLOCK_SIZE = CHUNK_SIZE << CHUNK_LOG
HEADER_SIZE = 8
PAIR_SIZE = 64
HASH_SIZE = 32
VERIFY_WINDOW = 8 << 20
_BATCH_GROUPS = 1024

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "Leaf",
    "Outboard",
    "ResponseDecoder",
    "check_outboard",
    "compute_outboard",
    "compute_outboard_from",
    "encode_ranges",
    "truncate_ranges",
]


@dataclass(frozen=True, slots=True)
class Outboard:
    """A blob's root hash, size and parent hash pairs above its chunk groups, in pre-order."""

    root: bytes
    size: int
    data: bytes

    def __post_init__(self) -> None:
        if len(self.root) != HASH_SIZE:
            raise BaoError("root hash must be 32 bytes")
        if self.size < 0 or len(self.data) != PAIR_SIZE * (groups_for_size(self.size) - 1):
            raise BaoError(f"outboard of {len(self.data)} bytes does not fit a blob of {self.size} bytes")


@dataclass(frozen=True, slots=True)
class Leaf:
    """Verified blob bytes at an offset."""

    offset: int
    data: bytes


def _left_count(count: int) -> int:
    """Leaves in the left subtree of a BLAKE3 tree over `count` leaves: the largest power of two below it."""
    return 1 << ((count - 1).bit_length() - 1)


def _group_cvs(data: bytes | memoryview, first_group: int) -> np.ndarray:
    """Chaining values (8, N) of N full 16 KiB chunk groups."""
    return b3.merge_pairs(b3.chunk_cvs(data, first_group * GROUP_CHUNKS), CHUNK_LOG)


def compute_outboard(data: bytes | memoryview) -> Outboard:
    """Hash a blob into its root and pre-order outboard (vectorised over up to 16 MiB at once)."""
    view = memoryview(data).cast("B")
    return compute_outboard_from(lambda offset, length: view[offset : offset + length], len(view))


def compute_outboard_from(read: Callable[[int, int], bytes | memoryview], size: int) -> Outboard:
    """:func:`compute_outboard` of a blob read in group-aligned pieces of up to 16 MiB.

    Only one piece is held at a time, so a file read with os.pread never sits in
    memory whole. Raises BaoError if a read comes back short.
    """

    def read_exact(offset: int, length: int) -> bytes | memoryview:
        piece = read(offset, length)
        if len(piece) != length:
            raise BaoError(f"blob data ends before {offset + length} of {size} bytes")
        return piece

    groups = groups_for_size(size)
    if groups == 1:
        return Outboard(blake3.blake3(read_exact(0, size)).digest(), size, b"")
    full = size // BLOCK_SIZE
    parts = []
    for start in range(0, full, _BATCH_GROUPS):
        end = min(full, start + _BATCH_GROUPS)
        parts.append(_group_cvs(read_exact(start * BLOCK_SIZE, (end - start) * BLOCK_SIZE), start))
    if full < groups:
        tail = read_exact(full * BLOCK_SIZE, size - full * BLOCK_SIZE)
        parts.append(b3.cvs_from_bytes(b3.subtree_cv(tail, full * GROUP_CHUNKS)))
    level = np.concatenate(parts, axis=1)
    levels = [b3.cvs_to_bytes(level)]
    while level.shape[1] > 2:
        n = level.shape[1]
        merged = b3.parent_cvs(level[:, 0 : n - 1 : 2], level[:, 1:n:2])
        level = merged if n % 2 == 0 else np.concatenate([merged, level[:, n - 1 :]], axis=1)
        levels.append(b3.cvs_to_bytes(level))
    root = b3.cv_bytes(b3.parent_cvs(level[:, 0:1], level[:, 1:2], b3.PARENT | b3.ROOT))

    def cv(start: int, count: int) -> bytes:
        k = (count - 1).bit_length()
        i = start >> k
        return levels[k][i * HASH_SIZE : (i + 1) * HASH_SIZE]

    out = bytearray()
    stack = [(0, groups)]
    while stack:
        start, count = stack.pop()
        left = _left_count(count)
        out += cv(start, left)
        out += cv(start + left, count - left)
        if count - left > 1:
            stack.append((start + left, count - left))
        if left > 1:
            stack.append((start, left))
    return Outboard(root, size, bytes(out))


def check_outboard(outboard: Outboard) -> None:
    """Raise BaoError unless every pair hashes to its half of the pair above it, and the first to the root.

    An outboard assembled from the pairs of verified responses (a store that keeps them) then
    holds exactly the blob's tree: the groups' hashes at its bottom are the ones the data was
    verified against. One vectorised pass, about 1% of hashing the blob.
    """
    n = len(outboard.data) // PAIR_SIZE
    if n == 0:
        return
    above = np.empty(n - 1, dtype=np.int64)  # for each pair after the first: the word offset of the hash it makes
    stack = [(n + 1, 0)]
    while stack:
        count, pre = stack.pop()
        left = _left_count(count)
        if left > 1:
            above[pre] = pre * PAIR_SIZE // 4
            stack.append((left, pre + 1))
        if count - left > 1:
            above[pre + left - 1] = (pre * PAIR_SIZE + HASH_SIZE) // 4
            stack.append((count - left, pre + left))
    w = b3.words(outboard.data)
    m = np.ascontiguousarray(w.reshape(n, 16).T)
    flags = np.full(n, b3.PARENT, dtype=np.uint32)
    flags[0] |= b3.ROOT
    got = b3.parent_cvs(m[0:8], m[8:16], flags)
    want = np.empty((8, n), dtype=np.uint32)
    want[:, 0] = b3.words(outboard.root)
    want[:, 1:] = w[above[:, None] + np.arange(8)].T
    if not np.array_equal(got, want):
        raise BaoError("outboard pairs do not hash up to the root")


def truncate_ranges(ranges: ChunkRanges, size: int) -> ChunkRanges:
    """Ranges as bao-tree applies them to a blob of `size` bytes.

    Anything asked for past the end turns into a request for the last chunk (it
    proves the size), and a range reaching the last chunk becomes open-ended.
    """
    bs = ranges.boundaries()
    last = max(chunks_for_size(size) - 1, 0)
    i = bisect_left(bs, last)
    if i < len(bs) and bs[i] == last:
        n = i + 1 if i % 2 == 0 or len(bs) == i + 1 else i
    elif i % 2 == 0:
        n = i if len(bs) == i else i + 1
    else:
        n = i
    return ChunkRanges.from_boundaries(bs[:n])


@dataclass(frozen=True, slots=True)
class _Parent:
    """A 64-byte hash pair in the stream: from the outboard (pre is set) or inside a chunk group."""

    pre: int | None
    start_chunk: int
    left_chunks: int
    right_chunks: int
    is_root: bool
    left: bool
    right: bool


@dataclass(frozen=True, slots=True)
class _Data:
    """Blob bytes in the stream: a whole subtree of chunks."""

    offset: int
    length: int
    start_chunk: int
    is_root: bool


def _plan(size: int, ranges: ChunkRanges) -> Iterator[_Parent | _Data]:
    """The items of a response, in stream order, for a blob of `size` bytes."""
    query = truncate_ranges(ranges, size)
    groups = groups_for_size(size)

    def chunk_node(start: int, count: int, is_root: bool, last: bool) -> Iterator[_Parent | _Data]:
        end = None if last else start + count
        if count == 1 or query.contains_range(start, end):
            offset = start * CHUNK_SIZE
            yield _Data(offset, min(count * CHUNK_SIZE, size - offset), start, is_root)
            return
        left = _left_count(count)
        mid = start + left
        has_left, has_right = query.intersects(start, mid), query.intersects(mid, end)
        yield _Parent(None, start, left, count - left, is_root, has_left, has_right)
        if has_left:
            yield from chunk_node(start, left, False, False)
        if has_right:
            yield from chunk_node(mid, count - left, False, last)

    def full_blocks(start: int, count: int, pre: int, is_root: bool) -> Iterator[_Parent | _Data]:
        """A wholly requested subtree of groups: every parent and all the data, no range checks."""
        stack = [(start, count, pre, is_root)]
        while stack:
            start, count, pre, is_root = stack.pop()
            if count == 1:
                offset = start * BLOCK_SIZE
                yield _Data(offset, min(BLOCK_SIZE, size - offset), start * GROUP_CHUNKS, is_root)
                continue
            left = _left_count(count)
            yield _Parent(pre, start * GROUP_CHUNKS, left * GROUP_CHUNKS, 0, is_root, True, True)
            stack.append((start + left, count - left, pre + left, False))
            stack.append((start, left, pre + 1, False))

    def block_node(start: int, count: int, pre: int, is_root: bool) -> Iterator[_Parent | _Data]:
        last = start + count == groups
        end = None if last else (start + count) * GROUP_CHUNKS
        if query.contains_range(start * GROUP_CHUNKS, end):
            yield from full_blocks(start, count, pre, is_root)
            return
        if count == 1:
            chunk = start * GROUP_CHUNKS
            chunks = max(1, min(GROUP_CHUNKS, chunks_for_size(size) - chunk))
            yield from chunk_node(chunk, chunks, is_root, last)
            return
        left = _left_count(count)
        mid = (start + left) * GROUP_CHUNKS
        has_left, has_right = query.intersects(start * GROUP_CHUNKS, mid), query.intersects(mid, end)
        yield _Parent(pre, start * GROUP_CHUNKS, left * GROUP_CHUNKS, 0, is_root, has_left, has_right)
        if has_left:
            yield from block_node(start, left, pre + 1, False)
        if has_right:
            yield from block_node(start + left, count - left, pre + left, False)

    if not query.is_empty():
        yield from block_node(0, groups, 0, True)


def encode_ranges(
    read: Callable[[int, int], bytes], outboard: Outboard, ranges: ChunkRanges
) -> Iterator[bytes]:
    """The bao-tree encoding of a blob restricted to `ranges`, without the 8-byte size header.

    Groups that are only partly requested need the hashes inside them; those are
    computed for up to 32 such groups (512 KiB) at once, a few milliseconds of work,
    so a caller can yield between pieces. Raises BaoError if `read` returns
    less than asked (the blob shrank under us).
    """
    size = outboard.size

    def read_exact(offset: int, length: int) -> bytes:
        data = read(offset, length)
        if len(data) != length:
            raise BaoError(f"blob data ends before {offset + length}, its outboard says {size} bytes")
        return data

    for items, partial in _batches(_plan(size, ranges)):
        inner = _GroupTrees(read_exact, size, partial)
        for item in items:
            if isinstance(item, _Parent) and item.pre is not None:
                yield outboard.data[item.pre * PAIR_SIZE : (item.pre + 1) * PAIR_SIZE]
            elif isinstance(item, _Parent):
                yield inner.pair(item)
            elif item.length:
                yield inner.data(item) or read_exact(item.offset, item.length)


_BATCH_ITEMS = 4096
_BATCH_PARTIAL_GROUPS = 32


def _batches(plan: Iterator[_Parent | _Data]) -> Iterator[tuple[list[_Parent | _Data], set[int]]]:
    """Plan items in batches, each with the partly requested groups whose inner parents it holds."""
    batch: list[_Parent | _Data] = []
    groups: set[int] = set()
    for item in plan:
        batch.append(item)
        if isinstance(item, _Parent) and item.pre is None:
            groups.add(item.start_chunk // GROUP_CHUNKS)
        if len(batch) >= _BATCH_ITEMS or len(groups) >= _BATCH_PARTIAL_GROUPS:
            yield batch, groups
            batch, groups = [], set()
    if batch:
        yield batch, groups


class _GroupTrees:
    """Data and inner chaining values of partly requested chunk groups, hashed in one batch."""

    def __init__(self, read_exact: Callable[[int, int], bytes], size: int, groups: set[int]) -> None:
        self._data = {g: read_exact(g * BLOCK_SIZE, min(BLOCK_SIZE, size - g * BLOCK_SIZE)) for g in groups}
        full = sorted(g for g in groups if len(self._data[g]) == BLOCK_SIZE)
        self._index = {g: i for i, g in enumerate(full)}
        self._short = {g: b3.leaf_cvs(d, g * GROUP_CHUNKS) for g, d in self._data.items() if g not in self._index}
        self._levels: list[bytes] = []
        if full:
            counters = np.concatenate([np.arange(g * GROUP_CHUNKS, (g + 1) * GROUP_CHUNKS, dtype=np.uint64) for g in full])
            level = b3.chunk_cvs(b"".join(self._data[g] for g in full), counters)
            self._levels.append(b3.cvs_to_bytes(level))
            for _ in range(CHUNK_LOG - 1):
                level = b3.parent_cvs(level[:, 0::2], level[:, 1::2])
                self._levels.append(b3.cvs_to_bytes(level))

    def pair(self, item: _Parent) -> bytes:
        group = item.start_chunk // GROUP_CHUNKS
        rel = item.start_chunk - group * GROUP_CHUNKS
        mid = rel + item.left_chunks
        if group in self._index:
            return self._cv(group, rel, item.left_chunks) + self._cv(group, mid, item.right_chunks)
        cvs = self._short[group]
        left = b3.tree_cv(cvs[:, rel:mid], False)
        return b3.cv_bytes(left) + b3.cv_bytes(b3.tree_cv(cvs[:, mid : mid + item.right_chunks], False))

    def _cv(self, group: int, rel: int, count: int) -> bytes:
        """The subtree of `count` (a power of two) chunks from chunk `rel` of a full group."""
        k = count.bit_length() - 1
        i = self._index[group] * (GROUP_CHUNKS >> k) + (rel >> k)
        return self._levels[k][i * HASH_SIZE : (i + 1) * HASH_SIZE]

    def data(self, item: _Data) -> bytes | None:
        """The item's bytes if its group was read for hashing, else None."""
        group = item.start_chunk // GROUP_CHUNKS
        data = self._data.get(group)
        if data is None:
            return None
        rel = item.offset - group * BLOCK_SIZE
        return data[rel : rel + item.length]


class ResponseDecoder:
    """Sans-IO verifier of one blob's response: size header, then parents and data.

    Bytes go in with :meth:`feed`; verified leaves come out. Hashing is batched
    over windows of about 8 MiB, so leaves come out per window and at the end;
    nothing that failed verification is ever returned. :meth:`take_pairs` hands out
    the outboard's pairs verified so far, for a store that keeps them.
    """

    def __init__(self, root: bytes, ranges: ChunkRanges, *, window: int = VERIFY_WINDOW) -> None:
        if len(root) != HASH_SIZE:
            raise BaoError("root hash must be 32 bytes")
        self._root = bytes(root)
        self._ranges = ranges
        self._window = window
        self._buf = bytearray()
        self._pos = 0
        self._plan: Iterator[_Parent | _Data] = iter(())
        self._item: _Parent | _Data | None = None
        self._expected: list[bytes] = [self._root]
        self._parents: list[tuple[bytes, bytes, bool, int | None]] = []
        self._leaves: list[tuple[_Data, bytes, bytes]] = []
        self._pairs: list[tuple[int, bytes]] = []
        self._pending_bytes = 0
        self._done = False
        self.size: int | None = None

    @property
    def done(self) -> bool:
        """Whether every requested byte has arrived and verified."""
        return self._done

    @property
    def unused(self) -> bytes:
        """Bytes fed after the end of this response (the next blob's, on a shared stream)."""
        return bytes(self._buf[self._pos :]) if self._done else b""

    def feed(self, data: bytes | memoryview) -> list[Leaf]:
        """Take more response bytes; return the leaves verified so far."""
        if self._done:
            self._buf += data
            return []
        self._buf += data
        if self.size is None:
            if len(self._buf) < HEADER_SIZE:
                return []
            self.size = int.from_bytes(self._buf[:HEADER_SIZE], "little")
            self._pos = HEADER_SIZE
            self._plan = _plan(self.size, self._ranges)
            self._item = next(self._plan, None)
        out: list[Leaf] = []
        with memoryview(self._buf) as view:
            pos, item = self._pos, self._item
            while item is not None:
                need = PAIR_SIZE if isinstance(item, _Parent) else item.length
                if len(view) - pos < need:
                    break
                self._take(item, bytes(view[pos : pos + need]))
                pos += need
                item = next(self._plan, None)
                if self._pending_bytes >= self._window:
                    out += self._flush()
            self._pos, self._item = pos, item
        if self._item is None:
            out += self._flush()
            self._done = True
        elif self._pos > (1 << 20):
            del self._buf[: self._pos]
            self._pos = 0
        return out

    def take_pairs(self) -> list[tuple[int, bytes]]:
        """Outboard pairs verified since the last call: (pre-order index, 64 bytes).

        Each leaf's pairs are out by the time the leaf is: taking them whenever leaves are
        stored keeps every stored chunk's path up the tree with it.
        """
        pairs, self._pairs = self._pairs, []
        return pairs

    def finish(self) -> None:
        """Check the response is complete: raise BaoError if it ended early."""
        if not self._done:
            raise BaoError("bao response ended before every requested range arrived")

    def _take(self, item: _Parent | _Data, chunk: bytes) -> None:
        expected = self._expected.pop()
        if isinstance(item, _Parent):
            self._parents.append((chunk, expected, item.is_root, item.pre))
            if item.right:
                self._expected.append(chunk[HASH_SIZE:])
            if item.left:
                self._expected.append(chunk[:HASH_SIZE])
        else:
            self._leaves.append((item, chunk, expected))
            self._pending_bytes += len(chunk)

    def _flush(self) -> list[Leaf]:
        """Verify every pending parent and leaf at once; return the leaves, merged where adjacent."""
        parents, leaves = self._parents, self._leaves
        self._parents, self._leaves, self._pending_bytes = [], [], 0
        if parents:
            _verify_parents(parents)
            self._pairs += [(pre, pair) for pair, _, _, pre in parents if pre is not None]
        _verify_leaves(leaves)
        out: list[Leaf] = []
        run: list[bytes] = []
        run_start = run_end = -1
        for item, data, _ in leaves:
            if not data:
                continue
            if item.offset != run_end:
                if run:
                    out.append(Leaf(run_start, b"".join(run)))
                run, run_start = [], item.offset
            run.append(data)
            run_end = item.offset + len(data)
        if run:
            out.append(Leaf(run_start, b"".join(run)))
        return out


def _verify_parents(parents: list[tuple[bytes, bytes, bool, int | None]]) -> None:
    pairs = b"".join(p for p, _, _, _ in parents)
    m = np.ascontiguousarray(b3.words(pairs).reshape(-1, 16).T)
    flags = np.array([b3.PARENT | (b3.ROOT if r else 0) for _, _, r, _ in parents], dtype=np.uint32)
    got = b3.parent_cvs(m[0:8], m[8:16], flags)
    want = b3.cvs_from_bytes(b"".join(e for _, e, _, _ in parents))
    if not np.array_equal(got, want):
        raise BaoError("bao parent hash pair does not match its parent")


def _verify_leaves(leaves: list[tuple[_Data, bytes, bytes]]) -> None:
    classes: dict[int, list[tuple[_Data, bytes, bytes]]] = {}
    for leaf in leaves:
        item, data, expected = leaf
        count = len(data) // CHUNK_SIZE
        if item.is_root:
            ok = blake3.blake3(data).digest() == expected
        elif len(data) % CHUNK_SIZE == 0 and count & (count - 1) == 0 and count:
            classes.setdefault(count, []).append(leaf)
            continue
        else:
            ok = b3.subtree_cv(data, item.start_chunk) == expected
        if not ok:
            raise BaoError(f"bao data at offset {item.offset} does not match its hash")
    for count, group in classes.items():
        for start in range(0, len(group), max(1, _BATCH_GROUPS * GROUP_CHUNKS // count)):
            batch = group[start : start + _BATCH_GROUPS * GROUP_CHUNKS // count]
            counters = np.concatenate(
                [np.arange(i.start_chunk, i.start_chunk + count, dtype=np.uint64) for i, _, _ in batch]
            )
            cvs = b3.merge_pairs(b3.chunk_cvs(b"".join(d for _, d, _ in batch), counters), count.bit_length() - 1)
            if not np.array_equal(cvs, b3.cvs_from_bytes(b"".join(e for _, _, e in batch))):
                raise BaoError("bao data does not match its hash")
