"""When to ping a relay client and when its silence means it is gone (sans-IO).

The server pings after ``interval`` + random jitter without any frame from the client; a
Ping must be answered within 3 x the last measured RTT, clamped to ``timeout``, or within
the upper bound of ``timeout`` before the first RTT sample (iroh-wire.md §4.6).
"""

from __future__ import annotations

import os
import random


class PingTracker:
    def __init__(self, interval: float, jitter: tuple[float, float], timeout: tuple[float, float],
                 now: float, rng: random.Random | None = None) -> None:
        self._interval = interval
        self._jitter = jitter
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._period = self._draw_period()
        self._next_ping = now + self._period
        self._outstanding: tuple[bytes, float] | None = None
        self._rtt: float | None = None

    def _draw_period(self) -> float:
        return self._interval + self._rng.uniform(*self._jitter)

    @property
    def pong_timeout(self) -> float:
        low, high = self._timeout
        return high if self._rtt is None else min(high, max(low, 3 * self._rtt))

    def on_activity(self, now: float) -> None:
        """Any frame from the client postpones the next ping."""
        if self._outstanding is None:
            self._next_ping = now + self._period

    def due(self, now: float) -> bytes | None:
        """The payload of a Ping to send now, if one is due."""
        if self._outstanding is not None or now < self._next_ping:
            return None
        data = os.urandom(8)
        self._outstanding = (data, now)
        return data

    def expired(self, now: float) -> bool:
        """True once the outstanding Ping went unanswered for too long."""
        return self._outstanding is not None and now >= self._outstanding[1] + self.pong_timeout

    def on_pong(self, data: bytes, now: float) -> None:
        """Record a Pong; one that does not answer the outstanding Ping is ignored."""
        if self._outstanding is None or data != self._outstanding[0]:
            return
        self._rtt = now - self._outstanding[1]
        self._outstanding = None
        self._period = self._draw_period()
        self._next_ping = now + self._period

    def next_wakeup(self) -> float:
        if self._outstanding is not None:
            return self._outstanding[1] + self.pong_timeout
        return self._next_ping
