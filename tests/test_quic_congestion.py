"""CUBIC window curves, NewReno, and pacer timing."""

from __future__ import annotations

import pytest

from irohpy.quic.congestion import (
    CUBIC_BETA,
    CUBIC_C,
    Cubic,
    NewReno,
    Pacer,
    initial_window,
)

MSS = 1200


def test_initial_and_minimum_window() -> None:
    assert initial_window(1200) == 12000
    assert initial_window(1452) == 14520
    assert initial_window(9000) == 18000
    c = Cubic(MSS)
    assert c.window == 12000 and c.min_window == 2400


def test_slow_start_doubles_per_rtt() -> None:
    c = Cubic(MSS)
    for _ in range(3):
        c.on_ack(c.window, 0.0, 0.1, False)
    assert c.window == 12000 * 8


def _after_loss(w_max_packets: int, fast_convergence: bool = True) -> Cubic:
    c = Cubic(MSS, fast_convergence=fast_convergence)
    c.cwnd = float(w_max_packets * MSS)
    c.on_congestion(0.5, 1.0)
    return c


def test_reduction_is_beta_and_k_matches_rfc() -> None:
    c = _after_loss(100)
    assert c.cwnd == pytest.approx(70 * MSS)
    assert c.ssthresh == pytest.approx(70 * MSS)
    assert c.w_max == pytest.approx(100 * MSS)
    # The first ACK in congestion avoidance starts the epoch: K = cbrt((W_max - cwnd) / C).
    c.on_ack(MSS, 1.1, 0.1, False)
    k = ((100 - 70) / CUBIC_C) ** (1 / 3)
    assert c.k == pytest.approx(k)
    assert c.w_cubic(0.0) == pytest.approx(70 * MSS)
    assert c.w_cubic(k) == pytest.approx(100 * MSS)
    assert c.w_cubic(k + 1.0) == pytest.approx((100 + CUBIC_C) * MSS)


def _run_rtts(c: Cubic, srtt: float, seconds: float) -> list[tuple[float, float]]:
    """Feed one window of ACKs per RTT; return (time since the loss, window in datagrams)."""
    t = 1.0
    samples: list[tuple[float, float]] = []
    while t < 1.0 + seconds:
        acked = 0.0
        while acked < c.cwnd:
            c.on_ack(MSS, t, srtt, False)
            acked += MSS
        samples.append((t - 1.0, c.cwnd / MSS))
        t += srtt
    return samples


def test_window_follows_cubic_curve_concave_then_convex() -> None:
    c = _after_loss(100)
    srtt = 0.25  # long enough that CUBIC, not the Reno-friendly estimate, drives growth
    samples = _run_rtts(c, srtt, 10.0)
    k = c.k
    i_k = min(range(len(samples)), key=lambda i: abs(samples[i][0] - k))
    # Plateau at W_max around t = K, far above it later.
    assert 97 <= samples[i_k][1] <= 103
    assert samples[-1][1] > 150
    # Concave before K (growth slows toward W_max), convex after it (growth speeds up).
    assert samples[4][1] - samples[0][1] > samples[i_k][1] - samples[i_k - 4][1]
    assert samples[-1][1] - samples[-5][1] > samples[i_k + 4][1] - samples[i_k][1]
    # The window tracks W_cubic(t + RTT).
    for t, w in samples[2:]:
        assert w == pytest.approx(c.w_cubic(t + srtt) / MSS, rel=0.05)


def test_reno_friendly_region_at_short_rtt() -> None:
    c = _after_loss(100)
    samples = _run_rtts(c, 0.01, 2.0)
    t, w = samples[-1]
    # At 10 ms RTT, Reno's linear growth beats the cubic curve, and CUBIC follows Reno.
    assert w * MSS >= c.w_cubic(t)
    assert w == pytest.approx(c.w_est / MSS, rel=0.01)


def test_fast_convergence_lowers_w_max() -> None:
    c = _after_loss(100)
    c.on_congestion(1.5, 2.0)  # second loss before regaining W_max
    assert c.w_max == pytest.approx(70 * MSS * (1 + CUBIC_BETA) / 2)
    slow = _after_loss(100, fast_convergence=False)
    slow.on_congestion(1.5, 2.0)
    assert slow.w_max == pytest.approx(70 * MSS)


def test_one_reduction_per_recovery_period() -> None:
    c = _after_loss(100)
    c.on_congestion(0.9, 1.2)  # sent before recovery began at 1.0
    assert c.cwnd == pytest.approx(70 * MSS) and c.congestion_events == 1
    c.on_congestion(1.01, 1.3)  # ECN-CE or loss of a packet sent during recovery: new event
    assert c.cwnd == pytest.approx(49 * MSS) and c.congestion_events == 2


def test_app_limited_does_not_grow_or_jump() -> None:
    c = _after_loss(100)
    c.on_ack(MSS, 1.1, 0.05, False)
    before = c.cwnd
    for i in range(100):
        c.on_ack(MSS, 1.2 + i * 0.1, 0.05, True)
    assert c.cwnd == before
    # Back from 10 s of app-limited time: the epoch moved, so the window does not leap to
    # W_cubic(10 s).
    c.on_ack(MSS, 11.2, 0.05, False)
    assert c.cwnd < before + 2 * MSS


def test_persistent_congestion_resets() -> None:
    c = _after_loss(100)
    c.on_persistent_congestion(2.0)
    assert c.cwnd == c.min_window and c.epoch_start < 0


def test_newreno() -> None:
    r = NewReno(MSS)
    r.on_ack(12000, 0.1, 0.1, False)
    assert r.window == 24000
    r.on_congestion(0.05, 0.2)
    assert r.window == 12000
    r.on_ack(12000, 0.3, 0.1, False)  # congestion avoidance: one datagram per window
    assert r.window == 12000 + MSS
    r.on_ack(12000, 0.4, 0.1, True)
    assert r.window == 12000 + MSS


def test_pacer_burst_then_rate() -> None:
    p = Pacer(MSS)
    cwnd, srtt = 100 * MSS, 0.1
    rate = 1.25 * cwnd / srtt
    now = 0.0
    # 2 ms of a 100-datagram window at 100 ms is two datagrams: the burst is the minimum, ten.
    for _ in range(10):
        assert p.next_send_time(now, MSS, cwnd, srtt) == now
        p.on_sent(MSS)
    # Empty: the next time is when the next burst has refilled, not the next datagram.
    nxt = p.next_send_time(now, MSS, cwnd, srtt)
    assert nxt == pytest.approx(10 * MSS / rate)
    # Sending a full window at the paced rate takes cwnd / rate = srtt / 1.25, in bursts of ten.
    sent = 0
    t = nxt
    times = []
    while sent < cwnd - 10 * MSS:
        t = p.next_send_time(t, MSS, cwnd, srtt)
        times.append(t)
        p.on_sent(MSS)
        sent += MSS
    assert t == pytest.approx((cwnd - 10 * MSS) / rate, rel=0.02)
    assert len(set(times)) == 9


def test_pacer_burst_spans_two_milliseconds_of_the_window() -> None:
    for cwnd, srtt, burst in ((1000 * MSS, 0.01, 200), (1000 * MSS, 0.001, 256), (100 * MSS, 0.0001, 100)):
        p = Pacer(MSS)
        p.next_send_time(0.0, MSS, cwnd, srtt)
        p.on_sent(10 * MSS)
        # Idle for a long time: at most one burst goes out back to back.
        now = 100.0
        n = 0
        while p.next_send_time(now, MSS, cwnd, srtt) == now:
            p.on_sent(MSS)
            n += 1
        assert n == burst, (cwnd, srtt)


def test_pacer_small_window_still_sends() -> None:
    p = Pacer(MSS)
    assert p.next_send_time(0.0, MSS, 2 * MSS, 0.0) == 0.0
