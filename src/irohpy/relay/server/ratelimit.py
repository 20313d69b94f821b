"""A token bucket for a client's receive direction (sans-IO: the caller passes the time).

As in iroh-relay, the limit delays reading instead of dropping: a frame is always taken,
the bucket may go into debt for it, and the reader then waits until the debt is repaid.
While it waits nothing more is read from that client, so TCP pushes the cost back to the
sender and every frame type (datagrams, pings, anything) is held to the same budget.
"""

from __future__ import annotations


class TokenBucket:
    """Up to ``burst`` bytes at once, refilled at ``rate`` bytes per second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, n: int, now: float) -> float:
        """Spend ``n`` bytes; the seconds to wait before reading the next frame (0.0: none)."""
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate) - n
        return 0.0 if self._tokens > 0 else -self._tokens / self._rate
