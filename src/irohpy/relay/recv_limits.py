"""What a relay client accepts from the relay: datagrams metered per sender (sans-IO).

A relay batch frame may cut its payload into datagrams of any segment size; at
size 1 one 64 KB frame is 64,000 datagrams, each costing the receiver a full
dispatch. So segments below the smallest QUIC packet are refused outright,
and every sender gets a token bucket counted in datagrams, not bytes: what
it can make us process is bounded whatever it packs into a frame.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from irohpy.base.keys import PublicKey
from irohpy.relay.protocol import MIN_SEGMENT_SIZE
DATAGRAMS_PER_SECOND = 80_000
DATAGRAM_BURST = 4_096
MAX_TRACKED_SENDERS = 1_024


@dataclass(frozen=True)
class RelayRecvLimits:
    """Per-sender limits on datagrams arriving through a relay.

    ``datagrams_per_second`` and ``burst`` are a token bucket per sending
    EndpointId; datagrams above it are dropped. 80,000/s is ~116 MB/s of 1452-byte
    datagrams: above what one relay path carries (20,000/s, ~29 MB/s, capped the path itself)
    and about what a receiver can process. Batch frames with a
    segment size below ``min_segment_size`` are dropped whole.
    """

    min_segment_size: int = MIN_SEGMENT_SIZE
    datagrams_per_second: float = DATAGRAMS_PER_SECOND
    burst: int = DATAGRAM_BURST
    max_tracked_senders: int = MAX_TRACKED_SENDERS


class DatagramMeter:
    """Token buckets of datagrams, one per sender, least recently heard senders forgotten first."""

    def __init__(self, limits: RelayRecvLimits) -> None:
        self.limits = limits
        self._buckets: OrderedDict[PublicKey, tuple[float, float]] = OrderedDict()
        self.dropped = 0

    def admit(self, sender: PublicKey, count: int, now: float) -> int:
        """How many of ``count`` datagrams from ``sender`` to process now; the rest are dropped."""
        limits = self.limits
        tokens, last = self._buckets.pop(sender, (float(limits.burst), now))
        tokens = min(float(limits.burst), tokens + (now - last) * limits.datagrams_per_second)
        allowed = min(count, int(tokens))
        self._buckets[sender] = (tokens - allowed, now)
        if len(self._buckets) > limits.max_tracked_senders:
            self._buckets.popitem(last=False)
        self.dropped += count - allowed
        return allowed

    def segments(self, payload_len: int, segment_size: int | None) -> int | None:
        """Datagrams a frame holds, or None when its segment size is refused."""
        if segment_size is None:
            return 1
        if segment_size < self.limits.min_segment_size:
            return None
        return -(-payload_len // segment_size)
