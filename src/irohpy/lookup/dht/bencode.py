"""Strict bencode (BEP 3), the encoding of every Mainline DHT message.

The decoder accepts exactly one canonical value: no leading zeros, no ``-0``, dictionary keys
sorted and unique, nothing after the value. Anything else raises :class:`BencodeError`, so a
datagram from the network can never raise anything but an :class:`IrohError`.
"""

from __future__ import annotations

from typing import Union

from irohpy.errors import BencodeError

Value = Union[int, bytes, list["Value"], dict[bytes, "Value"]]

MAX_DEPTH = 32
MAX_SIZE = 65_536
_MAX_INT_DIGITS = 64


def encode(value: Value) -> bytes:
    """Bencode ``value``; dictionary keys are sorted as the format requires."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError("value nested too deeply to encode")
    if isinstance(value, bool) or not isinstance(value, (int, bytes, list, tuple, dict)):
        raise BencodeError(f"cannot bencode a {type(value).__name__}")
    if isinstance(value, int):
        text = b"%d" % value
        if len(text) - (value < 0) > _MAX_INT_DIGITS:
            raise BencodeError(f"integer has more than {_MAX_INT_DIGITS} digits")
        out.append(b"i%se" % text)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        out.append(b"d")
        for key in sorted(value):
            if not isinstance(key, bytes):
                raise BencodeError("dictionary keys must be bytes")
            _encode(key, out, depth + 1)
            _encode(value[key], out, depth + 1)
        out.append(b"e")


def decode(data: bytes, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE) -> Value:
    """Decode exactly one strict bencoded value from ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError(f"expected bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > max_size:
        raise BencodeError(f"input of {len(raw)} bytes exceeds the limit of {max_size}")
    value, end = _Decoder(raw, max_depth).value(0, 0)
    if end != len(raw):
        raise BencodeError(f"{len(raw) - end} trailing bytes after the value")
    return value


class _Decoder:
    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.max_depth = max_depth

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        if pos >= len(self.data):
            raise BencodeError("input ends where a value should start")
        lead = self.data[pos]
        if lead == ord("i"):
            return self.integer(pos)
        if ord("0") <= lead <= ord("9"):
            return self.string(pos)
        if depth >= self.max_depth:
            raise BencodeError(f"nesting deeper than {self.max_depth}")
        if lead == ord("l"):
            items: list[Value] = []
            pos += 1
            while self._peek(pos) != ord("e"):
                item, pos = self.value(pos, depth + 1)
                items.append(item)
            return items, pos + 1
        if lead == ord("d"):
            result: dict[bytes, Value] = {}
            last: bytes | None = None
            pos += 1
            while self._peek(pos) != ord("e"):
                if not ord("0") <= self.data[pos] <= ord("9"):
                    raise BencodeError("dictionary key is not a byte string")
                key, pos = self.string(pos)
                if last is not None and key <= last:
                    raise BencodeError("dictionary keys are not sorted and unique")
                result[key], pos = self.value(pos, depth + 1)
                last = key
            return result, pos + 1
        raise BencodeError(f"unexpected byte 0x{lead:02x} at offset {pos}")

    def _peek(self, pos: int) -> int:
        if pos >= len(self.data):
            raise BencodeError("input ends inside a list or dictionary")
        return self.data[pos]

    def integer(self, pos: int) -> tuple[int, int]:
        end = self.data.find(b"e", pos + 1, pos + 3 + _MAX_INT_DIGITS)  # "i", "-", digits, "e"
        if end < 0:
            raise BencodeError("integer is unterminated or too long")
        text = self.data[pos + 1 : end]
        digits = text[1:] if text.startswith(b"-") else text
        if len(digits) > _MAX_INT_DIGITS:
            raise BencodeError("integer is unterminated or too long")
        if not digits or not digits.isdigit() or not digits.isascii():
            raise BencodeError("integer is not a decimal number")
        if (len(digits) > 1 and digits.startswith(b"0")) or text == b"-0":
            raise BencodeError("integer is not canonical (leading zero or -0)")
        return int(text), end + 1

    def string(self, pos: int) -> tuple[bytes, int]:
        colon = self.data.find(b":", pos, pos + 12)
        if colon < 0:
            raise BencodeError("string length is unterminated or too long")
        digits = self.data[pos:colon]
        if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
            raise BencodeError("string length is not canonical")
        length = int(digits)
        start = colon + 1
        if start + length > len(self.data):
            raise BencodeError("string runs past the end of the input")
        return self.data[start : start + length], start + length
