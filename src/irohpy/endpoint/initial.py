"""Checking a client's first Initial before any connection state exists (sans-IO).

Initial keys derive from the packet's own destination connection ID (RFC 9001
§5.2), so anyone can build a valid Initial; but junk cannot decrypt, and
checking costs a few microseconds and no memory. The endpoint opens every
unknown Initial here first and allocates a connection only for one that
decrypts. Under load it answers with a stateless Retry (RFC 9000 §8.1.2)
whose token proves, on the second Initial, that the dialer receives at the
address it claims. Independent of the QUIC engine: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from irohpy.errors import QuicPacketError

VERSION_1: Final = 0x00000001
VERSION_2: Final = 0x6B3343CF
MAX_CID_LENGTH: Final = 20
SAMPLE_LENGTH: Final = 16
TAG_LENGTH: Final = 16


@dataclass(frozen=True, slots=True)
class _VersionConsts:
    salt: bytes
    labels: tuple[bytes, bytes, bytes]
    initial_type: int
    retry_type: int
    retry_key: bytes
    retry_nonce: bytes


# RFC 9001 §5.2 and §5.8 (QUIC v1), RFC 9369 §3.3 (QUIC v2).
_VERSIONS: Final = {
    VERSION_1: _VersionConsts(
        salt=bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
        labels=(b"quic key", b"quic iv", b"quic hp"),
        initial_type=0,
        retry_type=3,
        retry_key=bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"),
        retry_nonce=bytes.fromhex("461599d35d632bf2239825bb"),
    ),
    VERSION_2: _VersionConsts(
        salt=bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
        labels=(b"quicv2 key", b"quicv2 iv", b"quicv2 hp"),
        initial_type=1,
        retry_type=0,
        retry_key=bytes.fromhex("8fb4b01b56ac48e260fbcbcead7ccc92"),
        retry_nonce=bytes.fromhex("d86969bc2d7c6d9990efb04a"),
    ),
}

SUPPORTED_VERSIONS: Final = tuple(_VERSIONS)


@dataclass(frozen=True, slots=True)
class InitialPacket:
    """A client Initial that decrypted: what the endpoint needs to accept or Retry it."""

    version: int
    dcid: bytes
    scid: bytes
    token: bytes


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label with an empty context; one SHA-256 block is always enough here."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", hashlib.sha256)[:length]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    if at >= len(data):
        raise QuicPacketError("truncated varint")
    size = 1 << (data[at] >> 6)
    if at + size > len(data):
        raise QuicPacketError("truncated varint")
    value = data[at] & 0x3F
    for b in data[at + 1 : at + size]:
        value = (value << 8) | b
    return value, at + size


def _cid(data: bytes, at: int) -> tuple[bytes, int]:
    if at >= len(data) or data[at] > MAX_CID_LENGTH or at + 1 + data[at] > len(data):
        raise QuicPacketError("bad connection ID")
    end = at + 1 + data[at]
    return data[at + 1 : end], end


def open_initial(data: bytes) -> InitialPacket:
    """Parse, unprotect and decrypt the first packet of a client's Initial datagram.

    Raises :class:`QuicPacketError` for anything that is not an Initial of a
    supported version sealed with the keys of its own destination CID.
    """
    if len(data) < 7 or data[0] & 0xC0 != 0xC0:
        raise QuicPacketError("not a QUIC long header packet")
    version = int.from_bytes(data[1:5], "big")
    consts = _VERSIONS.get(version)
    if consts is None:
        raise QuicPacketError(f"unsupported QUIC version {version:#x}")
    if (data[0] >> 4) & 0x03 != consts.initial_type:
        raise QuicPacketError("not an Initial packet")
    dcid, at = _cid(data, 5)
    scid, at = _cid(data, at)
    token_length, at = _varint(data, at)
    if at + token_length > len(data):
        raise QuicPacketError("truncated token")
    token = data[at : at + token_length]
    length, pn_offset = _varint(data, at + token_length)
    end = pn_offset + length
    if end > len(data) or length < 4 + SAMPLE_LENGTH:
        raise QuicPacketError("Initial length does not fit the datagram")

    initial_secret = hmac.digest(consts.salt, dcid, hashlib.sha256)
    client_secret = _expand_label(initial_secret, b"client in", 32)
    key = _expand_label(client_secret, consts.labels[0], 16)
    iv = _expand_label(client_secret, consts.labels[1], 12)
    hp = _expand_label(client_secret, consts.labels[2], 16)

    sample = data[pn_offset + 4 : pn_offset + 4 + SAMPLE_LENGTH]
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first = data[0] ^ (mask[0] & 0x0F)
    if first & 0x0C:
        raise QuicPacketError("reserved bits set")
    pn_length = (first & 0x03) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset : pn_offset + pn_length], mask[1:], strict=False))
    header = bytes([first]) + data[1:pn_offset] + pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ int.from_bytes(pn_bytes, "big")).to_bytes(12, "big")
    try:
        AESGCM(key).decrypt(nonce, data[pn_offset + pn_length : end], header)
    except InvalidTag:
        raise QuicPacketError("Initial does not decrypt") from None
    return InitialPacket(version, dcid, scid, token)


def retry_packet(version: int, dcid: bytes, scid: bytes, original_dcid: bytes, token: bytes) -> bytes:
    """A Retry to the client's ``dcid`` (its SCID) from our new ``scid``, with its integrity tag (RFC 9001 §5.8)."""
    consts = _VERSIONS[version]
    first = 0xC0 | (consts.retry_type << 4) | (os.urandom(1)[0] & 0x0F)
    packet = (
        bytes([first]) + version.to_bytes(4, "big")
        + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + token
    )
    pseudo = bytes([len(original_dcid)]) + original_dcid + packet
    return packet + AESGCM(consts.retry_key).encrypt(consts.retry_nonce, b"", pseudo)


TOKEN_LIFETIME: Final = 10.0
_NONCE_LENGTH: Final = 12


class RetryTokens:
    """Address-validation tokens for Retry: sealed, bound to the address, short-lived.

    A token carries the original destination CID and the Retry's source CID,
    encrypted under a key that lives only in this process, so validating it
    needs no state. ``address`` is any byte string naming where the Initial
    came from (an IP and port, or a relay and the sender's EndpointId).
    """

    def __init__(self, lifetime: float = TOKEN_LIFETIME) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=128))
        self.lifetime = lifetime

    def issue(self, address: bytes, original_dcid: bytes, retry_scid: bytes, now: float) -> bytes:
        plain = (
            bytes([len(original_dcid)]) + original_dcid + bytes([len(retry_scid)]) + retry_scid
            + struct.pack("!d", now)
        )
        nonce = os.urandom(_NONCE_LENGTH)
        return nonce + self._aead.encrypt(nonce, plain, address)

    def validate(self, token: bytes, address: bytes, dcid: bytes, now: float) -> bytes | None:
        """The original destination CID a valid token carries.

        None when the token is not one of ours for this address (treat the
        Initial as tokenless); :class:`QuicPacketError` when it is ours but
        expired or sent to another connection ID.
        """
        if len(token) < _NONCE_LENGTH + TAG_LENGTH:
            return None
        try:
            plain = self._aead.decrypt(token[:_NONCE_LENGTH], token[_NONCE_LENGTH:], address)
        except InvalidTag:
            return None
        original_dcid, at = plain[1 : 1 + plain[0]], 1 + plain[0]
        retry_scid, at = plain[at + 1 : at + 1 + plain[at]], at + 1 + plain[at]
        (issued,) = struct.unpack("!d", plain[at:])
        if retry_scid != dcid:
            raise QuicPacketError("token was issued for another connection ID")
        if not 0 <= now - issued <= self.lifetime:
            raise QuicPacketError("token expired")
        return original_dcid
