"""RFC 9002 loss detection, RTT estimation and PTO, on scenarios from the RFC."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.quic.congestion import NewReno
from irohpy.quic.errors import AckError
from irohpy.quic.recovery import (
    APPLICATION,
    GRANULARITY,
    HANDSHAKE,
    INF,
    INITIAL,
    TIMEOUT_LOSS,
    TIMEOUT_NONE,
    TIMEOUT_PTO,
    Recovery,
    RttEstimator,
    SentPacket,
)


def _recovery(is_server: bool = False, confirmed: bool = True) -> Recovery:
    r = Recovery(is_server=is_server, cc=NewReno(1200), max_ack_delay=0.025)
    if confirmed:
        r.on_handshake_confirmed()
    return r


def _send(r: Recovery, pn: int, t: float, space: int = APPLICATION, size: int = 1200, **kw: bool) -> None:
    r.on_packet_sent(space, SentPacket(pn, t, size, kw.get("eliciting", True), True, None, kw.get("probe", False)))


def _pns(packets: list[SentPacket]) -> list[int]:
    return sorted(p.pn for p in packets)


def test_rtt_first_sample_and_smoothing() -> None:
    # RFC 9002 §5.3: first sample sets smoothed = latest, rttvar = latest / 2.
    rtt = RttEstimator()
    assert rtt.smoothed == pytest.approx(0.333)
    rtt.update(0.1, 0.0, 1.0)
    assert (rtt.min, rtt.smoothed, rtt.var) == (0.1, 0.1, 0.05)
    # 0.13 with 0.02 ack delay: adjusted 0.11 (since 0.13 >= min + delay).
    rtt.update(0.13, 0.02, 2.0)
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.11)
    assert rtt.var == pytest.approx(0.75 * 0.05 + 0.25 * 0.01)
    # An ack delay that would push the sample below min_rtt is not subtracted.
    rtt.update(0.105, 0.05, 3.0)
    assert rtt.latest == 0.105 and rtt.min == 0.1
    assert rtt.pto_base() == pytest.approx(rtt.smoothed + 4 * rtt.var)


def test_ack_delay_capped_after_confirmation_and_ignored_in_initial() -> None:
    r = _recovery()
    _send(r, 0, 0.0)
    r.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)
    _send(r, 1, 1.0)
    r.on_ack_received(APPLICATION, [(1, 2)], 0.5, 1.2)  # delay capped to 25 ms
    assert r.rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.175)
    r2 = _recovery(confirmed=False)
    _send(r2, 0, 0.0, INITIAL)
    r2.on_ack_received(INITIAL, [(0, 1)], 0.0, 0.1)
    _send(r2, 1, 1.0, INITIAL)
    r2.on_ack_received(INITIAL, [(1, 2)], 0.05, 1.2)  # Initial: ack delay ignored
    assert r2.rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_no_rtt_sample_without_newly_acked_largest() -> None:
    r = _recovery()
    _send(r, 0, 0.0)
    _send(r, 1, 0.0)
    r.on_ack_received(APPLICATION, [(1, 2)], 0.0, 0.1)
    assert r.rtt.latest == pytest.approx(0.1)
    r.on_ack_received(APPLICATION, [(0, 2)], 0.0, 5.0)  # largest (1) not newly acked
    assert r.rtt.latest == pytest.approx(0.1)
    r.on_packet_sent(APPLICATION, SentPacket(2, 6.0, 50, False, True, None))
    r.on_ack_received(APPLICATION, [(2, 3)], 0.0, 9.0)  # only non-ack-eliciting
    assert r.rtt.latest == pytest.approx(0.1)


def test_ack_of_unsent_packet_is_typed_error() -> None:
    r = _recovery()
    _send(r, 0, 0.0)
    with pytest.raises(AckError):
        r.on_ack_received(APPLICATION, [(0, 2)], 0.0, 0.1)
    with pytest.raises(AckError):
        r.on_ack_received(HANDSHAKE, [(0, 1)], 0.0, 0.1)


def test_packet_threshold_then_time_threshold() -> None:
    r = _recovery()
    for pn in range(5):
        _send(r, pn, pn * 0.001)
    assert r.bytes_in_flight == 6000
    r.on_ack_received(APPLICATION, [(4, 5)], 0.0, 0.1)
    # 4 - 3 = 1: packets 0 and 1 are three or more behind; 2 and 3 wait for the timer.
    assert _pns(r.acked) == [4] and _pns(r.lost) == [0, 1]
    assert r.bytes_in_flight == 2400
    loss_delay = 9 / 8 * r.rtt.smoothed
    deadline = r.loss_deadline()
    assert deadline == pytest.approx(0.002 + loss_delay)
    assert r.on_timeout(deadline - 1e-6) == TIMEOUT_NONE
    assert r.on_timeout(deadline) == TIMEOUT_LOSS
    assert _pns(r.lost) == [2, 3] or _pns(r.lost) == [2]
    r.on_timeout(r.loss_deadline())
    assert r.bytes_in_flight == 0
    # One congestion event for the whole episode: all lost packets predate recovery start.
    assert r.cc.congestion_events == 1


def test_pto_deadline_backoff_and_probes() -> None:
    r = _recovery()
    _send(r, 0, 0.0)
    r.on_ack_received(APPLICATION, [(0, 1)], 0.0, 0.1)
    srtt, var = r.rtt.smoothed, r.rtt.var
    _send(r, 1, 1.0)
    pto = srtt + max(4 * var, GRANULARITY) + 0.025
    assert r.loss_deadline() == pytest.approx(1.0 + pto)
    assert r.on_timeout(1.0 + pto) == TIMEOUT_PTO
    assert r.pto_space == APPLICATION and r.probes == 2 and r.pto_count == 1
    # Probes ignore the congestion window.
    r.cc.cwnd = 0.0
    assert r.send_budget() > 0
    _send(r, 2, 1.0 + pto)
    _send(r, 3, 1.0 + pto)
    assert r.probes == 0 and r.send_budget() == 0
    assert r.loss_deadline() == pytest.approx(1.0 + pto + 2 * pto)
    r.on_ack_received(APPLICATION, [(3, 4)], 0.0, 1.0 + pto + 0.1)
    assert r.pto_count == 0


def test_application_pto_waits_for_handshake_confirmation() -> None:
    r = _recovery(confirmed=False)
    r.has_handshake_keys = True
    _send(r, 0, 0.0, HANDSHAKE)
    _send(r, 0, 0.5, APPLICATION)
    base = r.rtt.pto_base()
    # Only the Handshake packet arms the PTO, without max_ack_delay.
    assert r.loss_deadline() == pytest.approx(base)
    assert r.on_timeout(base) == TIMEOUT_PTO and r.pto_space == HANDSHAKE


def test_client_anti_deadlock_pto() -> None:
    r = _recovery(confirmed=False)
    _send(r, 0, 0.0, INITIAL)
    r.on_ack_received(INITIAL, [(0, 1)], 0.0, 0.1)
    # Nothing in flight, but the server has not validated us: keep a PTO running.
    assert r.loss_deadline() == pytest.approx(0.1 + r.rtt.pto_base())
    r.has_handshake_keys = True
    assert r.on_timeout(1.0) == TIMEOUT_PTO and r.pto_space == HANDSHAKE
    assert r.loss_deadline() == pytest.approx(1.0 + 2 * r.rtt.pto_base())


def test_server_amplification_limit_blocks_and_disarms() -> None:
    r = _recovery(is_server=True, confirmed=False)
    r.on_datagram_received(1200)
    assert r.amplification_budget() == 3600
    _send(r, 0, 0.0, INITIAL)
    r.on_datagram_sent(3600)
    assert r.send_budget() == 0
    assert r.loss_deadline() == INF
    r.on_datagram_received(100)
    assert r.amplification_budget() == 300
    assert r.loss_deadline() < INF
    r.address_validated = True
    assert r.amplification_budget() > 1 << 40


def test_discard_space_forgets_packets_and_resets_backoff() -> None:
    r = _recovery(confirmed=False)
    _send(r, 0, 0.0, INITIAL)
    _send(r, 1, 0.0, INITIAL)
    r.pto_count = 3
    r.discard_space(INITIAL)
    assert r.bytes_in_flight == 0 and r.pto_count == 0
    r.on_ack_received(INITIAL, [(0, 2)], 0.0, 0.1)
    assert r.acked == []


def test_persistent_congestion_collapses_window() -> None:
    # After RFC 9002 §7.6.3: smoothed_rtt 1 s, rttvar 0, max_ack_delay 0.
    r = Recovery(is_server=False, cc=NewReno(1200), max_ack_delay=0.0)
    r.on_handshake_confirmed()
    _send(r, 0, 0.0)
    r.on_ack_received(APPLICATION, [(0, 1)], 0.0, 1.0)
    r.rtt.smoothed, r.rtt.var = 1.0, 0.0
    for pn, t in ((1, 1.0), (2, 1.2), (3, 1.3), (4, 2.2), (5, 3.2), (6, 7.5), (7, 9.2)):
        _send(r, pn, t)
    _send(r, 8, 9.3)
    r.on_ack_received(APPLICATION, [(8, 9)], 0.0, 9.4)
    assert _pns(r.lost) == [1, 2, 3, 4, 5, 6]  # 7 not yet: too recent, too close
    assert r.persistent_congestion_events == 1
    # Collapsed to the minimum; packet 8, sent after, then grows it (recovery start is reset).
    assert r.cc.cwnd == r.cc.min_window + 1200
    assert r.rtt.min == pytest.approx(0.1)


def test_no_persistent_congestion_when_a_packet_in_between_was_acked() -> None:
    r = Recovery(is_server=False, cc=NewReno(1200), max_ack_delay=0.0)
    r.on_handshake_confirmed()
    _send(r, 0, 0.0)
    r.on_ack_received(APPLICATION, [(0, 1)], 0.0, 1.0)
    r.rtt.smoothed, r.rtt.var = 1.0, 0.0
    for pn, t in ((1, 1.0), (2, 2.0), (3, 5.0), (4, 9.0), (5, 9.1), (6, 9.2), (7, 9.3)):
        _send(r, pn, t)
    r.on_ack_received(APPLICATION, [(7, 8), (2, 3)], 0.0, 9.4)
    assert _pns(r.lost) == [1, 3, 4]
    assert r.persistent_congestion_events == 0


def test_lost_mtu_probe_is_not_congestion() -> None:
    r = _recovery()
    _send(r, 0, 0.0, size=1452, probe=True)
    for pn in range(1, 5):
        _send(r, pn, 0.0)
    cwnd = r.cc.cwnd
    r.on_ack_received(APPLICATION, [(1, 5)], 0.0, 0.1)
    assert _pns(r.lost) == [0] and r.lost[0].mtu_probe
    assert r.cc.congestion_events == 0 and r.cc.cwnd > cwnd
    assert r.bytes_in_flight == 0


def test_ecn_ce_is_one_congestion_event_per_recovery() -> None:
    r = _recovery()
    for pn in range(4):
        _send(r, pn, 0.0)
    r.on_ack_received(APPLICATION, [(0, 2)], 0.0, 0.1, ecn_ce=1)
    assert r.cc.congestion_events == 1
    r.on_ack_received(APPLICATION, [(0, 3)], 0.0, 0.1, ecn_ce=2)  # packet 2 sent before recovery
    assert r.cc.congestion_events == 1
    _send(r, 4, 0.2)
    r.on_ack_received(APPLICATION, [(0, 5)], 0.0, 0.3, ecn_ce=3)
    assert r.cc.congestion_events == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.integers(100, 1500), st.booleans()),
            st.tuples(st.just("ack"), st.integers(0, 60), st.integers(0, 8)),
            st.tuples(st.just("tick"), st.integers(1, 500), st.just(False)),
        ),
        max_size=80,
    )
)
def test_random_histories_keep_accounts(ops: list[tuple[str, int, object]]) -> None:
    r = _recovery()
    now = 0.0
    pn = 0
    outstanding: dict[int, int] = {}
    for op, a, b in ops:
        now += 0.001
        if op == "send":
            r.on_packet_sent(APPLICATION, SentPacket(pn, now, a, bool(b), True, None))
            outstanding[pn] = a
            pn += 1
        elif op == "ack":
            ranges = [(max(0, a - int(str(b))), a + 1)]
            try:
                r.on_ack_received(APPLICATION, ranges, 0.0, now)
            except AckError:
                assert a >= pn
                continue
            for p in r.acked + r.lost:
                assert outstanding.pop(p.pn) == p.size
        else:
            now += a / 1000
            if r.on_timeout(now) == TIMEOUT_LOSS:
                for p in r.lost:
                    assert outstanding.pop(p.pn) == p.size
        assert r.bytes_in_flight == sum(outstanding.values())
        assert r.cc.cwnd >= r.cc.min_window
        assert r.loss_deadline() >= 0
