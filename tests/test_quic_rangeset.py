"""RangeSet against a plain Python set of integers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.quic.rangeset import RangeSet

OPS = st.lists(
    st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 30)), max_size=60
)


def _as_set(rs: RangeSet) -> set[int]:
    out: set[int] = set()
    for a, b in rs:
        out.update(range(a, b))
    return out


def test_in_order_packets_stay_one_range() -> None:
    rs = RangeSet()
    for pn in range(1000):
        assert rs.add(pn, pn + 1) == 1
    assert list(rs) == [(0, 1000)]
    assert rs.add(500, 501) == 0


def test_gaps_and_descending() -> None:
    rs = RangeSet()
    rs.add(0, 3)
    rs.add(5, 7)
    rs.add(10, 11)
    assert list(rs.descending()) == [(10, 11), (5, 7), (0, 3)]
    assert rs.gaps(0, 12) == [(3, 5), (7, 10), (11, 12)]
    assert rs.gaps(1, 2) == []
    rs.remove(1, 6)
    assert list(rs) == [(0, 1), (6, 7), (10, 11)]


def test_cap_drops_lowest_ranges() -> None:
    rs = RangeSet(max_ranges=4)
    for pn in range(0, 20, 2):
        rs.add(pn, pn + 1)
    assert len(rs) == 4
    assert rs.start == 12 and rs.stop == 19


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_matches_a_set(ops: list[tuple[bool, int, int]]) -> None:
    rs = RangeSet()
    ref: set[int] = set()
    for is_add, start, length in ops:
        stop = start + length
        if is_add:
            new = set(range(start, stop)) - ref
            assert rs.add(start, stop) == len(new)
            ref |= new
        else:
            rs.remove(start, stop)
            ref -= set(range(start, stop))
        assert _as_set(rs) == ref
        ranges = list(rs)
        # Disjoint, sorted, never adjacent, never empty.
        for (a, b), (c, d) in zip(ranges, ranges[1:]):
            assert a < b < c < d
        for probe in (start, stop, start - 1):
            assert (probe in rs) == (probe in ref)
        gaps = rs.gaps(start, stop + 5)
        assert {x for a, b in gaps for x in range(a, b)} == set(range(start, stop + 5)) - ref


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_agrees_with_aioquic_reference(ops: list[tuple[bool, int, int]]) -> None:
    """aioquic's RangeSet, used here only as an independent reference."""
    from aioquic.quic.rangeset import RangeSet as Reference

    ours = RangeSet()
    ref = Reference()
    for is_add, start, length in ops:
        if length == 0:
            continue
        if is_add:
            ours.add(start, start + length)
            ref.add(start, start + length)
        else:
            ours.remove(start, start + length)
            ref.subtract(start, start + length)
        assert list(ours) == [(r.start, r.stop) for r in ref]
