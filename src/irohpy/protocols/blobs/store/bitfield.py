"""Which 16 KiB chunk groups of a partial blob hold verified data, and how that is saved.

A partial blob's size comes from a provider's size header and is trusted only once its
last group verifies (a bao proof of the last chunk authenticates the size). Until then the
last missing range is left open-ended, so a request built from it reaches the real end
whatever the header claimed. Leaves verified under any claimed size are genuine bytes of
the blob, so a new size keeps every group that is whole under both sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irohpy.errors import BaoError, DecodeError
from irohpy.protocols.blobs.ranges import GROUP_CHUNKS, GROUP_SIZE, ChunkRanges, groups_for_size

MAGIC = b"IPYPART1"
_HEADER = len(MAGIC) + 8
MAX_SIZE = 1 << 40
"""Largest partial blob accepted (1 TiB): a size header is unverified, so it must not size our memory freely."""


@dataclass(eq=False)
class GroupBits:
    """A blob's claimed size and one flag per chunk group: True once its bytes are verified and written."""

    size: int
    bits: np.ndarray

    @classmethod
    def new(cls, size: int) -> GroupBits:
        if not 0 <= size <= MAX_SIZE:
            raise BaoError(f"blob size {size} is beyond the {MAX_SIZE} bytes this store downloads")
        return cls(size, np.zeros(groups_for_size(size), dtype=bool))

    @property
    def groups(self) -> int:
        return len(self.bits)

    @property
    def complete(self) -> bool:
        return bool(self.bits.all())

    @property
    def size_verified(self) -> bool:
        """Whether the last group, and so the size, has been verified."""
        return bool(self.bits[-1])

    def mark(self, offset: int, length: int) -> int:
        """Mark the groups a verified leaf covers whole; return how many were newly marked.

        A leaf ending at the blob's end covers the last (maybe short) group whole.
        """
        end = offset + length
        if offset < 0 or length < 0 or end > self.size:
            raise ValueError(f"leaf {offset}+{length} outside a blob of {self.size} bytes")
        first = -(-offset // GROUP_SIZE)
        stop = self.groups if end == self.size else end // GROUP_SIZE
        if stop <= first:
            return 0
        window = self.bits[first:stop]
        new = int(window.size - np.count_nonzero(window))
        window[:] = True
        return new

    def missing(self) -> ChunkRanges:
        """The chunks still needed; open-ended while the size is unverified."""
        flags = np.concatenate(([False], ~self.bits, [False])).astype(np.int8)
        edges = np.diff(flags)
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)
        bounds: list[int] = []
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            bounds += (start * GROUP_CHUNKS, stop * GROUP_CHUNKS)
        if not self.size_verified:
            bounds.pop()
        return ChunkRanges.from_boundaries(bounds)

    def resized(self, size: int) -> GroupBits:
        """The same progress under another claimed size: keep groups whole under both.

        The new last group is never kept: its bytes are genuine, but they do not prove the new size.
        """
        out = GroupBits.new(size)
        keep = min(min(self.size, size) // GROUP_SIZE, out.groups - 1)
        out.bits[:keep] = self.bits[:keep]
        return out

    def to_bytes(self) -> bytes:
        return MAGIC + self.size.to_bytes(8, "little") + np.packbits(self.bits).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupBits:
        """Parse a saved state; anything malformed is a DecodeError."""
        if len(data) < _HEADER or data[: len(MAGIC)] != MAGIC:
            raise DecodeError("not a partial-blob state file")
        size = int.from_bytes(data[len(MAGIC) : _HEADER], "little")
        packed = data[_HEADER:]
        if size > MAX_SIZE or len(packed) != -(-groups_for_size(size) // 8):
            raise DecodeError(f"partial-blob state has {len(packed)} bitfield bytes for a blob of {size} bytes")
        out = cls.new(size)
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=out.groups).astype(bool)
        padding = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[out.groups :]
        if padding.any():
            raise DecodeError("partial-blob state has bits set past its last group")
        out.bits[:] = bits
        return out
