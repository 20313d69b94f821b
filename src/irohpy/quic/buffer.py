"""Byte readers and writers for QUIC codecs: big-endian integers, varints, raw bytes.

``Reader`` walks an immutable ``bytes`` between two offsets and raises QuicDecodeError on any
overrun, so codecs built on it reject truncated input with a typed error and nothing else.
``Writer`` fills a preallocated ``bytearray`` of fixed capacity, reused packet after packet.
"""

from __future__ import annotations

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic.varint import VARINT_MAX


class Reader:
    """Cursor over ``data[start:end]``."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes, start: int = 0, end: int = -1) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end < 0 else min(end, len(data))

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        if pos < 0 or pos > self._end:
            raise QuicDecodeError("seek out of bounds")
        self._pos = pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def remaining(self) -> int:
        return self._end - self._pos

    def pull_uint8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise QuicDecodeError("truncated")
        self._pos = pos + 1
        return self._data[pos]

    def pull_uint16(self) -> int:
        pos = self._pos
        end = pos + 2
        if end > self._end:
            raise QuicDecodeError("truncated")
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def pull_uint32(self) -> int:
        pos = self._pos
        end = pos + 4
        if end > self._end:
            raise QuicDecodeError("truncated")
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def pull_uint64(self) -> int:
        pos = self._pos
        end = pos + 8
        if end > self._end:
            raise QuicDecodeError("truncated")
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def pull_varint(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise QuicDecodeError("truncated varint")
        data = self._data
        first = data[pos]
        kind = first >> 6
        if kind == 0:
            self._pos = pos + 1
            return first
        if kind == 1:
            if pos + 2 > self._end:
                raise QuicDecodeError("truncated varint")
            self._pos = pos + 2
            return ((first & 0x3F) << 8) | data[pos + 1]
        if kind == 2:
            if pos + 4 > self._end:
                raise QuicDecodeError("truncated varint")
            self._pos = pos + 4
            return int.from_bytes(data[pos : pos + 4], "big") & 0x3FFFFFFF
        if pos + 8 > self._end:
            raise QuicDecodeError("truncated varint")
        self._pos = pos + 8
        return int.from_bytes(data[pos : pos + 8], "big") & VARINT_MAX

    def pull_bytes(self, length: int) -> bytes:
        pos = self._pos
        end = pos + length
        if length < 0 or end > self._end:
            raise QuicDecodeError("truncated")
        self._pos = end
        return self._data[pos:end]

    def pull_rest(self) -> bytes:
        pos = self._pos
        self._pos = self._end
        return self._data[pos : self._end]

    def skip(self, length: int) -> None:
        end = self._pos + length
        if length < 0 or end > self._end:
            raise QuicDecodeError("truncated")
        self._pos = end


class Writer:
    """Appends into a preallocated buffer of ``capacity`` bytes; ``reset()`` reuses it.

    Writing past the capacity raises QuicError (INTERNAL_ERROR): callers size packets first.
    """

    __slots__ = ("_data", "_pos", "_capacity")

    def __init__(self, capacity: int) -> None:
        self._data = bytearray(capacity)
        self._pos = 0
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def buffer(self) -> bytearray:
        """The whole preallocated buffer (valid up to ``tell()``), for in-place edits."""
        return self._data

    def tell(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._capacity - self._pos

    def reset(self) -> None:
        self._pos = 0

    def restart(self, capacity: int) -> None:
        """Empty, and accept at most ``capacity`` bytes (up to the buffer's size) this time."""
        self._pos = 0
        size = len(self._data)
        self._capacity = capacity if capacity < size else size

    def seek(self, pos: int) -> None:
        if pos < 0 or pos > self._capacity:
            raise QuicError("seek out of bounds", error_code=QuicError.INTERNAL_ERROR)
        self._pos = pos

    def getvalue(self) -> bytes:
        return bytes(self._data[: self._pos])

    def _full(self) -> QuicError:
        return QuicError("buffer full", error_code=QuicError.INTERNAL_ERROR)

    def push_uint8(self, value: int) -> None:
        pos = self._pos
        if pos >= self._capacity:
            raise self._full()
        self._data[pos] = value
        self._pos = pos + 1

    def push_uint16(self, value: int) -> None:
        pos = self._pos
        end = pos + 2
        if end > self._capacity:
            raise self._full()
        self._data[pos:end] = value.to_bytes(2, "big")
        self._pos = end

    def push_uint32(self, value: int) -> None:
        pos = self._pos
        end = pos + 4
        if end > self._capacity:
            raise self._full()
        self._data[pos:end] = value.to_bytes(4, "big")
        self._pos = end

    def push_uint64(self, value: int) -> None:
        pos = self._pos
        end = pos + 8
        if end > self._capacity:
            raise self._full()
        self._data[pos:end] = value.to_bytes(8, "big")
        self._pos = end

    def push_varint(self, value: int) -> None:
        pos = self._pos
        if value < 0:
            raise QuicDecodeError(f"{value} does not fit a QUIC varint")
        if value < 0x40:
            if pos >= self._capacity:
                raise self._full()
            self._data[pos] = value
            self._pos = pos + 1
            return
        if value < 0x4000:
            end = pos + 2
            encoded = (value | 0x4000).to_bytes(2, "big")
        elif value < 0x40000000:
            end = pos + 4
            encoded = (value | 0x80000000).to_bytes(4, "big")
        elif value <= VARINT_MAX:
            end = pos + 8
            encoded = (value | 0xC000000000000000).to_bytes(8, "big")
        else:
            raise QuicDecodeError(f"{value} does not fit a QUIC varint")
        if end > self._capacity:
            raise self._full()
        self._data[pos:end] = encoded
        self._pos = end

    def push_bytes(self, value: bytes) -> None:
        pos = self._pos
        end = pos + len(value)
        if end > self._capacity:
            raise self._full()
        self._data[pos:end] = value
        self._pos = end

    def push_zeros(self, length: int) -> None:
        """PADDING: ``length`` zero bytes."""
        pos = self._pos
        end = pos + length
        if length < 0 or end > self._capacity:
            raise self._full()
        self._data[pos:end] = bytes(length)
        self._pos = end
