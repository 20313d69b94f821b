"""ChunkRanges: set algebra against a plain Python set model, boundaries as RangeSpec holds them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import BaoError
from irohpy.protocols.blobs.ranges import (
    ChunkRanges,
    chunks_for_size,
    groups_for_size,
)

LIMIT = 64


def model(r: ChunkRanges) -> set[int]:
    """The chunks of r below LIMIT (boundaries are drawn below LIMIT, so that is all that matters)."""
    return {c for c in range(LIMIT + 1) if r.contains(c)}


boundaries = st.lists(st.integers(0, LIMIT - 1), unique=True, max_size=8).map(sorted)
ranges = boundaries.map(ChunkRanges.from_boundaries)


@settings(max_examples=300, deadline=None)
@given(ranges, ranges)
def test_set_algebra_matches_model(a: ChunkRanges, b: ChunkRanges) -> None:
    assert model(a | b) == model(a) | model(b)
    assert model(a & b) == model(a) & model(b)
    assert model(a - b) == model(a) - model(b)
    assert (a | b).is_open() == (a.is_open() or b.is_open())
    assert (a & b).is_open() == (a.is_open() and b.is_open())


@settings(max_examples=500, deadline=None)
@given(ranges, st.integers(0, LIMIT), st.one_of(st.none(), st.integers(0, LIMIT)))
def test_range_queries_match_model(r: ChunkRanges, start: int, end: int | None) -> None:
    span = set(range(start, LIMIT + 1 if end is None else end))
    assert r.contains_range(start, end) == (span <= model(r))
    assert r.intersects(start, end) == bool(span & model(r))


@settings(max_examples=300, deadline=None)
@given(ranges)
def test_groups_match_model(r: ChunkRanges) -> None:
    groups = r.to_groups()
    assert {g for g in range(LIMIT // 16 + 1) if groups.contains(g)} == {c // 16 for c in model(r)}
    chunks = groups.expand_groups()
    assert model(chunks) == {c for c in range(LIMIT + 1) if groups.contains(c // 16)}


@settings(max_examples=300, deadline=None)
@given(boundaries)
def test_boundaries_roundtrip_and_canonical(bs: list[int]) -> None:
    r = ChunkRanges.from_boundaries(bs)
    assert list(r.boundaries()) == bs
    assert ChunkRanges.from_intervals(r.intervals()) == r
    assert (r | r) == r and (r & r) == r and (r - r).is_empty()


def test_basics() -> None:
    assert ChunkRanges.all().is_all() and ChunkRanges.all().boundaries() == (0,)
    assert ChunkRanges.empty().is_empty() and ChunkRanges.empty().boundaries() == ()
    r = ChunkRanges.from_range(1, 3) | ChunkRanges.from_range(9, 13)
    assert r.boundaries() == (1, 3, 9, 13)
    assert r.intervals() == [(1, 3), (9, 13)]
    assert 2 in r and 3 not in r and r.count() == 6
    assert ChunkRanges.from_range(5).intervals() == [(5, None)]
    assert ChunkRanges.from_range(5).count() is None
    assert ChunkRanges.from_range(4, 4).is_empty()
    assert r.contains_range(9, 13) and not r.contains_range(2, 4)
    assert r.intersects(2, 4) and not r.intersects(3, 9)
    assert ChunkRanges.from_range(10).intersects(0, None)
    assert ChunkRanges.from_range(15, 17).to_groups() == ChunkRanges.from_range(0, 2)
    assert ChunkRanges.from_range(1, 2).expand_groups() == ChunkRanges.from_range(16, 32)
    assert ChunkRanges.all() - ChunkRanges.from_range(0, 4) == ChunkRanges.from_range(4)


@pytest.mark.parametrize("bad", [[3, 3], [5, 2], [-1], [0, 1.5]])
def test_bad_boundaries_rejected(bad: list) -> None:
    with pytest.raises(BaoError):
        ChunkRanges.from_boundaries(bad)


def test_bad_range_rejected() -> None:
    with pytest.raises(BaoError):
        ChunkRanges.from_range(5, 2)
    with pytest.raises(BaoError):
        ChunkRanges.from_range(-1)


def test_sizes() -> None:
    assert [chunks_for_size(n) for n in (0, 1, 1024, 1025)] == [0, 1, 1, 2]
    assert [groups_for_size(n) for n in (0, 1, 16384, 16385)] == [1, 1, 1, 2]
