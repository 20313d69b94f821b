"""QUIC packets (RFC 9000 §17, RFC 9001 §5): headers, coalescing, packet numbers, protection.

Receiving a burst: ``split_datagram`` turns each datagram into ``Packet`` objects (header
fields and offsets only, nothing copied); ``unprotect_headers`` removes header protection from
a list of packets with one mask call; ``open_packet`` / ``open_one_rtt`` decrypt the payload.
Sending: ``build_long_header`` / ``build_short_header`` make the unprotected header, and
``seal_packets`` encrypts a burst and applies header protection with one mask call.

Also here: Retry (with its integrity tag), Version Negotiation and stateless resets.
iroh drops packets whose fixed bit (0x40) is clear, so every packet built here sets it and
the parser rejects packets without it.
"""

from __future__ import annotations

import hmac
import os
from typing import Final

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic.crypto import (
    MASK_STRIDE,
    SAMPLE_SIZE,
    TAG_SIZE,
    HeaderProtection,
    OneRttKeys,
    PacketKey,
    retry_integrity_tag,
)
from irohpy.quic.varint import encode_varint

VERSION_1: Final = 0x00000001
SUPPORTED_VERSIONS: Final = (VERSION_1,)

PACKET_INITIAL: Final = 0
PACKET_ZERO_RTT: Final = 1
PACKET_HANDSHAKE: Final = 2
PACKET_RETRY: Final = 3
PACKET_ONE_RTT: Final = 4
PACKET_VERSION_NEGOTIATION: Final = 5
PACKET_UNSUPPORTED_VERSION: Final = 6
"""A long header of a version we do not speak: only the invariant fields (RFC 8999) are parsed."""

MAX_CID_SIZE: Final = 20
RESET_TOKEN_SIZE: Final = 16
MIN_INITIAL_DATAGRAM: Final = 1200
STATELESS_RESET_MIN: Final = 21
STATELESS_RESET_MAX: Final = 64
"""A stateless reset is never larger than this, and always smaller than what provoked it."""

_PN_PROBE: Final = 4
"""Header protection samples 16 bytes starting 4 bytes after the packet number offset."""


class Packet:
    """One packet inside a datagram: parsed header fields and offsets into ``data``.

    ``unprotect_headers`` fills ``first_byte``, ``pn_length``, ``packet_number``,
    ``key_phase`` and ``header`` (the unprotected header, the AEAD's associated data).
    """

    __slots__ = (
        "packet_type",
        "version",
        "dcid",
        "scid",
        "token",
        "integrity_tag",
        "supported_versions",
        "data",
        "start",
        "pn_offset",
        "end",
        "first_byte",
        "pn_length",
        "packet_number",
        "key_phase",
        "header",
    )

    def __init__(self, packet_type: int, data: bytes, start: int, end: int, dcid: bytes) -> None:
        self.packet_type = packet_type
        self.version = 0
        self.dcid = dcid
        self.scid = b""
        self.token = b""
        self.integrity_tag = b""
        self.supported_versions: list[int] = []
        self.data = data
        self.start = start
        self.pn_offset = 0
        self.end = end
        self.first_byte = data[start]
        self.pn_length = 0
        self.packet_number = -1
        self.key_phase = 0
        self.header = b""

    def ciphertext(self) -> bytes:
        return self.data[self.pn_offset + self.pn_length : self.end]

    def __repr__(self) -> str:
        return (
            f"Packet(type={self.packet_type}, version=0x{self.version:08x}, dcid={self.dcid.hex()}, "
            f"scid={self.scid.hex()}, pn={self.packet_number}, size={self.end - self.start})"
        )


def _pull_cid(data: bytes, pos: int, limit: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise QuicDecodeError("truncated connection ID")
    length = data[pos]
    if length > limit:
        raise QuicDecodeError(f"connection ID of {length} bytes")
    end = pos + 1 + length
    if end > len(data):
        raise QuicDecodeError("truncated connection ID")
    return data[pos + 1 : end], end


def _pull_varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    if pos >= limit:
        raise QuicDecodeError("truncated varint")
    first = data[pos]
    size = 1 << (first >> 6)
    end = pos + size
    if end > limit:
        raise QuicDecodeError("truncated varint")
    if size == 1:
        return first, end
    return int.from_bytes(data[pos:end], "big") & ((1 << (8 * size - 2)) - 1), end


def parse_packet(data: bytes, start: int, short_dcid_length: int) -> Packet:
    """Parse the packet header at ``start``; short headers carry our own CID length."""
    size = len(data)
    if start >= size:
        raise QuicDecodeError("empty packet")
    first = data[start]
    if not first & 0x80:
        if not first & 0x40:
            raise QuicDecodeError("fixed bit clear")
        pn_offset = start + 1 + short_dcid_length
        if size - pn_offset < _PN_PROBE + SAMPLE_SIZE:
            raise QuicDecodeError("short header packet too short")
        packet = Packet(PACKET_ONE_RTT, data, start, size, data[start + 1 : pn_offset])
        packet.version = VERSION_1
        packet.pn_offset = pn_offset
        return packet
    if start + 7 > size:
        raise QuicDecodeError("truncated long header")
    version = int.from_bytes(data[start + 1 : start + 5], "big")
    if version == 0:
        dcid, pos = _pull_cid(data, start + 5, 255)
        scid, pos = _pull_cid(data, pos, 255)
        rest = size - pos
        if rest == 0 or rest % 4:
            raise QuicDecodeError("bad version list")
        packet = Packet(PACKET_VERSION_NEGOTIATION, data, start, size, dcid)
        packet.scid = scid
        packet.supported_versions = [int.from_bytes(data[i : i + 4], "big") for i in range(pos, size, 4)]
        return packet
    if version != VERSION_1:
        dcid, pos = _pull_cid(data, start + 5, 255)
        scid, pos = _pull_cid(data, pos, 255)
        packet = Packet(PACKET_UNSUPPORTED_VERSION, data, start, size, dcid)
        packet.version = version
        packet.scid = scid
        return packet
    if not first & 0x40:
        raise QuicDecodeError("fixed bit clear")
    dcid, pos = _pull_cid(data, start + 5, MAX_CID_SIZE)
    scid, pos = _pull_cid(data, pos, MAX_CID_SIZE)
    packet_type = (first >> 4) & 0x03
    if packet_type == PACKET_RETRY:
        if size - pos <= TAG_SIZE:
            raise QuicDecodeError("Retry without a token")
        packet = Packet(PACKET_RETRY, data, start, size, dcid)
        packet.version = version
        packet.scid = scid
        packet.token = data[pos : size - TAG_SIZE]
        packet.integrity_tag = data[size - TAG_SIZE : size]
        return packet
    token = b""
    if packet_type == PACKET_INITIAL:
        token_length, pos = _pull_varint(data, pos, size)
        if token_length > size - pos:
            raise QuicDecodeError("truncated token")
        token = data[pos : pos + token_length]
        pos += token_length
    length, pos = _pull_varint(data, pos, size)
    end = pos + length
    if end > size:
        raise QuicDecodeError("packet length beyond the datagram")
    if length < _PN_PROBE + SAMPLE_SIZE:
        raise QuicDecodeError("long header packet too short")
    packet = Packet(packet_type, data, start, end, dcid)
    packet.version = version
    packet.scid = scid
    packet.token = token
    packet.pn_offset = pos
    return packet


def split_datagram(data: bytes, short_dcid_length: int) -> list[Packet]:
    """The coalesced packets of one datagram (RFC 9000 §12.2).

    A first packet that does not parse raises QuicDecodeError. After it, parsing stops at the
    first bad packet, and packets whose Destination CID differs from the first's are skipped.
    """
    first = parse_packet(data, 0, short_dcid_length)
    packets = [first]
    offset = first.end
    size = len(data)
    while offset < size:
        try:
            packet = parse_packet(data, offset, short_dcid_length)
        except QuicDecodeError:
            break
        if packet.dcid == first.dcid:
            packets.append(packet)
        offset = packet.end
    return packets


def peek_dcid(data: bytes, short_dcid_length: int) -> bytes:
    """The Destination CID of a datagram's first packet, for routing before parsing."""
    if not data:
        raise QuicDecodeError("empty datagram")
    if data[0] & 0x80:
        if len(data) < 6:
            raise QuicDecodeError("truncated long header")
        return _pull_cid(data, 5, 255)[0]
    end = 1 + short_dcid_length
    if len(data) < end:
        raise QuicDecodeError("truncated short header")
    return data[1:end]


# -- packet numbers (RFC 9000 §17.1, Appendix A) --------------------------------


def packet_number_length(packet_number: int, largest_acked: int) -> int:
    """Bytes needed to send ``packet_number`` when the peer acknowledged up to ``largest_acked``
    (-1: nothing yet): twice the unacknowledged range must fit (Appendix A.2)."""
    unacked = packet_number - largest_acked if largest_acked >= 0 else packet_number + 1
    bits = unacked.bit_length()
    if unacked & (unacked - 1) == 0:
        length = (bits + 7) // 8
    else:
        length = bits // 8 + 1
    if length > 4:
        raise QuicError("too many packets in flight to encode a packet number", error_code=QuicError.INTERNAL_ERROR)
    return max(length, 1)


def decode_packet_number(truncated: int, length: int, expected: int) -> int:
    """The full packet number closest to ``expected`` (largest received + 1), Appendix A.3."""
    window = 1 << (8 * length)
    half = window >> 1
    candidate = (expected & ~(window - 1)) | truncated
    if candidate <= expected - half and candidate < (1 << 62) - window:
        return candidate + window
    if candidate > expected + half and candidate >= window:
        return candidate - window
    return candidate


# -- building headers -----------------------------------------------------------


def build_long_header(
    packet_type: int,
    dcid: bytes,
    scid: bytes,
    packet_number: int,
    pn_length: int,
    payload_length: int,
    token: bytes = b"",
    version: int = VERSION_1,
) -> bytes:
    """Unprotected Initial, 0-RTT or Handshake header; the Length covers PN, payload and tag.

    The payload must be at least ``4 - pn_length`` bytes so that header protection has a sample.
    """
    if len(dcid) > MAX_CID_SIZE or len(scid) > MAX_CID_SIZE:
        raise QuicError("connection ID longer than 20 bytes", error_code=QuicError.INTERNAL_ERROR)
    first = 0xC0 | (packet_type << 4) | (pn_length - 1)
    parts = [
        bytes((first,)),
        version.to_bytes(4, "big"),
        bytes((len(dcid),)),
        dcid,
        bytes((len(scid),)),
        scid,
    ]
    if packet_type == PACKET_INITIAL:
        parts.append(encode_varint(len(token)))
        parts.append(token)
    parts.append(encode_varint(pn_length + payload_length + TAG_SIZE))
    parts.append((packet_number & ((1 << (8 * pn_length)) - 1)).to_bytes(pn_length, "big"))
    return b"".join(parts)


def build_short_header(dcid: bytes, packet_number: int, pn_length: int, key_phase: int = 0, spin: int = 0) -> bytes:
    """Unprotected 1-RTT header."""
    first = 0x40 | (spin << 5) | (key_phase << 2) | (pn_length - 1)
    return bytes((first,)) + dcid + (packet_number & ((1 << (8 * pn_length)) - 1)).to_bytes(pn_length, "big")


# -- protection -----------------------------------------------------------------


def seal_packets(
    key: PacketKey, hp: HeaderProtection, packets: list[tuple[bytes, bytes, int]], path_id: int = 0
) -> list[bytearray]:
    """Encrypt ``(header, payload, packet number)`` triples and protect their headers.

    One header-protection call covers the whole burst. Each result is one packet, ready to be
    coalesced or sent.
    """
    sealed: list[bytes] = []
    samples: list[bytes] = []
    for header, payload, packet_number in packets:
        pn_length = (header[0] & 0x03) + 1
        if len(payload) < _PN_PROBE - pn_length:
            raise QuicError("payload too short for a header protection sample", error_code=QuicError.INTERNAL_ERROR)
        ciphertext = key.seal(header, payload, packet_number, path_id)
        offset = _PN_PROBE - pn_length
        samples.append(ciphertext[offset : offset + SAMPLE_SIZE])
        sealed.append(ciphertext)
    masks = hp.masks(b"".join(samples))
    out: list[bytearray] = []
    m = 0
    for i in range(len(sealed)):
        header = packets[i][0]
        packet = bytearray(header)
        packet += sealed[i]
        first = header[0]
        pn_length = (first & 0x03) + 1
        packet[0] = first ^ (masks[m] & (0x0F if first & 0x80 else 0x1F))
        pn_offset = len(header) - pn_length
        for j in range(pn_length):
            packet[pn_offset + j] ^= masks[m + 1 + j]
        out.append(packet)
        m += MASK_STRIDE
    return out


def seal_packet(
    key: PacketKey, hp: HeaderProtection, header: bytes, payload: bytes, packet_number: int, path_id: int = 0
) -> bytearray:
    return seal_packets(key, hp, [(header, payload, packet_number)], path_id)[0]


def unprotect_headers(packets: list[Packet], hp: HeaderProtection, largest_pn: int) -> None:
    """Remove header protection from packets of one space with one mask call.

    ``largest_pn`` is the largest packet number received so far in that space (-1: none).
    """
    if not packets:
        return
    for packet in packets:
        if packet.pn_offset == 0:
            raise QuicError("packet type without header protection", error_code=QuicError.INTERNAL_ERROR)
    masks = hp.masks(b"".join([p.data[p.pn_offset + _PN_PROBE : p.pn_offset + _PN_PROBE + SAMPLE_SIZE] for p in packets]))
    expected = largest_pn + 1
    m = 0
    for packet in packets:
        data = packet.data
        start = packet.start
        pn_offset = packet.pn_offset
        long = packet.packet_type != PACKET_ONE_RTT
        first = data[start] ^ (masks[m] & (0x0F if long else 0x1F))
        pn_length = (first & 0x03) + 1
        truncated = int.from_bytes(data[pn_offset : pn_offset + pn_length], "big") ^ int.from_bytes(
            masks[m + 1 : m + 1 + pn_length], "big"
        )
        packet.first_byte = first
        packet.pn_length = pn_length
        packet.packet_number = decode_packet_number(truncated, pn_length, expected)
        packet.key_phase = 0 if long else (first >> 2) & 1
        packet.header = bytes((first,)) + data[start + 1 : pn_offset] + truncated.to_bytes(pn_length, "big")
        m += MASK_STRIDE


def _check_reserved_bits(packet: Packet) -> None:
    if packet.first_byte & (0x0C if packet.packet_type != PACKET_ONE_RTT else 0x18):
        raise QuicDecodeError("reserved header bits set", error_code=QuicError.PROTOCOL_VIOLATION)


def open_packet(key: PacketKey, packet: Packet, path_id: int = 0) -> bytes:
    """Decrypt a packet whose header protection is removed; checks the reserved bits after
    authentication, as RFC 9000 §17.2 asks."""
    plain = key.open(packet.header, packet.ciphertext(), packet.packet_number, path_id)
    _check_reserved_bits(packet)
    return plain


def open_one_rtt(keys: OneRttKeys, packet: Packet, path_id: int = 0) -> bytes:
    """Decrypt a 1-RTT packet, following the peer's key updates."""
    plain = keys.open(packet.header, packet.ciphertext(), packet.packet_number, packet.key_phase, path_id)
    _check_reserved_bits(packet)
    return plain


# -- Retry, Version Negotiation, stateless reset --------------------------------


def _retry_body(version: int, dcid: bytes, scid: bytes, token: bytes, unused: int) -> bytes:
    first = 0xF0 | (unused & 0x0F)
    return b"".join(
        [bytes((first,)), version.to_bytes(4, "big"), bytes((len(dcid),)), dcid, bytes((len(scid),)), scid, token]
    )


def build_retry(
    dcid: bytes, scid: bytes, original_dcid: bytes, token: bytes, version: int = VERSION_1, unused: int = -1
) -> bytes:
    """A Retry packet with its integrity tag; ``unused`` fills the 4 low bits (random if -1)."""
    if not token:
        raise QuicError("Retry needs a token", error_code=QuicError.INTERNAL_ERROR)
    if unused < 0:
        unused = os.urandom(1)[0]
    body = _retry_body(version, dcid, scid, token, unused)
    return body + retry_integrity_tag(bytes((len(original_dcid),)) + original_dcid + body)


def verify_retry(packet: Packet, original_dcid: bytes) -> bool:
    """Whether a parsed Retry's integrity tag matches the client's original Destination CID."""
    body = packet.data[packet.start : packet.end - TAG_SIZE]
    expected = retry_integrity_tag(bytes((len(original_dcid),)) + original_dcid + body)
    return hmac.compare_digest(expected, packet.integrity_tag)


def build_version_negotiation(dcid: bytes, scid: bytes, versions: tuple[int, ...] = SUPPORTED_VERSIONS) -> bytes:
    """A Version Negotiation packet; ``dcid``/``scid`` are the client's SCID/DCID echoed back.

    The fixed bit is set (RFC 9000 allows any value) because iroh drops packets without it.
    """
    first = 0xC0 | (os.urandom(1)[0] & 0x3F)
    return b"".join(
        [bytes((first,)), bytes(4), bytes((len(dcid),)), dcid, bytes((len(scid),)), scid]
        + [v.to_bytes(4, "big") for v in versions]
    )


def stateless_reset_size(received: int) -> int:
    """Size of a stateless reset answering a datagram of ``received`` bytes; 0: do not send.

    Always smaller than what provoked it, so two endpoints cannot loop (RFC 9000 §10.3.3).
    """
    if received <= STATELESS_RESET_MIN:
        return 0
    return min(received - 1, STATELESS_RESET_MAX)


def build_stateless_reset(token: bytes, size: int) -> bytes:
    """A stateless reset of ``size`` bytes: unpredictable bits that look like a short header."""
    if len(token) != RESET_TOKEN_SIZE or size < STATELESS_RESET_MIN:
        raise QuicError("bad stateless reset", error_code=QuicError.INTERNAL_ERROR)
    filler = bytearray(os.urandom(size - RESET_TOKEN_SIZE))
    filler[0] = 0x40 | (filler[0] & 0x3F)
    return bytes(filler) + token


def stateless_reset_token(datagram: bytes) -> bytes | None:
    """The candidate reset token of a datagram (its last 16 bytes), or None if it cannot be a
    stateless reset. Compare with ``hmac.compare_digest`` against the tokens the peer issued."""
    if len(datagram) < STATELESS_RESET_MIN or datagram[0] & 0xC0 != 0x40:
        return None
    return datagram[-RESET_TOKEN_SIZE:]


def is_stateless_reset(datagram: bytes, tokens: list[bytes]) -> bool:
    """Whether ``datagram`` ends with one of ``tokens`` (compared in constant time)."""
    candidate = stateless_reset_token(datagram)
    if candidate is None:
        return False
    found = False
    for token in tokens:
        found |= hmac.compare_digest(candidate, token)
    return found

