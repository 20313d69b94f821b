"""DPLPMTUD: convergence to the path MTU, black-hole fallback, raise timer."""

from __future__ import annotations

import pytest

from irohpy.quic.pmtud import (
    BASE_MTU,
    BLACK_HOLE_THRESHOLD,
    MAX_PROBES,
    RAISE_INTERVAL,
    SEARCH_COMPLETE,
    SEARCH_GRANULARITY,
    Pmtud,
)


def _converge(p: Pmtud, path_mtu: int, now: float = 0.0) -> tuple[int, int]:
    """Drive probes over a path that drops datagrams above ``path_mtu``; (mtu, probes sent)."""
    probes = 0
    while True:
        size = p.poll_probe(now)
        if size == 0:
            return p.mtu, probes
        p.on_probe_sent()
        probes += 1
        if size <= path_mtu:
            p.on_probe_acked(size, now)
        else:
            p.on_probe_lost(size, now)
        assert probes < 100


def test_loopback_and_ethernet_reach_the_ceiling_with_one_probe() -> None:
    p = Pmtud()
    assert p.poll_probe(0.0) == 1452
    assert _converge(p, 1500) == (1452, 1)
    assert p.state == SEARCH_COMPLETE


@pytest.mark.parametrize("path_mtu", [1200, 1201, 1280, 1350, 1400, 1420, 1451])
def test_binary_search_converges_below_the_path_mtu(path_mtu: int) -> None:
    p = Pmtud(ceiling=1452)
    mtu, probes = _converge(p, path_mtu)
    assert path_mtu - SEARCH_GRANULARITY < mtu <= path_mtu
    # Each size that fails costs MAX_PROBES probes; a binary search over 252 bytes needs few.
    assert probes <= MAX_PROBES * 6 + 6


def test_configurable_ceiling_and_peer_limit() -> None:
    p = Pmtud(ceiling=9000)
    p.set_peer_max_udp_payload(1350)
    assert p.ceiling == 1350
    assert _converge(p, 9000)[0] == 1350
    q = Pmtud(ceiling=BASE_MTU)
    assert q.poll_probe(0.0) == 0 and q.mtu == BASE_MTU


def test_a_probe_in_flight_blocks_the_next() -> None:
    p = Pmtud()
    size = p.poll_probe(0.0)
    p.on_probe_sent()
    assert p.poll_probe(0.0) == 0
    p.on_probe_lost(size, 0.1)
    assert p.poll_probe(0.1) == size  # retried until MAX_PROBES losses


def test_black_hole_falls_back_and_searches_below() -> None:
    p = Pmtud()
    _converge(p, 1500)
    assert p.mtu == 1452
    # Regular packets: large ones acked, then the route changes and every large one is lost.
    p.on_packet_acked(10, 1452)
    for pn in range(11, 11 + BLACK_HOLE_THRESHOLD - 1):
        assert not p.on_packet_lost(pn, 1452, 5.0)
    # Small packets still get through; they do not reset the count.
    p.on_packet_acked(30, 1200)
    assert p.on_packet_lost(40, 1452, 5.0)
    assert p.mtu == BASE_MTU and p.black_holes == 1
    mtu, _ = _converge(p, 1300, 5.0)
    assert 1300 - SEARCH_GRANULARITY < mtu <= 1300


def test_random_losses_with_acks_between_are_not_a_black_hole() -> None:
    p = Pmtud()
    _converge(p, 1500)
    for pn in range(1000):
        if pn % 5 == 0:
            p.on_packet_lost(pn, 1452, 1.0)
        else:
            p.on_packet_acked(pn, 1452)
    assert p.mtu == 1452 and p.black_holes == 0


def test_raise_timer_retries_above() -> None:
    p = Pmtud()
    _converge(p, 1300)
    low = p.mtu
    assert p.poll_probe(1.0) == 0
    # The path got better; after the raise interval the search restarts at the ceiling.
    mtu, _ = _converge(p, 1500, RAISE_INTERVAL + 1.0)
    assert low < mtu == 1452


def test_pto_probes_shrink_and_stale_losses_do_not_retrigger() -> None:
    p = Pmtud()
    _converge(p, 1500)
    assert p.datagram_size(0) == p.datagram_size(1) == 1452
    assert p.datagram_size(2) == BASE_MTU
    for pn in range(BLACK_HOLE_THRESHOLD):
        p.on_packet_lost(pn, 1452, 1.0)
    assert p.black_holes == 1 and p.mtu == BASE_MTU
    # The rest of the old 1452-byte flight is declared lost afterwards: no second fallback.
    for pn in range(BLACK_HOLE_THRESHOLD, 100):
        assert not p.on_packet_lost(pn, 1452, 1.1)
    assert p.black_holes == 1 and p.high == 1452
