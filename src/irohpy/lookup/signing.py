"""The bytes an endpoint signs for pkarr and Mainline (BEP 44 mutable items, no salt)."""

from __future__ import annotations


def bep44_signable(seq: int, value: bytes) -> bytes:
    """``3:seqi<seq>e1:v<len>:<value>``: the bencoded (seq, v) pairs that BEP 44 signs."""
    return b"3:seqi%de1:v%d:" % (seq, len(value)) + value
