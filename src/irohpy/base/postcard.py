"""A small sans-IO codec for postcard, the serde format of iroh's tickets and protocols.

Encoding follows postcard 1.x exactly. Decoding is stricter than postcard in two ways: a
varint must use its shortest form, and ``Reader.finish()`` refuses trailing bytes (which
``postcard::from_bytes`` ignores). Rust never writes either, and refusing them keeps one byte
string per value, so parsing then re-encoding is byte-identical.

Every decoding failure raises :class:`~irohpy.errors.DecodeError`, and no length or count
read from the input is trusted beyond the bytes that remain.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from typing import TypeVar

from irohpy.errors import DecodeError

T = TypeVar("T")

_VARINT_BITS = (16, 32, 64)


def _check_unsigned(value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{value} does not fit in u{bits}")


def _check_signed(value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, not {type(value).__name__}")
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError(f"{value} does not fit in i{bits}")


class Writer:
    """Appends postcard encodings to a buffer; methods return the writer so calls can chain."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def u8(self, value: int) -> Writer:
        _check_unsigned(value, 8)
        self._buf.append(value)
        return self

    def bool(self, value: builtins.bool) -> Writer:
        if not isinstance(value, bool):
            raise TypeError(f"expected a bool, not {type(value).__name__}")
        self._buf.append(1 if value else 0)
        return self

    def varint(self, value: int, bits: int = 64) -> Writer:
        """Unsigned LEB128, as postcard writes every u16/u32/u64/usize."""
        if bits not in _VARINT_BITS:
            raise ValueError(f"varints are 16, 32 or 64 bits wide, not {bits}")
        _check_unsigned(value, bits)
        while value >= 0x80:
            self._buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self._buf.append(value)
        return self

    def u16(self, value: int) -> Writer:
        return self.varint(value, 16)

    def u32(self, value: int) -> Writer:
        return self.varint(value, 32)

    def u64(self, value: int) -> Writer:
        return self.varint(value, 64)

    usize = u64

    def zigzag(self, value: int, bits: int = 64) -> Writer:
        """A signed integer as postcard writes i16/i32/i64: zigzag, then LEB128."""
        if bits not in _VARINT_BITS:
            raise ValueError(f"zigzag varints are 16, 32 or 64 bits wide, not {bits}")
        _check_signed(value, bits)
        return self.varint((value << 1) ^ (value >> (bits - 1)), bits)

    def i8(self, value: int) -> Writer:
        _check_signed(value, 8)
        self._buf.append(value & 0xFF)
        return self

    def i16(self, value: int) -> Writer:
        return self.zigzag(value, 16)

    def i32(self, value: int) -> Writer:
        return self.zigzag(value, 32)

    def i64(self, value: int) -> Writer:
        return self.zigzag(value, 64)

    def fixed(self, data: bytes, n: int) -> Writer:
        """A ``[u8; n]``: exactly n raw bytes, no length."""
        if len(data) != n:
            raise ValueError(f"expected exactly {n} bytes, got {len(data)}")
        self._buf += data
        return self

    def bytes_(self, data: bytes) -> Writer:
        """A byte string: varint length, then the bytes."""
        self.usize(len(data))
        self._buf += data
        return self

    def str_(self, text: str) -> Writer:
        return self.bytes_(text.encode("utf-8"))

    def variant(self, index: int) -> Writer:
        """An enum variant index; the variant's payload follows."""
        return self.u32(index)

    def option(self, value: T | None, fn: Callable[[T], object]) -> Writer:
        if value is None:
            self._buf.append(0)
        else:
            self._buf.append(1)
            fn(value)
        return self

    def seq(self, items: Iterable[T], fn: Callable[[T], object]) -> Writer:
        """A Vec, set or map: varint count, then each item written by ``fn``."""
        materialized = list(items)
        self.usize(len(materialized))
        for item in materialized:
            fn(item)
        return self

    def finish(self) -> bytes:
        return bytes(self._buf)


class Reader:
    """Reads postcard values from ``data`` in order; ``finish()`` insists nothing is left."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise DecodeError(
                f"truncated input: {what} needs {n} bytes at offset {self._pos}, {self.remaining} left"
            )
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self) -> int:
        return self._take(1, "u8")[0]

    def bool(self) -> builtins.bool:
        byte = self._take(1, "bool")[0]
        if byte > 1:
            raise DecodeError(f"invalid bool byte 0x{byte:02x} at offset {self._pos - 1}")
        return byte == 1

    def varint(self, bits: int = 64) -> int:
        if bits not in _VARINT_BITS:
            raise ValueError(f"varints are 16, 32 or 64 bits wide, not {bits}")
        start = self._pos
        max_len = (bits + 6) // 7
        value = 0
        for i in range(max_len):
            byte = self._take(1, f"u{bits} varint")[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise DecodeError(f"non-canonical (overlong) varint at offset {start}")
                if value >> bits:
                    raise DecodeError(f"varint at offset {start} does not fit in u{bits}")
                return value
        raise DecodeError(f"varint at offset {start} is longer than a u{bits} allows")

    def u16(self) -> int:
        return self.varint(16)

    def u32(self) -> int:
        return self.varint(32)

    def u64(self) -> int:
        return self.varint(64)

    usize = u64

    def zigzag(self, bits: int = 64) -> int:
        if bits not in _VARINT_BITS:
            raise ValueError(f"zigzag varints are 16, 32 or 64 bits wide, not {bits}")
        raw = self.varint(bits)
        return (raw >> 1) ^ -(raw & 1)

    def i8(self) -> int:
        byte = self._take(1, "i8")[0]
        return byte - 0x100 if byte & 0x80 else byte

    def i16(self) -> int:
        return self.zigzag(16)

    def i32(self) -> int:
        return self.zigzag(32)

    def i64(self) -> int:
        return self.zigzag(64)

    def fixed(self, n: int) -> bytes:
        return self._take(n, f"[u8; {n}]")

    def bytes_(self) -> bytes:
        length = self.usize()
        return self._take(length, "byte string")

    def str_(self) -> str:
        start = self._pos
        raw = self.bytes_()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"string at offset {start} is not valid UTF-8") from None

    def variant(self) -> int:
        return self.u32()

    def option(self, fn: Callable[[], T]) -> T | None:
        tag = self._take(1, "option tag")[0]
        if tag == 0:
            return None
        if tag == 1:
            return fn()
        raise DecodeError(f"invalid option tag 0x{tag:02x} at offset {self._pos - 1}")

    def seq(self, fn: Callable[[], T]) -> list[T]:
        """Read a count, then that many items with ``fn``.

        A count above the remaining byte count is refused up front, so a forged count cannot
        make us loop or allocate: every item this codec's users read takes at least one byte.
        """
        start = self._pos
        count = self.usize()
        if count > self.remaining:
            raise DecodeError(
                f"sequence at offset {start} claims {count} items but only {self.remaining} bytes remain"
            )
        return [fn() for _ in range(count)]

    def finish(self) -> None:
        if self.remaining:
            raise DecodeError(f"{self.remaining} trailing bytes after the value at offset {self._pos}")
