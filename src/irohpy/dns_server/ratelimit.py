"""Per-IP token buckets for PUTs (sans-IO: the caller passes the time)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INTERVAL = 4.0
DEFAULT_BURST = 2
_PRUNE_AT = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class PutRateLimiter:
    """``burst`` requests at once per IP, then one every ``interval`` seconds (iroh-dns-server's defaults)."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, burst: int = DEFAULT_BURST) -> None:
        if interval <= 0 or burst <= 0:
            raise ValueError("interval and burst must be positive")
        self._interval = interval
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, ip: str, now: float) -> bool:
        """Take one token from ``ip``'s bucket if it has one."""
        if len(self._buckets) >= _PRUNE_AT:
            self._prune(now)
        bucket = self._buckets.setdefault(ip, _Bucket(self._burst, now))
        bucket.tokens = min(self._burst, bucket.tokens + max(0.0, now - bucket.at) / self._interval)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _prune(self, now: float) -> None:
        """Forget full buckets: they are the same as new ones, and keep memory bounded."""
        full_after = self._burst * self._interval
        self._buckets = {ip: b for ip, b in self._buckets.items() if now - b.at < full_after}
