"""ACK tracking per packet-number space; the ranges it reports survive the ACK frame codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.quic.ack import (
    ECN_CE,
    ECN_ECT0,
    INF,
    MAX_ACK_RANGES,
    AckTracker,
)
from irohpy.quic.buffer import Writer
from irohpy.quic.frames import Ack, decode_frames
from irohpy.quic.packet import PACKET_ONE_RTT


def test_ack_every_second_ack_eliciting_packet() -> None:
    t = AckTracker(max_ack_delay=0.025)
    assert t.on_packet(0, True, 0, 1.0)
    assert not t.wants_ack(1.0)
    assert t.ack_deadline == pytest.approx(1.025)
    assert t.wants_ack(1.025)
    assert t.on_packet(1, True, 0, 1.001)
    assert t.wants_ack(1.001)
    t.on_ack_sent()
    assert t.ack_deadline == INF and not t.wants_ack(2.0)


def test_non_ack_eliciting_recorded_but_no_timer() -> None:
    t = AckTracker()
    t.on_packet(0, False, 0, 1.0)
    t.on_packet(1, False, 0, 1.0)
    assert not t.wants_ack(5.0)
    assert t.ranges() == [(0, 2)]


def test_gap_and_reorder_ack_immediately() -> None:
    t = AckTracker()
    t.on_packet(0, True, 0, 1.0)
    t.on_ack_sent()
    t.on_packet(2, True, 0, 1.0)  # 1 missing
    assert t.wants_ack(1.0)
    t.on_ack_sent()
    t.on_packet(1, True, 0, 1.1)  # fills the gap, out of order
    assert t.wants_ack(1.1)
    assert t.ranges() == [(0, 3)]


def test_duplicates_rejected() -> None:
    t = AckTracker()
    assert t.on_packet(5, True, 0, 1.0)
    assert not t.on_packet(5, True, 0, 1.0)
    assert t.is_duplicate(5) and not t.is_duplicate(4)


def test_handshake_spaces_ack_at_once() -> None:
    t = AckTracker(max_ack_delay=0.0)
    t.on_packet(0, True, 0, 1.0)
    assert t.wants_ack(1.0)


def test_ack_frequency_threshold() -> None:
    t = AckTracker()
    t.set_ack_frequency(10, 0.05, 1)
    for pn in range(9):
        t.on_packet(pn, True, 0, 1.0)
    assert not t.wants_ack(1.0)
    t.on_packet(9, True, 0, 1.0)
    assert t.wants_ack(1.0)


def test_ecn_counts_and_ce_forces_ack() -> None:
    t = AckTracker()
    t.on_packet(0, True, ECN_ECT0, 1.0)
    assert not t.wants_ack(1.0)
    t.on_ack_sent()
    t.on_packet(1, True, ECN_CE, 1.0)
    assert t.wants_ack(1.0)
    assert (t.ect0, t.ect1, t.ce) == (1, 0, 1)


def test_ack_delay_measured_from_largest() -> None:
    t = AckTracker()
    t.on_packet(3, True, 0, 1.0)
    t.on_packet(1, True, 0, 1.5)
    assert t.ack_delay(1.75) == pytest.approx(0.75)


def test_acked_ack_trims_old_ranges() -> None:
    t = AckTracker()
    for pn in (0, 1, 2, 5, 6, 9):
        t.on_packet(pn, True, 0, 1.0)
    t.on_ack_acked(6)
    assert t.ranges() == [(9, 10)]
    assert t.is_duplicate(3)  # below the floor: drop
    assert not t.on_packet(4, True, 0, 1.0)
    t.on_ack_acked(100)  # never drops the newest packet
    assert t.ranges() == [(9, 10)]


def test_ranges_capped() -> None:
    t = AckTracker()
    for pn in range(0, 4 * MAX_ACK_RANGES, 2):
        t.on_packet(pn, True, 0, 1.0)
    assert len(t.ranges()) == MAX_ACK_RANGES
    assert t.ranges()[0] == (4 * MAX_ACK_RANGES - 2, 4 * MAX_ACK_RANGES - 1)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 300), min_size=1))
def test_tracker_ranges_round_trip_through_ack_frame(pns: set[int]) -> None:
    t = AckTracker()
    for pn in sorted(pns):
        t.on_packet(pn, True, 0, 0.0)
    ranges = t.ranges()
    w = Writer(4096)
    Ack(ranges, 3).encode(w)
    (frame,) = decode_frames(w.getvalue(), PACKET_ONE_RTT)
    assert isinstance(frame, Ack) and frame.ranges == ranges
    assert {x for a, b in ranges for x in range(a, b)} == pns
