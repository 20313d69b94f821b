"""The TLS 1.3 key schedule (RFC 8446 §7.1) and the transcript hash, on ``hmac``/``hashlib``.

One :class:`KeySchedule` walks Early → Handshake → Master secret. The secrets it yields are
what QUIC turns into packet keys (RFC 9001 §5.1); HKDF-Expand-Label is the one the packet
layer already uses.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from irohpy.errors import QuicError
from irohpy.quic.crypto import AES_128_GCM_SHA256, AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256
from irohpy.quic.crypto import hkdf_expand_label, hkdf_extract

SUITE_HASH: Final = {
    AES_128_GCM_SHA256: "sha256",
    AES_256_GCM_SHA384: "sha384",
    CHACHA20_POLY1305_SHA256: "sha256",
}
CLIENT_SIGNATURE_CONTEXT: Final = b" " * 64 + b"TLS 1.3, client CertificateVerify\x00"
SERVER_SIGNATURE_CONTEXT: Final = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00"


def suite_hash(cipher_suite: int) -> str:
    try:
        return SUITE_HASH[cipher_suite]
    except KeyError:
        raise QuicError(f"cipher suite 0x{cipher_suite:04x} not supported", error_code=0x100 + 40) from None


class Transcript:
    """The running hash of the handshake messages; ``digest()`` snapshots it."""

    __slots__ = ("_hash",)

    def __init__(self, hash_name: str) -> None:
        self._hash = hashlib.new(hash_name)

    def add(self, message: bytes) -> None:
        self._hash.update(message)

    def digest(self) -> bytes:
        return self._hash.copy().digest()

    def fork(self) -> Transcript:
        """An independent copy, e.g. to hash a ClientHello up to its PSK binders."""
        other = Transcript.__new__(Transcript)
        other._hash = self._hash.copy()
        return other

    def restart_for_retry(self, hash_name: str) -> None:
        """Replace ClientHello1 by its ``message_hash`` message (RFC 8446 §4.4.1)."""
        first = self._hash.digest()
        self._hash = hashlib.new(hash_name)
        self._hash.update(bytes((254, 0, 0, len(first))) + first)


class KeySchedule:
    """Early secret (from a PSK or zeros), then Handshake and Master secrets via ``advance``."""

    __slots__ = ("cipher_suite", "hash_name", "hash_length", "_secret")

    def __init__(self, cipher_suite: int, psk: bytes | None = None) -> None:
        self.cipher_suite = cipher_suite
        self.hash_name = suite_hash(cipher_suite)
        self.hash_length = hashlib.new(self.hash_name).digest_size
        zeros = bytes(self.hash_length)
        self._secret = hkdf_extract(zeros, psk if psk is not None else zeros, self.hash_name)

    def __repr__(self) -> str:
        return f"KeySchedule(cipher_suite=0x{self.cipher_suite:04x})"

    def derive(self, label: bytes, transcript_hash: bytes) -> bytes:
        """Derive-Secret(current secret, label, messages) given Transcript-Hash(messages)."""
        return hkdf_expand_label(self._secret, label, transcript_hash, self.hash_length, self.hash_name)

    def empty_hash(self) -> bytes:
        return hashlib.new(self.hash_name).digest()

    def advance(self, ikm: bytes | None) -> None:
        """Next stage: Extract(Derive-Secret(current, "derived", ""), ikm or zeros)."""
        derived = self.derive(b"derived", self.empty_hash())
        self._secret = hkdf_extract(derived, ikm if ikm is not None else bytes(self.hash_length), self.hash_name)

    def finished(self, base_key: bytes, transcript_hash: bytes) -> bytes:
        """Finished verify_data (and PSK binder) keyed by ``base_key`` (RFC 8446 §4.4.4)."""
        key = hkdf_expand_label(base_key, b"finished", b"", self.hash_length, self.hash_name)
        return hmac.digest(key, transcript_hash, self.hash_name)

    def resumption_psk(self, resumption_master: bytes, nonce: bytes) -> bytes:
        return hkdf_expand_label(resumption_master, b"resumption", nonce, self.hash_length, self.hash_name)
