"""Which 1 KiB chunks of a partial blob hold verified data, and how that is saved.

Chunks are tracked, not 16 KiB groups, so a group that arrives in pieces (leaves split at
chunk boundaries by separate responses) still counts once whole; what is reported missing
is whole groups, which is what a downloader asks for. A partial blob's size comes from a
provider's size header and is trusted only once its last chunk verifies (a bao proof of
the last chunk authenticates the size). Until then the last missing range is left
open-ended, so a request built from it reaches the real end whatever the header claimed.
Leaves verified under any claimed size are genuine bytes of the blob, so a new size keeps
every chunk that is whole under both sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irohpy.errors import BaoError, DecodeError
from irohpy.protocols.blobs.ranges import CHUNK_SIZE, GROUP_CHUNKS, ChunkRanges, chunks_for_size

MAGIC = b"IPYPART1"
_HEADER = len(MAGIC) + 8
MAX_SIZE = 1 << 40
"""Largest partial blob accepted (1 TiB): a size header is unverified, so it must not size our memory freely."""


def _chunks(size: int) -> int:
    """Chunks tracked for a blob: the empty blob has one (empty) chunk, as in bao."""
    return max(1, chunks_for_size(size))


@dataclass(eq=False)
class ChunkBits:
    """A blob's claimed size and one flag per chunk: True once its bytes are verified and written."""

    size: int
    bits: np.ndarray

    @classmethod
    def new(cls, size: int) -> ChunkBits:
        if not 0 <= size <= MAX_SIZE:
            raise BaoError(f"blob size {size} is beyond the {MAX_SIZE} bytes this store downloads")
        return cls(size, np.zeros(_chunks(size), dtype=bool))

    @property
    def complete(self) -> bool:
        return bool(self.bits.all())

    @property
    def size_verified(self) -> bool:
        """Whether the last chunk, and so the size, has been verified."""
        return bool(self.bits[-1])

    def mark(self, offset: int, length: int) -> None:
        """Mark the chunks a verified leaf covers whole; one ending at the blob's end covers the last chunk."""
        end = offset + length
        if offset < 0 or length < 0 or end > self.size:
            raise ValueError(f"leaf {offset}+{length} outside a blob of {self.size} bytes")
        first = -(-offset // CHUNK_SIZE)
        stop = len(self.bits) if end == self.size else end // CHUNK_SIZE
        self.bits[first:stop] = True

    def missing(self) -> ChunkRanges:
        """The chunk groups still needed, as chunk ranges; open-ended while the size is unverified."""
        padded = np.ones(-(-len(self.bits) // GROUP_CHUNKS) * GROUP_CHUNKS, dtype=bool)
        padded[: len(self.bits)] = self.bits
        whole = padded.reshape(-1, GROUP_CHUNKS).all(axis=1)
        edges = np.diff(np.concatenate(([False], ~whole, [False])).astype(np.int8))
        bounds: list[int] = []
        for start, stop in zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True):
            bounds += (start * GROUP_CHUNKS, stop * GROUP_CHUNKS)
        if not self.size_verified:
            bounds.pop()
        return ChunkRanges.from_boundaries(bounds)

    def resized(self, size: int) -> ChunkBits:
        """The same progress under another claimed size: keep chunks whole under both.

        The new last chunk is never kept: its bytes are genuine, but they do not prove the new size.
        """
        out = ChunkBits.new(size)
        keep = min(min(self.size, size) // CHUNK_SIZE, len(out.bits) - 1)
        out.bits[:keep] = self.bits[:keep]
        return out

    def to_bytes(self) -> bytes:
        return MAGIC + self.size.to_bytes(8, "little") + np.packbits(self.bits).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkBits:
        """Parse a saved state; anything malformed is a DecodeError."""
        if len(data) < _HEADER or data[: len(MAGIC)] != MAGIC:
            raise DecodeError("not a partial-blob state file")
        size = int.from_bytes(data[len(MAGIC) : _HEADER], "little")
        packed = np.frombuffer(data, dtype=np.uint8, offset=_HEADER)
        if size > MAX_SIZE or len(packed) != -(-_chunks(size) // 8):
            raise DecodeError(f"partial-blob state has {len(packed)} bitfield bytes for a blob of {size} bytes")
        out = cls.new(size)
        bits = np.unpackbits(packed)
        if bits[len(out.bits) :].any():
            raise DecodeError("partial-blob state has bits set past its last chunk")
        out.bits[:] = bits[: len(out.bits)].astype(bool)
        return out
