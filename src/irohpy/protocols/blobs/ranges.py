"""Sets of 1 KiB chunk numbers, the unit in which iroh-blobs requests ranges of a blob.

A set is kept as its sorted boundaries, alternately where selection starts and
stops, exactly as iroh-blobs' RangeSpec holds them before delta encoding; an odd
number of boundaries leaves the last range open-ended.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from irohpy.errors import BaoError

CHUNK_SIZE = 1024
CHUNK_LOG = 4
GROUP_CHUNKS = 1 << CHUNK_LOG
GROUP_SIZE = CHUNK_SIZE * GROUP_CHUNKS


def chunks_for_size(size: int) -> int:
    """Number of 1 KiB chunks a blob of `size` bytes spans (0 for an empty blob)."""
    return -(-size // CHUNK_SIZE)


def groups_for_size(size: int) -> int:
    """Number of 16 KiB chunk groups a blob of `size` bytes spans (at least 1: the empty blob has one)."""
    return max(1, -(-size // GROUP_SIZE))


def chunk_to_group(chunk: int) -> int:
    """The chunk group holding `chunk`."""
    return chunk >> CHUNK_LOG


@dataclass(frozen=True, slots=True)
class ChunkRanges:
    """An immutable set of chunk numbers: sorted half-open intervals, the last one maybe open."""

    _bounds: tuple[int, ...] = ()

    @classmethod
    def empty(cls) -> ChunkRanges:
        return cls(())

    @classmethod
    def all(cls) -> ChunkRanges:
        return cls((0,))

    @classmethod
    def from_range(cls, start: int, end: int | None = None) -> ChunkRanges:
        """Chunks start..end, or start.. when end is None."""
        if start < 0 or (end is not None and end < start):
            raise BaoError(f"invalid chunk range {start}..{end}")
        if end is None:
            return cls((start,))
        return cls((start, end)) if end > start else cls(())

    @classmethod
    def from_boundaries(cls, boundaries: Sequence[int]) -> ChunkRanges:
        """Parse alternating start/stop boundaries; they must be strictly increasing and non-negative."""
        bounds = tuple(boundaries)
        for i, b in enumerate(bounds):
            if not isinstance(b, int) or b < 0 or (i and b <= bounds[i - 1]):
                raise BaoError("chunk range boundaries must be strictly increasing non-negative integers")
        return cls(bounds)

    @classmethod
    def from_intervals(cls, intervals: Iterable[tuple[int, int | None]]) -> ChunkRanges:
        """Union of (start, end or None) intervals, in any order, overlapping or not."""
        result = cls.empty()
        for start, end in intervals:
            result = result | cls.from_range(start, end)
        return result

    def boundaries(self) -> tuple[int, ...]:
        return self._bounds

    def intervals(self) -> list[tuple[int, int | None]]:
        """The intervals as (start, end) pairs; end is None for an open-ended last one."""
        b = self._bounds
        return [(b[i], b[i + 1] if i + 1 < len(b) else None) for i in range(0, len(b), 2)]

    def is_empty(self) -> bool:
        return not self._bounds

    def is_all(self) -> bool:
        return self._bounds == (0,)

    def is_open(self) -> bool:
        """Whether the set contains every chunk from some point on."""
        return len(self._bounds) % 2 == 1

    def contains(self, chunk: int) -> bool:
        return bisect_right(self._bounds, chunk) % 2 == 1

    def __contains__(self, chunk: object) -> bool:
        return isinstance(chunk, int) and self.contains(chunk)

    def contains_range(self, start: int, end: int | None) -> bool:
        """Whether every chunk of start..end (start.. if end is None) is in the set."""
        if end is not None and end <= start:
            return True
        b = self._bounds
        i = bisect_right(b, start)
        if i % 2 == 0:
            return False
        return i == len(b) or (end is not None and b[i] >= end)

    def intersects(self, start: int, end: int | None) -> bool:
        """Whether some chunk of start..end (start.. if end is None) is in the set."""
        if end is not None and end <= start:
            return False
        b = self._bounds
        i = bisect_right(b, start)
        return i % 2 == 1 or (i < len(b) and (end is None or b[i] < end))

    def count(self) -> int | None:
        """Number of chunks in the set, None if open-ended."""
        if self.is_open():
            return None
        b = self._bounds
        return sum(b[i + 1] - b[i] for i in range(0, len(b), 2))

    def _combine(self, other: ChunkRanges, op: Callable[[bool, bool], bool]) -> ChunkRanges:
        points = sorted(set(self._bounds) | set(other._bounds))
        out: list[int] = []
        inside = False
        for p in points:
            now = op(self.contains(p), other.contains(p))
            if now != inside:
                out.append(p)
                inside = now
        return ChunkRanges(tuple(out))

    def __or__(self, other: ChunkRanges) -> ChunkRanges:
        return self._combine(other, lambda a, b: a or b)

    def __and__(self, other: ChunkRanges) -> ChunkRanges:
        return self._combine(other, lambda a, b: a and b)

    def __sub__(self, other: ChunkRanges) -> ChunkRanges:
        return self._combine(other, lambda a, b: a and not b)

    def to_groups(self) -> ChunkRanges:
        """The set of 16 KiB chunk groups that hold at least one chunk of this set."""
        out = ChunkRanges.empty()
        for start, end in self.intervals():
            out = out | ChunkRanges.from_range(
                chunk_to_group(start), None if end is None else -(-end // GROUP_CHUNKS)
            )
        return out

    def expand_groups(self) -> ChunkRanges:
        """This set read as chunk group numbers, expanded to the chunks those groups hold."""
        return ChunkRanges(tuple(b * GROUP_CHUNKS for b in self._bounds))

    def __repr__(self) -> str:
        parts = [f"{s}..{'' if e is None else e}" for s, e in self.intervals()]
        return f"ChunkRanges({', '.join(parts)})"
