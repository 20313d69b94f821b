"""The per-sender datagram meter for relayed batches (irohpy.relay.recv_limits)."""

from __future__ import annotations

from irohpy.base.keys import SecretKey
from irohpy.relay.recv_limits import DatagramMeter, RelayRecvLimits


def test_segments_refuses_tiny_batches_and_counts_the_rest() -> None:
    meter = DatagramMeter(RelayRecvLimits(min_segment_size=21))
    assert meter.segments(64_000, None) == 1
    assert meter.segments(64_000, 1) is None
    assert meter.segments(64_000, 20) is None
    assert meter.segments(64_000, 21) == 3048
    assert meter.segments(2_401, 1200) == 3


def test_each_sender_has_its_own_bucket_refilled_over_time() -> None:
    meter = DatagramMeter(RelayRecvLimits(datagrams_per_second=1000, burst=100))
    a, b = SecretKey.generate().public(), SecretKey.generate().public()
    assert meter.admit(a, 150, now=0.0) == 100
    assert meter.admit(a, 10, now=0.0) == 0
    assert meter.admit(b, 50, now=0.0) == 50
    assert meter.admit(a, 100, now=0.05) == 50
    assert meter.admit(a, 500, now=10.0) == 100
    assert meter.dropped == 50 + 10 + 50 + 400


def test_tracked_senders_are_bounded() -> None:
    meter = DatagramMeter(RelayRecvLimits(max_tracked_senders=8))
    for _ in range(100):
        meter.admit(SecretKey.generate().public(), 1, now=0.0)
    assert len(meter._buckets) == 8
