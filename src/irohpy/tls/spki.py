"""RFC 7250 raw public keys: the Ed25519 SubjectPublicKeyInfo that replaces the X.509 certificate.

An RFC 7250 certificate entry has the same framing as an X.509 one, only its bytes are the
44-byte DER SPKI. aioquic writes each local entry as ``cert.public_bytes(Encoding.DER)`` and
verifies CertificateVerify with ``peer_cert.public_key()``, so two tiny objects stand in for
``x509.Certificate`` and aioquic's own signing and checking code runs unchanged.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding

from irohpy.errors import TlsError
from irohpy.tls.keys import KEY_LENGTH, check_public_key

# SEQUENCE { SEQUENCE { OID 1.3.101.112 (Ed25519) } BIT STRING (0 unused bits) <32 bytes> }
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
SPKI_LENGTH = len(SPKI_PREFIX) + KEY_LENGTH


def encode_spki(public_key: bytes) -> bytes:
    """The DER SPKI of a raw 32-byte Ed25519 public key."""
    if len(public_key) != KEY_LENGTH:
        raise TlsError(f"an Ed25519 public key has {KEY_LENGTH} bytes, got {len(public_key)}")
    return SPKI_PREFIX + bytes(public_key)


def parse_spki(spki: bytes) -> bytes:
    """The raw public key in an Ed25519 SPKI.

    DER leaves exactly one encoding for an Ed25519 SPKI, so a byte comparison of the prefix is a
    complete parse, and the same check iroh's dialer makes (it compares SPKIs byte for byte).
    """
    if len(spki) != SPKI_LENGTH or not spki.startswith(SPKI_PREFIX):
        raise TlsError(f"certificate is not a {SPKI_LENGTH}-byte Ed25519 SubjectPublicKeyInfo")
    public_key = bytes(spki[len(SPKI_PREFIX) :])
    check_public_key(public_key)
    return public_key


class SpkiCertificate:
    """Our own certificate entry: what aioquic needs from ``x509.Certificate`` to send it."""

    def __init__(self, public_key: bytes) -> None:
        self.spki = encode_spki(public_key)

    def public_bytes(self, encoding: Encoding = Encoding.DER) -> bytes:
        if encoding is not Encoding.DER:
            raise TlsError("a raw public key certificate only has a DER form")
        return self.spki


class PeerCertificate:
    """The peer's checked raw public key, in the shape aioquic's CertificateVerify check reads."""

    def __init__(self, spki: bytes) -> None:
        self.peer_id = parse_spki(spki)
        self._key = Ed25519PublicKey.from_public_bytes(self.peer_id)

    def public_key(self) -> Ed25519PublicKey:
        return self._key
