"""The postcard codec (irohpy.base.postcard): postcard 1.x encodings and strict decoding."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError

# (bits, value, encoding) as postcard 1.x writes them.
VARINTS = [
    (16, 0, "00"),
    (16, 1, "01"),
    (16, 127, "7f"),
    (16, 128, "8001"),
    (16, 1024, "8008"),
    (16, 35269, "c59302"),
    (16, 65535, "ffff03"),
    (32, 300, "ac02"),
    (32, 2**32 - 1, "ffffffff0f"),
    (64, 2**63, "80808080808080808001"),
    (64, 2**64 - 1, "ffffffffffffffffff01"),
]


@pytest.mark.parametrize(("bits", "value", "encoded"), VARINTS)
def test_varint_known_answers(bits: int, value: int, encoded: str) -> None:
    assert Writer().varint(value, bits).finish().hex() == encoded
    reader = Reader(bytes.fromhex(encoded))
    assert reader.varint(bits) == value
    reader.finish()


@pytest.mark.parametrize(
    ("bits", "encoded", "match"),
    [
        (16, "8000", "overlong"),
        (64, "ff00", "overlong"),
        (16, "808000", "overlong"),
        (16, "ffff04", "does not fit"),  # 65535 + 65536
        (16, "ffffff01", "longer"),
        (32, "ffffffff10", "does not fit"),
        (32, "ffffffffff01", "longer"),
        (64, "ffffffffffffffffff02", "does not fit"),
        (64, "ffffffffffffffffffff01", "longer"),
        (64, "80", "truncated"),
        (64, "", "truncated"),
    ],
)
def test_bad_varints(bits: int, encoded: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        Reader(bytes.fromhex(encoded)).varint(bits)


@pytest.mark.parametrize(
    ("method", "value", "encoded"),
    [
        ("i16", 0, "00"),
        ("i16", -1, "01"),
        ("i16", 1, "02"),
        ("i16", -32768, "ffff03"),
        ("i16", 32767, "feff03"),
        ("i32", -2147483648, "ffffffff0f"),
        ("i64", -(2**63), "ffffffffffffffffff01"),
        ("i64", 2**63 - 1, "feffffffffffffffff01"),
        ("i8", -1, "ff"),
        ("i8", -128, "80"),
        ("i8", 127, "7f"),
    ],
)
def test_signed_known_answers(method: str, value: int, encoded: str) -> None:
    assert getattr(Writer(), method)(value).finish().hex() == encoded
    reader = Reader(bytes.fromhex(encoded))
    assert getattr(reader, method)() == value
    reader.finish()


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("u8", 256),
        ("u8", -1),
        ("u16", 65536),
        ("u32", 2**32),
        ("u64", 2**64),
        ("u64", -1),
        ("i8", 128),
        ("i16", -32769),
        ("i64", 2**63),
    ],
)
def test_writer_range_checks(method: str, value: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        getattr(Writer(), method)(value)


def test_writer_type_checks() -> None:
    with pytest.raises(TypeError):
        Writer().u32(True)
    with pytest.raises(TypeError):
        Writer().bool(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Writer().varint(1, 8)
    with pytest.raises(ValueError):
        Writer().fixed(b"abc", 4)


def test_composite_encoding() -> None:
    w = Writer()
    w.u8(7).bool(True).bool(False).str_("hé").bytes_(b"\x00\x01").fixed(b"\xaa\xbb", 2)
    w.option(None, w.u32).option(300, w.u32).seq(["a", "bc"], w.str_).variant(2)
    data = w.finish()
    assert data.hex() == "0701000368c3a9020001aabb0001ac0202016102626302"
    r = Reader(data)
    assert r.u8() == 7
    assert r.bool() is True and r.bool() is False
    assert r.str_() == "hé"
    assert r.bytes_() == b"\x00\x01"
    assert r.fixed(2) == b"\xaa\xbb"
    assert r.option(r.u32) is None
    assert r.option(r.u32) == 300
    assert r.seq(r.str_) == ["a", "bc"]
    assert r.variant() == 2
    assert r.remaining == 0
    r.finish()


@pytest.mark.parametrize(
    ("data", "read", "match"),
    [
        ("02", lambda r: r.bool(), "bool"),
        ("ff", lambda r: r.bool(), "bool"),
        ("02", lambda r: r.option(r.u8), "option tag"),
        ("02616263", lambda r: r.str_(), "trailing"),
        ("0461626364", lambda r: r.fixed(6), "truncated"),
        ("05616263", lambda r: r.bytes_(), "truncated"),
        ("02c328", lambda r: r.str_(), "UTF-8"),
        ("03eda080", lambda r: r.str_(), "UTF-8"),  # an encoded surrogate
        ("ffffffff0f", lambda r: r.seq(r.u8), "claims"),
        ("ffffffffffffffffff01", lambda r: r.seq(r.u8), "claims"),
        ("ffffffffffffffffff01", lambda r: r.bytes_(), "truncated"),
        ("0201", lambda r: r.seq(r.u8), "claims"),
        ("01ff", lambda r: r.seq(r.u16), "truncated"),
        ("", lambda r: r.u8(), "truncated"),
        ("", lambda r: r.i8(), "truncated"),
        ("0000", lambda r: r.u8(), "trailing"),
    ],
)
def test_reader_rejects(data: str, read: Callable[[Reader], object], match: str) -> None:
    reader = Reader(bytes.fromhex(data))
    with pytest.raises(DecodeError, match=match):
        read(reader)
        reader.finish()


def test_finish_reports_trailing_bytes() -> None:
    reader = Reader(b"\x01\x02\x03")
    assert reader.u8() == 1
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        reader.finish()


def test_reader_copies_its_input() -> None:
    buf = bytearray(b"\x05")
    reader = Reader(buf)
    buf[0] = 9
    assert reader.u8() == 5


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.text(),
    st.binary(),
    st.lists(st.integers(0, 255)),
    st.none() | st.booleans(),
)
def test_round_trip(
    u16: int, u32: int, u64: int, i64: int, text: str, blob: bytes, items: list[int], opt: bool | None
) -> None:
    w = Writer()
    w.u16(u16).u32(u32).u64(u64).i64(i64).str_(text).bytes_(blob).seq(items, w.u8).option(opt, w.bool)
    data = w.finish()
    r = Reader(data)
    assert (r.u16(), r.u32(), r.u64(), r.i64(), r.str_(), r.bytes_(), r.seq(r.u8), r.option(r.bool)) == (
        u16,
        u32,
        u64,
        i64,
        text,
        blob,
        items,
        opt,
    )
    r.finish()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12), st.sampled_from([16, 32, 64]))
def test_decoded_varints_re_encode_identically(data: bytes, bits: int) -> None:
    """Canonical-only decoding: anything accepted is exactly what the writer produces."""
    reader = Reader(data)
    try:
        value = reader.varint(bits)
    except DecodeError:
        return
    consumed = len(data) - reader.remaining
    assert Writer().varint(value, bits).finish() == data[:consumed]
