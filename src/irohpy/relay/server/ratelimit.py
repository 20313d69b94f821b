"""A token bucket for a client's receive direction (sans-IO: the caller passes the time)."""

from __future__ import annotations


class TokenBucket:
    """Up to ``burst`` bytes at once, refilled at ``rate`` bytes per second.

    A full bucket lets any one frame through and goes into debt for it: a frame larger than
    the burst would otherwise be refused forever, and the debt still holds the average rate.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def try_take(self, n: int, now: float) -> bool:
        """Spend ``n`` bytes if the bucket allows it now."""
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= n or self._tokens >= self._burst:
            self._tokens -= n
            return True
        return False
