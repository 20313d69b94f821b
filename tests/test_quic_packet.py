"""irohpy.quic.packet, varint and buffer: headers against aioquic's parser and builders, packet
numbers (RFC 9000 Appendix A), coalescing, Version Negotiation, stateless resets, fuzzing."""

from __future__ import annotations

import os

import pytest
from aioquic.buffer import Buffer
from aioquic.quic import packet as aq
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic import packet
from irohpy.quic.buffer import Reader, Writer
from irohpy.quic.crypto import AES_128_GCM_SHA256, HeaderProtection
from irohpy.quic.varint import VARINT_MAX, decode_varint, encode_varint, varint_size

AQ_TYPES = {
    packet.PACKET_INITIAL: aq.QuicPacketType.INITIAL,
    packet.PACKET_ZERO_RTT: aq.QuicPacketType.ZERO_RTT,
    packet.PACKET_HANDSHAKE: aq.QuicPacketType.HANDSHAKE,
    packet.PACKET_RETRY: aq.QuicPacketType.RETRY,
    packet.PACKET_ONE_RTT: aq.QuicPacketType.ONE_RTT,
    packet.PACKET_VERSION_NEGOTIATION: aq.QuicPacketType.VERSION_NEGOTIATION,
}


# -- varints and buffers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        # RFC 9000 Appendix A.1
        (151_288_809_941_952_652, "c2197c5eff14e88c"),
        (494_878_333, "9d7f3e7d"),
        (15_293, "7bbd"),
        (37, "25"),
    ],
)
def test_varint_rfc_examples(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)
    assert Reader(bytes.fromhex(encoded)).pull_varint() == value
    w = Writer(8)
    w.push_varint(value)
    assert w.getvalue().hex() == encoded
    assert varint_size(value) == len(encoded) // 2


def test_non_minimal_varint_decodes() -> None:
    assert decode_varint(bytes.fromhex("4025")) == (37, 2)


@given(st.integers(0, VARINT_MAX))
def test_varint_round_trip_and_matches_aioquic(value: int) -> None:
    ours = encode_varint(value)
    buf = Buffer(capacity=8)
    buf.push_uint_var(value)
    assert ours == buf.data
    assert decode_varint(ours) == (value, len(ours))


@pytest.mark.parametrize("value", [-1, VARINT_MAX + 1])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(QuicDecodeError):
        encode_varint(value)
    with pytest.raises(QuicDecodeError):
        Writer(8).push_varint(value)


def test_writer_is_bounded_and_reusable() -> None:
    w = Writer(4)
    w.push_uint16(0x0102)
    w.push_uint8(3)
    with pytest.raises(QuicError):
        w.push_uint16(4)
    assert w.getvalue() == b"\x01\x02\x03"
    w.reset()
    w.push_uint32(0xAABBCCDD)
    assert w.getvalue() == bytes.fromhex("aabbccdd")
    # Reserve a field, write past it, then fill it in place (e.g. a long header's Length).
    w.reset()
    w.push_uint8(1)
    w.push_uint16(0)
    w.push_uint8(9)
    end = w.tell()
    w.seek(1)
    w.push_uint16(end)
    w.seek(end)
    assert w.getvalue() == b"\x01\x00\x04\x09" and w.buffer[:4] == bytearray(b"\x01\x00\x04\x09")
    with pytest.raises(QuicError):
        w.seek(5)


@given(st.binary(max_size=64))
def test_reader_only_raises_decode_errors(data: bytes) -> None:
    r = Reader(data)
    try:
        while True:
            r.pull_varint()
            r.pull_uint16()
            r.pull_bytes(r.pull_uint8())
            r.pull_uint32()
            r.skip(r.pull_uint8())
            r.pull_uint64()
    except QuicDecodeError:
        pass


# -- packet numbers -----------------------------------------------------------------


def test_packet_number_rfc_examples() -> None:
    # Appendix A.2 and A.3.
    assert packet.packet_number_length(0xAC5C02, 0xABE8B3) == 2
    assert packet.packet_number_length(0xACE8FE, 0xABE8B3) == 3
    assert packet.decode_packet_number(0x9B32, 2, 0xA82F30EA + 1) == 0xA82F9B32


def test_packet_number_lengths_are_minimal_and_safe() -> None:
    assert packet.packet_number_length(0, -1) == 1
    assert packet.packet_number_length(127, -1) == 1
    assert packet.packet_number_length(128, 0) == 1
    assert packet.packet_number_length(129, 0) == 2
    with pytest.raises(QuicError):
        packet.packet_number_length(2**40, 0)


@given(st.integers(-1, 2**40), st.integers(1, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_packet_numbers_round_trip(largest_acked: int, ahead: int, reorder: int) -> None:
    pn = largest_acked + ahead
    try:
        length = packet.packet_number_length(pn, largest_acked)
    except QuicError:
        return
    truncated = pn & ((1 << (8 * length)) - 1)
    # The receiver has seen at least what was acknowledged, and at most pn + a little.
    largest_received = min(largest_acked + reorder % max(ahead, 1), pn + (1 << (8 * length - 1)) - 1)
    if largest_received < largest_acked:
        return
    assert packet.decode_packet_number(truncated, length, largest_received + 1) == pn
    assert aq.decode_packet_number(truncated, 8 * length, largest_received + 1) == pn


# -- headers ------------------------------------------------------------------------


def _compare_with_aioquic(datagram: bytes, short_len: int) -> None:
    ours = packet.parse_packet(datagram, 0, short_len)
    theirs = aq.pull_quic_header(Buffer(data=datagram), host_cid_length=short_len)
    assert AQ_TYPES[ours.packet_type] == theirs.packet_type
    assert ours.dcid == theirs.destination_cid
    assert ours.scid == theirs.source_cid
    assert ours.token == theirs.token
    assert ours.integrity_tag == theirs.integrity_tag
    assert ours.supported_versions == theirs.supported_versions
    assert ours.end == theirs.packet_length


@pytest.mark.parametrize("packet_type", [packet.PACKET_INITIAL, packet.PACKET_ZERO_RTT, packet.PACKET_HANDSHAKE])
def test_long_headers_parse_like_aioquic(packet_type: int) -> None:
    dcid, scid = os.urandom(8), os.urandom(5)
    token = os.urandom(30) if packet_type == packet.PACKET_INITIAL else b""
    header = packet.build_long_header(packet_type, dcid, scid, 0x1234, 2, 100, token=token)
    datagram = header + os.urandom(100 + 16)
    _compare_with_aioquic(datagram, 8)
    p = packet.parse_packet(datagram, 0, 8)
    assert p.pn_offset == len(header) - 2 and p.end == len(datagram)


def test_short_header_parses_like_aioquic() -> None:
    datagram = packet.build_short_header(b"abcdefgh", 5, 2, key_phase=1) + os.urandom(40)
    _compare_with_aioquic(datagram, 8)


def test_retry_and_version_negotiation_agree_with_aioquic() -> None:
    dcid, scid, odcid = os.urandom(8), os.urandom(8), os.urandom(8)
    ours = packet.build_retry(dcid, scid, odcid, b"retry token")
    _compare_with_aioquic(ours, 8)
    theirs = aq.encode_quic_retry(1, scid, dcid, odcid, b"retry token")
    parsed = packet.parse_packet(theirs, 0, 8)
    assert parsed.token == b"retry token" and packet.verify_retry(parsed, odcid)
    assert aq.get_retry_integrity_tag(ours[:-16], odcid, 1) == ours[-16:]

    vn = packet.build_version_negotiation(dcid, scid, (packet.VERSION_1, 0x1A2A3A4A))
    _compare_with_aioquic(vn, 8)
    assert vn[0] & 0xC0 == 0xC0  # fixed bit set: iroh drops packets without it
    parsed = packet.parse_packet(aq.encode_quic_version_negotiation(scid, dcid, [1, 2]), 0, 8)
    assert parsed.packet_type == packet.PACKET_VERSION_NEGOTIATION
    assert parsed.supported_versions == [1, 2] and parsed.dcid == dcid and parsed.scid == scid


def test_unknown_version_yields_invariant_fields() -> None:
    datagram = bytes([0xC0]) + (0x0A0A0A0A).to_bytes(4, "big") + b"\x03abc\x02xy" + bytes(1200)
    p = packet.parse_packet(datagram, 0, 8)
    assert p.packet_type == packet.PACKET_UNSUPPORTED_VERSION
    assert (p.version, p.dcid, p.scid) == (0x0A0A0A0A, b"abc", b"xy")


def test_coalesced_packets_split() -> None:
    dcid, scid = os.urandom(8), os.urandom(8)
    initial = packet.build_long_header(packet.PACKET_INITIAL, dcid, scid, 0, 1, 50) + bytes(66)
    handshake = packet.build_long_header(packet.PACKET_HANDSHAKE, dcid, scid, 0, 1, 30) + bytes(46)
    other = packet.build_long_header(packet.PACKET_HANDSHAKE, os.urandom(8), scid, 0, 1, 30) + bytes(46)
    short = packet.build_short_header(dcid, 1, 1) + bytes(40)
    parts = packet.split_datagram(initial + handshake + other + short, 8)
    assert [p.packet_type for p in parts] == [packet.PACKET_INITIAL, packet.PACKET_HANDSHAKE, packet.PACKET_ONE_RTT]
    assert parts[1].start == len(initial) and parts[2].start == len(initial + handshake + other)
    # Trailing garbage after a good packet ends the split; it does not fail it.
    assert len(packet.split_datagram(initial + b"\x00" * 30, 8)) == 1
    assert packet.peek_dcid(initial, 8) == dcid and packet.peek_dcid(short, 8) == dcid


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x00" * 30,  # fixed bit clear
        bytes([0xC0]) + (1).to_bytes(4, "big") + b"\x15" + bytes(40),  # 21-byte CID
        bytes([0xC0]) + (1).to_bytes(4, "big") + b"\x00\x00\x00\x44\x00" + bytes(10),  # length beyond datagram
        bytes([0xC0]) + (1).to_bytes(4, "big") + b"\x00\x00\x00\x05" + bytes(5),  # too short for a sample
        bytes([0xF0]) + (1).to_bytes(4, "big") + b"\x00\x00" + bytes(16),  # Retry without token
        bytes([0x80]) + bytes(4) + b"\x00\x00\x01\x02",  # VN list not a multiple of 4
        b"\x40" + bytes(10),  # short header too short
    ],
)
def test_bad_headers_are_rejected(datagram: bytes) -> None:
    with pytest.raises(QuicDecodeError):
        packet.split_datagram(datagram, 8)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 20))
def test_fuzz_headers_only_typed_errors(data: bytes, short_len: int) -> None:
    try:
        parts = packet.split_datagram(data, short_len)
    except QuicDecodeError:
        return
    offset = 0
    for p in parts:
        assert p.start >= offset and p.end <= len(data)
        offset = p.end


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([packet.PACKET_INITIAL, packet.PACKET_ZERO_RTT, packet.PACKET_HANDSHAKE]),
    st.binary(max_size=20),
    st.binary(max_size=20),
    st.binary(max_size=40),
    st.integers(0, 2**32),
    st.integers(1, 4),
    st.integers(4, 300),
)
def test_fuzz_long_header_round_trip(
    packet_type: int, dcid: bytes, scid: bytes, token: bytes, pn: int, pn_length: int, payload_length: int
) -> None:
    header = packet.build_long_header(packet_type, dcid, scid, pn, pn_length, payload_length, token=token)
    datagram = header + bytes(payload_length + 16)
    p = packet.parse_packet(datagram, 0, 0)
    assert (p.packet_type, p.dcid, p.scid) == (packet_type, dcid, scid)
    assert p.token == (token if packet_type == packet.PACKET_INITIAL else b"")
    assert p.pn_offset == len(header) - pn_length and p.end == len(datagram)
    _compare_with_aioquic(datagram, 0)


# -- stateless reset ----------------------------------------------------------------


def test_stateless_reset_build_and_detect() -> None:
    token = os.urandom(16)
    assert packet.stateless_reset_size(21) == 0
    size = packet.stateless_reset_size(1200)
    assert 21 <= size < 1200
    reset = packet.build_stateless_reset(token, size)
    assert len(reset) == size and reset[0] & 0xC0 == 0x40
    assert packet.is_stateless_reset(reset, [os.urandom(16), token])
    assert not packet.is_stateless_reset(reset, [os.urandom(16)])
    assert packet.stateless_reset_token(reset[:20]) is None
    # It parses as an ordinary short header packet, as RFC 9000 intends.
    assert packet.parse_packet(reset, 0, 0).packet_type == packet.PACKET_ONE_RTT
    with pytest.raises(QuicError):
        packet.build_stateless_reset(token, 20)


def test_unprotecting_a_packet_without_protection_is_refused() -> None:
    retry = packet.split_datagram(packet.build_retry(b"a", b"b", b"c", b"token"), 8)
    with pytest.raises(QuicError):
        packet.unprotect_headers(retry, HeaderProtection(AES_128_GCM_SHA256, bytes(32)), -1)
