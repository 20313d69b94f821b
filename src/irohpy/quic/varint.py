"""QUIC variable-length integers (RFC 9000 §16): a 2-bit length prefix, then 6, 14, 30 or 62 bits."""

from __future__ import annotations

from typing import Final

from irohpy.errors import QuicDecodeError

VARINT_MAX: Final = (1 << 62) - 1


def varint_size(value: int) -> int:
    """Bytes the shortest encoding of ``value`` takes."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    if value <= VARINT_MAX:
        return 8
    raise QuicDecodeError(f"{value} does not fit a QUIC varint")


def encode_varint(value: int) -> bytes:
    """The shortest encoding of ``value``; negative or >= 2**62 raises QuicDecodeError."""
    if value < 0:
        raise QuicDecodeError(f"{value} does not fit a QUIC varint")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise QuicDecodeError(f"{value} does not fit a QUIC varint")


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode the varint at ``offset``: ``(value, offset after it)``."""
    if offset >= len(data) or offset < 0:
        raise QuicDecodeError("truncated varint")
    first = data[offset]
    size = 1 << (first >> 6)
    end = offset + size
    if end > len(data):
        raise QuicDecodeError("truncated varint")
    if size == 1:
        return first, end
    return int.from_bytes(data[offset:end], "big") & ((1 << (8 * size - 2)) - 1), end
