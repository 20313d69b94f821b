"""A store in memory: for tests, examples and short-lived transfers of small data."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from irohpy.errors import BaoError
from irohpy.protocols.blobs.bao import Leaf, Outboard, compute_outboard
from irohpy.protocols.blobs.hashseq import check_hash
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.store.base import (
    EMPTY_HASH,
    BlobNotFound,
    BlobStatus,
    ReadFn,
    Store,
    atomic_write,
)
from irohpy.protocols.blobs.store.bitfield import ChunkBits
from irohpy.protocols.blobs.store.tags import Tag


@dataclass
class _Partial:
    data: bytearray
    bits: ChunkBits
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MemStore(Store):
    """Every blob, outboard and tag in dicts; nothing survives the process.

    A partial blob's buffer grows with the verified data, never to an unverified size header.
    """

    def __init__(self) -> None:
        self._complete: dict[bytes, Outboard] = {}
        self._data: dict[bytes, bytes] = {}
        self._partial: dict[bytes, _Partial] = {}
        self._tags: dict[str, Tag] = {}

    def _add(self, data: bytes) -> bytes:
        outboard = compute_outboard(data)
        self._data.setdefault(outboard.root, data)
        self._complete.setdefault(outboard.root, outboard)
        self._partial.pop(outboard.root, None)
        return outboard.root

    async def import_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._add(bytes(data))

    async def import_files(self, paths: Sequence[Path | str]) -> list[bytes]:
        return [self._add(await asyncio.to_thread(Path(path).read_bytes)) for path in paths]

    async def has(self, hash: bytes) -> BlobStatus | None:
        hash = check_hash(hash)
        if hash in self._complete:
            return "complete"
        return "partial" if hash in self._partial else None

    async def size(self, hash: bytes) -> int | None:
        hash = check_hash(hash)
        if hash in self._complete:
            return self._complete[hash].size
        partial = self._partial.get(hash)
        return partial.bits.size if partial else None

    async def verified_size(self, hash: bytes) -> int | None:
        hash = check_hash(hash)
        if hash in self._complete:
            return self._complete[hash].size
        partial = self._partial.get(hash)
        return partial.bits.size if partial and partial.bits.size_verified else None

    async def get_bytes(self, hash: bytes) -> bytes:
        hash = check_hash(hash)
        if hash not in self._data:
            raise BlobNotFound(f"blob {hash.hex()} is not in the store")
        return self._data[hash]

    async def reader(self, hash: bytes) -> tuple[ReadFn, Outboard]:
        data = await self.get_bytes(hash)
        view = memoryview(data)
        return (lambda offset, length: bytes(view[offset : offset + length])), self._complete[hash]

    async def export(self, hash: bytes, path: Path | str, *, overwrite: bool = False) -> Path:
        data = await self.get_bytes(hash)
        target = Path(path)
        await asyncio.to_thread(atomic_write, target, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)
        return target

    async def missing_ranges(self, hash: bytes) -> ChunkRanges:
        hash = check_hash(hash)
        if hash in self._complete:
            return ChunkRanges.empty()
        partial = self._partial.get(hash)
        return partial.bits.missing() if partial else ChunkRanges.all()

    async def begin_partial(self, hash: bytes, size: int) -> bool:
        hash = check_hash(hash)
        if hash in self._complete:
            return True
        if size == 0:
            if hash != EMPTY_HASH:
                raise BaoError(f"blob {hash.hex()} cannot be empty")
            self._add(b"")
            return True
        partial = self._partial.get(hash)
        if partial is None:
            self._partial[hash] = _Partial(bytearray(), ChunkBits.new(size))
        elif partial.bits.size != size:
            if partial.bits.size_verified:
                raise BaoError(f"size {size} contradicts the verified size {partial.bits.size} of {hash.hex()}")
            partial.bits = partial.bits.resized(size)
            del partial.data[size:]
        elif partial.bits.complete:
            # Every chunk arrived but the write that would have finished it did not (cancelled).
            return await self._finish(hash, partial)
        return False

    async def write_leaves(self, hash: bytes, leaves: Iterable[Leaf],
                           pairs: Iterable[tuple[int, bytes]] = ()) -> bool:
        hash = check_hash(hash)
        if hash in self._complete:
            return True
        partial = self._partial.get(hash)
        if partial is None:
            raise BlobNotFound(f"blob {hash.hex()} has no partial download (call begin_partial first)")
        for leaf in leaves:
            end = leaf.offset + len(leaf.data)
            partial.bits.mark(leaf.offset, len(leaf.data))
            partial.data.extend(bytes(max(0, end - len(partial.data))))
            partial.data[leaf.offset : end] = leaf.data
        if not partial.bits.complete:
            return False
        return await self._finish(hash, partial)

    async def _finish(self, hash: bytes, partial: _Partial) -> bool:
        """Hash a partial blob whose every chunk is marked and move it in as complete."""
        async with partial.lock:
            if hash in self._complete:
                return True
            data = bytes(partial.data)
            outboard = await asyncio.to_thread(compute_outboard, data)
            self._partial.pop(hash, None)
            if outboard.root != hash:
                raise BaoError(f"blob {hash.hex()} hashed to {outboard.root.hex()} once complete; its data was dropped")
            self._add(data)
        return True

    async def blobs(self) -> dict[bytes, BlobStatus]:
        out: dict[bytes, BlobStatus] = {h: "partial" for h in self._partial}
        out.update((h, "complete") for h in self._complete)
        return out

    async def delete(self, hash: bytes) -> None:
        hash = check_hash(hash)
        self._complete.pop(hash, None)
        self._data.pop(hash, None)
        self._partial.pop(hash, None)

    async def list_tags(self) -> dict[str, Tag]:
        return dict(self._tags)

    async def _save_tags(self, tags: dict[str, Tag]) -> None:
        self._tags = dict(tags)

    def _in_use(self) -> set[bytes]:
        return set(self._partial)
