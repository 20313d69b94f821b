"""An ordered set of disjoint integer ranges ``[start, stop)``.

Received packet numbers (which become ACK ranges) and received stream bytes (reassembly) are
both sets of integers that arrive mostly in order, so the common case, extending the last
range, is a compare and an assignment. Ranges live in two parallel lists searched with bisect:
no object per range.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class RangeSet:
    """Disjoint, non-adjacent half-open ranges kept sorted; adjacent ranges merge on insert.

    ``max_ranges`` (0 = unlimited) caps memory against a peer that creates many gaps: when an
    insert would exceed it, the lowest ranges are dropped, which is what ACK tracking wants
    (old packet numbers matter least).
    """

    __slots__ = ("_starts", "_stops", "max_ranges")

    def __init__(self, max_ranges: int = 0) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        self.max_ranges = max_ranges

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._stops)

    def __repr__(self) -> str:
        return "RangeSet([" + ", ".join(f"{a}..{b}" for a, b in self) + "])"

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._stops[i]

    def descending(self) -> Iterator[tuple[int, int]]:
        """The ranges from highest to lowest, the order an ACK frame lists them."""
        return zip(reversed(self._starts), reversed(self._stops))

    @property
    def start(self) -> int:
        """Lowest value in the set (the set must not be empty)."""
        return self._starts[0]

    @property
    def stop(self) -> int:
        """One past the highest value in the set (the set must not be empty)."""
        return self._stops[-1]

    def first_stop(self) -> int:
        """End of the lowest range, or 0 when empty: with a set starting at 0, the contiguous prefix."""
        return self._stops[0] if self._stops else 0

    def clear(self) -> None:
        self._starts.clear()
        self._stops.clear()

    def add(self, start: int, stop: int) -> int:
        """Insert ``[start, stop)``; return how many values were not in the set before."""
        if start >= stop:
            return 0
        starts = self._starts
        stops = self._stops
        if not stops or start > stops[-1]:
            starts.append(start)
            stops.append(stop)
            self._trim()
            return stop - start
        if start == stops[-1]:
            stops[-1] = stop
            return stop - start
        i = bisect_left(stops, start)
        j = bisect_right(starts, stop)
        if i == j:
            starts.insert(i, start)
            stops.insert(i, stop)
            self._trim()
            return stop - start
        covered = 0
        for k in range(i, j):
            covered += stops[k] - starts[k]
        new_start = start if start < starts[i] else starts[i]
        new_stop = stop if stop > stops[j - 1] else stops[j - 1]
        starts[i:j] = [new_start]
        stops[i:j] = [new_stop]
        return new_stop - new_start - covered

    def remove(self, start: int, stop: int) -> None:
        """Delete ``[start, stop)`` from the set, splitting a range if needed."""
        if start >= stop:
            return
        starts = self._starts
        stops = self._stops
        i = bisect_right(stops, start)
        j = bisect_left(starts, stop)
        if i >= j:
            return
        new_starts: list[int] = []
        new_stops: list[int] = []
        if starts[i] < start:
            new_starts.append(starts[i])
            new_stops.append(start)
        if stops[j - 1] > stop:
            new_starts.append(stop)
            new_stops.append(stops[j - 1])
        starts[i:j] = new_starts
        stops[i:j] = new_stops

    def remove_below(self, value: int) -> None:
        """Delete every value below ``value``."""
        if self._starts and self._starts[0] < value:
            self.remove(self._starts[0], value)

    def gaps(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of ``[start, stop)`` that are not in the set, in order."""
        starts = self._starts
        stops = self._stops
        out: list[tuple[int, int]] = []
        i = bisect_right(stops, start)
        pos = start
        n = len(starts)
        while i < n and starts[i] < stop:
            if starts[i] > pos:
                out.append((pos, starts[i]))
            if stops[i] > pos:
                pos = stops[i]
            i += 1
        if pos < stop:
            out.append((pos, stop))
        return out

    def _trim(self) -> None:
        cap = self.max_ranges
        if cap and len(self._starts) > cap:
            del self._starts[: len(self._starts) - cap]
            del self._stops[: len(self._stops) - cap]
