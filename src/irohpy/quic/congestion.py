"""Congestion control: CUBIC (RFC 9438), NewReno (RFC 9002 §7) and a pacer.

Controllers are per path. They see acknowledged bytes in batches (one call per ACK frame, not
per packet) and congestion events; :mod:`irohpy.quic.recovery` decides which bytes count and
when an event happens. The window is kept as a float so that small per-ACK increments at large
windows are not rounded away.
"""

from __future__ import annotations

#: RFC 9002 §7.2: the initial window is ten datagrams, capped at max(14720, 2 datagrams).
INITIAL_WINDOW_PACKETS = 10
MIN_WINDOW_PACKETS = 2
LOSS_REDUCTION = 0.5

CUBIC_C = 0.4
CUBIC_BETA = 0.7
#: RFC 9438 §4.3: the Reno-friendly additive increase that matches Reno's average rate.
CUBIC_ALPHA = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)

NO_TIME = -1.0


def initial_window(max_datagram_size: int) -> int:
    return min(INITIAL_WINDOW_PACKETS * max_datagram_size, max(14720, 2 * max_datagram_size))


class CongestionController:
    """What recovery needs from a controller: a window, a recovery period, and three events."""

    __slots__ = ("cwnd", "ssthresh", "max_datagram_size", "recovery_start", "congestion_events")

    def __init__(self, max_datagram_size: int = 1200) -> None:
        self.max_datagram_size = max_datagram_size
        self.cwnd = float(initial_window(max_datagram_size))
        self.ssthresh = float("inf")
        self.recovery_start = NO_TIME
        self.congestion_events = 0

    @property
    def window(self) -> int:
        """Bytes that may be in flight."""
        return int(self.cwnd)

    @property
    def min_window(self) -> float:
        return float(MIN_WINDOW_PACKETS * self.max_datagram_size)

    def in_recovery(self, sent_time: float) -> bool:
        """A packet sent before the current recovery period began does not move the window."""
        return sent_time <= self.recovery_start

    def set_max_datagram_size(self, size: int) -> None:
        """The path MTU changed (PMTUD); windows are counted in datagrams of this size."""
        self.max_datagram_size = size
        if self.cwnd < self.min_window:
            self.cwnd = self.min_window

    def on_ack(self, acked_bytes: int, now: float, srtt: float, app_limited: bool) -> None:
        """``acked_bytes`` were newly acknowledged, all sent after the recovery period began."""
        raise NotImplementedError

    def on_congestion(self, sent_time: float, now: float) -> None:
        """A loss or an ECN-CE mark for a packet sent at ``sent_time``."""
        raise NotImplementedError

    def on_persistent_congestion(self, now: float) -> None:
        """RFC 9002 §7.6.2: collapse to the minimum window."""
        self.cwnd = self.min_window
        self.recovery_start = NO_TIME


class NewReno(CongestionController):
    """RFC 9002's reference controller; simple enough to check recovery against."""

    __slots__ = ()

    def on_ack(self, acked_bytes: int, now: float, srtt: float, app_limited: bool) -> None:
        if app_limited:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += acked_bytes
        else:
            self.cwnd += self.max_datagram_size * acked_bytes / self.cwnd

    def on_congestion(self, sent_time: float, now: float) -> None:
        if sent_time <= self.recovery_start:
            return
        self.congestion_events += 1
        self.recovery_start = now
        self.ssthresh = max(self.cwnd * LOSS_REDUCTION, self.min_window)
        self.cwnd = self.ssthresh


class Cubic(CongestionController):
    """CUBIC: window growth as a cubic function of time since the last reduction (RFC 9438).

    Slow start is standard (one datagram per datagram acknowledged). After a reduction, the
    window follows ``W_cubic(t) = C·(t − K)³ + W_max`` in datagrams, or the Reno-friendly
    estimate ``W_est`` when that is larger. Fast convergence releases bandwidth to new flows.
    While the sender is application-limited the window does not grow, and the epoch moves
    forward by the time spent limited so the curve does not jump afterwards.
    """

    __slots__ = ("w_max", "k", "epoch_start", "w_est", "app_limited_since", "fast_convergence")

    def __init__(self, max_datagram_size: int = 1200, fast_convergence: bool = True) -> None:
        super().__init__(max_datagram_size)
        self.w_max = 0.0
        self.k = 0.0
        self.epoch_start = NO_TIME
        self.w_est = 0.0
        self.app_limited_since = NO_TIME
        self.fast_convergence = fast_convergence

    def w_cubic(self, t: float) -> float:
        """The cubic target window in bytes, ``t`` seconds into the epoch."""
        d = t - self.k
        return CUBIC_C * d * d * d * self.max_datagram_size + self.w_max

    def on_ack(self, acked_bytes: int, now: float, srtt: float, app_limited: bool) -> None:
        if app_limited:
            if self.app_limited_since < 0.0:
                self.app_limited_since = now
            return
        if self.app_limited_since >= 0.0:
            if self.epoch_start >= 0.0:
                self.epoch_start += now - self.app_limited_since
            self.app_limited_since = NO_TIME
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            self.cwnd = cwnd + acked_bytes
            return
        mds = self.max_datagram_size
        if self.epoch_start < 0.0:
            self.epoch_start = now
            if cwnd < self.w_max:
                self.k = ((self.w_max - cwnd) / (CUBIC_C * mds)) ** (1.0 / 3.0)
            else:
                self.k = 0.0
                self.w_max = cwnd
            self.w_est = cwnd
        t = now - self.epoch_start
        target = self.w_cubic(t + srtt)
        if target < cwnd:
            target = cwnd
        elif target > 1.5 * cwnd:
            target = 1.5 * cwnd
        alpha = 1.0 if self.w_est >= self.w_max else CUBIC_ALPHA
        self.w_est += alpha * mds * acked_bytes / cwnd
        if self.w_cubic(t) < self.w_est:
            if self.w_est > cwnd:
                self.cwnd = self.w_est
        else:
            self.cwnd = cwnd + (target - cwnd) * acked_bytes / cwnd

    def on_congestion(self, sent_time: float, now: float) -> None:
        if sent_time <= self.recovery_start:
            return
        self.congestion_events += 1
        self.recovery_start = now
        self.epoch_start = NO_TIME
        cwnd = self.cwnd
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + CUBIC_BETA) / 2.0
        else:
            self.w_max = cwnd
        self.ssthresh = max(cwnd * CUBIC_BETA, self.min_window)
        self.cwnd = self.ssthresh

    def on_persistent_congestion(self, now: float) -> None:
        super().on_persistent_congestion(now)
        self.epoch_start = NO_TIME


#: Pacing runs 25% above cwnd/srtt so that pacing itself never limits the window (RFC 9002 §7.7).
PACING_GAIN = 1.25
#: A burst is what the window allows in this long (as quinn's pacer: user-space timers are about
#: a millisecond coarse), from ten to 256 datagrams; never more than the window.
BURST_INTERVAL = 0.002
BURST_PACKETS = 10
MAX_BURST_PACKETS = 256


class Pacer:
    """A token bucket filled at ``1.25 · cwnd / srtt`` bytes per second, one burst deep.

    :meth:`next_send_time` says when a datagram of a given size may leave; a driver sends
    everything whose time has come and sleeps until the next one, so a full window never
    leaves as one line-rate burst. Once the bucket is empty the next time is when a whole
    burst has refilled, not one datagram: every wake-up costs a timer and an engine pass, and
    a pass that sends one datagram spends most of its time on the pass.
    """

    __slots__ = ("tokens", "last", "max_datagram_size")

    def __init__(self, max_datagram_size: int = 1200) -> None:
        self.max_datagram_size = max_datagram_size
        self.tokens = float(BURST_PACKETS * max_datagram_size)
        self.last = NO_TIME

    def capacity(self, size: int, cwnd: float, srtt: float) -> float:
        """The bucket's depth: one burst (see :data:`BURST_INTERVAL`), at least ``size``."""
        mds = self.max_datagram_size
        capacity = cwnd * BURST_INTERVAL / srtt
        if capacity < BURST_PACKETS * mds:
            capacity = float(BURST_PACKETS * mds)
        elif capacity > MAX_BURST_PACKETS * mds:
            capacity = float(MAX_BURST_PACKETS * mds)
        if capacity > cwnd:
            capacity = cwnd if cwnd > 2 * mds else 2.0 * mds
        return capacity if capacity >= size else float(size)

    def next_send_time(self, now: float, size: int, cwnd: float, srtt: float) -> float:
        """The earliest time (``now`` or later) a datagram of ``size`` bytes may be sent."""
        if srtt < 1e-6:
            srtt = 1e-6
        rate = PACING_GAIN * cwnd / srtt
        capacity = self.capacity(size, cwnd, srtt)
        if self.last >= 0.0 and now > self.last:
            self.tokens += (now - self.last) * rate
        self.last = now if now > self.last else self.last
        if self.tokens > capacity:
            self.tokens = capacity
        if self.tokens >= size:
            return now
        return now + (capacity - self.tokens) / rate

    def on_sent(self, size: int) -> None:
        """A datagram left: take its bytes from the bucket (it may go negative after a probe)."""
        self.tokens -= size
