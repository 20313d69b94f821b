"""QUIC packet protection (RFC 9001 §5–6) on ``cryptography``: secrets, AEAD, header protection.

- ``hkdf_expand_label`` and ``initial_secrets`` derive keys (TLS 1.3 labels, v1 Initial salt).
- ``PacketKey`` is the AEAD key and IV of one direction and one key phase. Its nonce takes a
  path id: multipath (draft-ietf-quic-multipath) XORs ``path_id (32 bits) || packet number
  (64 bits)`` into the IV, which for path 0 is RFC 9001's nonce.
- ``HeaderProtection`` makes masks for a whole burst of packets in one AES-ECB call over the
  concatenated samples (ChaCha20 needs one call per sample).
- ``OneRttKeys`` follows key updates: it keeps previous, current and next receive keys and
  flips the key phase on either side's update.
"""

from __future__ import annotations

import hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from irohpy.errors import QuicDecryptError, QuicError

AES_128_GCM_SHA256: Final = 0x1301
AES_256_GCM_SHA384: Final = 0x1302
CHACHA20_POLY1305_SHA256: Final = 0x1303

INITIAL_SALT_V1: Final = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
RETRY_KEY_V1: Final = bytes.fromhex("be0c690b9f66575a1d766b54e368c84e")
RETRY_NONCE_V1: Final = bytes.fromhex("461599d35d632bf2239825bb")

TAG_SIZE: Final = 16
SAMPLE_SIZE: Final = 16
MASK_STRIDE: Final = 16
"""``HeaderProtection.masks`` returns one 16-byte slot per sample; the first 5 bytes are the mask."""

_ZEROS16: Final = bytes(16)


def _suite_hash(cipher_suite: int) -> str:
    if cipher_suite == AES_256_GCM_SHA384:
        return "sha384"
    if cipher_suite == AES_128_GCM_SHA256 or cipher_suite == CHACHA20_POLY1305_SHA256:
        return "sha256"
    raise QuicError(f"unsupported cipher suite 0x{cipher_suite:04x}", error_code=QuicError.INTERNAL_ERROR)


def _suite_key_size(cipher_suite: int) -> int:
    return 16 if cipher_suite == AES_128_GCM_SHA256 else 32


def hkdf_extract(salt: bytes, ikm: bytes, hash_name: str = "sha256") -> bytes:
    """HKDF-Extract (RFC 5869): HMAC(salt, ikm)."""
    return hmac.digest(salt, ikm, hash_name)


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int, hash_name: str = "sha256") -> bytes:
    """TLS 1.3 HKDF-Expand-Label (RFC 8446 §7.1) with the ``tls13 `` prefix."""
    full_label = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label + bytes((len(context),)) + context
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes((counter,)), hash_name)
        out += block
        counter += 1
    return out[:length]


def initial_secrets(dcid: bytes, salt: bytes = INITIAL_SALT_V1) -> tuple[bytes, bytes]:
    """Client and server Initial secrets for the client's first Destination CID (RFC 9001 §5.2)."""
    initial = hkdf_extract(salt, dcid)
    client = hkdf_expand_label(initial, b"client in", b"", 32)
    server = hkdf_expand_label(initial, b"server in", b"", 32)
    return client, server


def next_secret(cipher_suite: int, secret: bytes) -> bytes:
    """The next key-phase secret (RFC 9001 §6.1): HKDF-Expand-Label(secret, "quic ku")."""
    hash_name = _suite_hash(cipher_suite)
    return hkdf_expand_label(secret, b"quic ku", b"", len(secret), hash_name)


class PacketKey:
    """AEAD key and IV of one direction in one key phase."""

    __slots__ = ("cipher_suite", "secret", "_iv", "_aead")

    def __init__(self, cipher_suite: int, secret: bytes) -> None:
        hash_name = _suite_hash(cipher_suite)
        key = hkdf_expand_label(secret, b"quic key", b"", _suite_key_size(cipher_suite), hash_name)
        iv = hkdf_expand_label(secret, b"quic iv", b"", 12, hash_name)
        self.cipher_suite = cipher_suite
        self.secret = secret
        self._iv = int.from_bytes(iv, "big")
        self._aead: AESGCM | ChaCha20Poly1305 = (
            ChaCha20Poly1305(key) if cipher_suite == CHACHA20_POLY1305_SHA256 else AESGCM(key)
        )

    def next_generation(self) -> PacketKey:
        """The key of the next key phase."""
        return PacketKey(self.cipher_suite, next_secret(self.cipher_suite, self.secret))

    def nonce(self, packet_number: int, path_id: int = 0) -> bytes:
        return (self._iv ^ ((path_id << 64) | packet_number)).to_bytes(12, "big")

    def seal(self, header: bytes, payload: bytes | memoryview, packet_number: int, path_id: int = 0) -> bytes:
        """Ciphertext and tag of ``payload``, authenticating ``header`` (unprotected)."""
        nonce = (self._iv ^ ((path_id << 64) | packet_number)).to_bytes(12, "big")
        return self._aead.encrypt(nonce, payload, header)

    def open(self, header: bytes, ciphertext: bytes, packet_number: int, path_id: int = 0) -> bytes:
        """Plaintext of ``ciphertext``; QuicDecryptError if it does not authenticate."""
        nonce = (self._iv ^ ((path_id << 64) | packet_number)).to_bytes(12, "big")
        try:
            return self._aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise QuicDecryptError("packet does not authenticate") from None


class HeaderProtection:
    """Header-protection masks (RFC 9001 §5.4), batched over a burst."""

    __slots__ = ("cipher_suite", "_key", "_ecb")

    def __init__(self, cipher_suite: int, secret: bytes) -> None:
        hash_name = _suite_hash(cipher_suite)
        self.cipher_suite = cipher_suite
        self._key = hkdf_expand_label(secret, b"quic hp", b"", _suite_key_size(cipher_suite), hash_name)
        self._ecb: CipherContext | None = (
            None
            if cipher_suite == CHACHA20_POLY1305_SHA256
            else Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()
        )

    def masks(self, samples: bytes) -> bytes:
        """Masks for concatenated 16-byte samples: ``MASK_STRIDE`` bytes per sample, in order."""
        if len(samples) % SAMPLE_SIZE:
            raise QuicError("samples must be 16 bytes each", error_code=QuicError.INTERNAL_ERROR)
        ecb = self._ecb
        if ecb is not None:
            return ecb.update(samples)
        key = self._key
        return b"".join(
            [
                Cipher(algorithms.ChaCha20(key, samples[i : i + SAMPLE_SIZE]), None).encryptor().update(_ZEROS16)
                for i in range(0, len(samples), SAMPLE_SIZE)
            ]
        )

    def mask(self, sample: bytes) -> bytes:
        """The 5-byte mask for one sample."""
        return self.masks(sample)[:5]


class Protection:
    """Packet key and header protection of one direction at one encryption level."""

    __slots__ = ("key", "hp")

    def __init__(self, cipher_suite: int, secret: bytes) -> None:
        self.key = PacketKey(cipher_suite, secret)
        self.hp = HeaderProtection(cipher_suite, secret)


def initial_protection(dcid: bytes, is_client: bool) -> tuple[Protection, Protection]:
    """``(send, receive)`` Initial protection for the client's first Destination CID."""
    client, server = initial_secrets(dcid)
    client_side = Protection(AES_128_GCM_SHA256, client)
    server_side = Protection(AES_128_GCM_SHA256, server)
    return (client_side, server_side) if is_client else (server_side, client_side)


def retry_integrity_tag(pseudo_packet: bytes) -> bytes:
    """The Retry integrity tag (RFC 9001 §5.8) over the Retry pseudo-packet."""
    return AESGCM(RETRY_KEY_V1).encrypt(RETRY_NONCE_V1, b"", pseudo_packet)


class OneRttKeys:
    """1-RTT keys through key updates (RFC 9001 §6).

    Header protection never changes. ``key_phase`` is the bit this side sends. ``update()``
    moves both directions to the next phase: call it to start an update (the connection
    checks that the last one was acknowledged); ``open`` calls it itself when the peer's
    packet authenticates under the next keys. Packets of the previous phase still open until
    ``discard_previous()``.
    """

    __slots__ = ("send_hp", "recv_hp", "send", "recv", "recv_next", "recv_prev", "key_phase", "_phase_first_pn")

    def __init__(self, cipher_suite: int, send_secret: bytes, recv_secret: bytes) -> None:
        self.send_hp = HeaderProtection(cipher_suite, send_secret)
        self.recv_hp = HeaderProtection(cipher_suite, recv_secret)
        self.send = PacketKey(cipher_suite, send_secret)
        self.recv = PacketKey(cipher_suite, recv_secret)
        self.recv_next = self.recv.next_generation()
        self.recv_prev: PacketKey | None = None
        self.key_phase = 0
        self._phase_first_pn = -1

    def update(self) -> None:
        """Move to the next key phase in both directions."""
        self.key_phase ^= 1
        self.send = self.send.next_generation()
        self.recv_prev = self.recv
        self.recv = self.recv_next
        self.recv_next = self.recv.next_generation()
        self._phase_first_pn = -1

    def discard_previous(self) -> None:
        self.recv_prev = None

    def seal(self, header: bytes, payload: bytes, packet_number: int, path_id: int = 0) -> bytes:
        return self.send.seal(header, payload, packet_number, path_id)

    def open(self, header: bytes, ciphertext: bytes, packet_number: int, key_phase: int, path_id: int = 0) -> bytes:
        """Decrypt a short-header packet whose (unprotected) key phase bit is ``key_phase``."""
        first = self._phase_first_pn
        if key_phase == self.key_phase:
            plain = self.recv.open(header, ciphertext, packet_number, path_id)
            if first < 0 or packet_number < first:
                self._phase_first_pn = packet_number
            return plain
        prev = self.recv_prev
        if prev is not None and (first < 0 or packet_number < first):
            return prev.open(header, ciphertext, packet_number, path_id)
        plain = self.recv_next.open(header, ciphertext, packet_number, path_id)
        self.update()
        self._phase_first_pn = packet_number
        return plain
