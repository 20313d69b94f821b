"""A 10 MB transfer through irohpy.quic's transport cores over a seeded lossy link.

Deterministic (simulated time, fixed seeds): the assertions are about intact delivery and about
simulated time-to-complete, never about the machine's speed. Run with ``-s`` to see the times.
"""

from __future__ import annotations

import pytest

from tests.quic_sim import LinkConfig, transfer

SIZE = 10_000_000

#: loss rate -> generous ceiling on simulated seconds (100 Mbit/s, 20 ms RTT). Loss-based
#: congestion control at random loss p runs at about MSS/RTT * 1.22/sqrt(p).
CASES = [(0.0, 3.0), (0.01, 40.0), (0.05, 120.0), (0.20, 500.0)]


@pytest.mark.parametrize(("loss", "ceiling"), CASES, ids=[f"loss{int(c[0] * 100)}" for c in CASES])
def test_ten_megabytes_arrive_intact(loss: float, ceiling: float) -> None:
    link = LinkConfig(loss=loss, reorder=0.02, reorder_delay=0.001, duplicate=0.01)
    result = transfer(SIZE, link, seed=20261202)
    print(
        f"\nloss {loss:.0%}: {result.seconds:.2f} s simulated, "
        f"{SIZE / result.seconds / 1e6:.2f} MB/s, {result.stats.sent} datagrams, "
        f"{result.packets_lost} dropped, {result.stats.duplicated} duplicated, "
        f"{result.congestion_events} congestion events, MTU {result.final_mtu}"
    )
    assert result.intact
    assert 0.0 < result.seconds < ceiling
    assert result.final_mtu == 1452


def test_pmtud_finds_a_smaller_path_mtu() -> None:
    link = LinkConfig(mtu=1350, queue_bytes=250_000)
    result = transfer(6_000_000, link, seed=7)
    assert result.intact
    assert 1330 < result.final_mtu <= 1350
    assert result.stats.dropped_mtu >= 3  # the oversized probes


def test_black_hole_mid_transfer_falls_back_and_recovers() -> None:
    # The route changes at 0.3 s: datagrams above 1300 bytes vanish from then on.
    link = LinkConfig(queue_bytes=250_000, mtu_change_at=0.3, mtu_later=1300)
    result = transfer(6_000_000, link, seed=11)
    assert result.intact
    assert result.black_holes >= 1
    assert 1280 < result.final_mtu <= 1300


def test_same_seed_same_outcome() -> None:
    link = LinkConfig(loss=0.05, reorder=0.05, duplicate=0.05)
    a = transfer(300_000, link, seed=3)
    b = transfer(300_000, link, seed=3)
    assert a.intact and b.intact
    assert a.seconds == b.seconds and a.stats == b.stats
