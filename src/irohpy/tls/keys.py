"""Ed25519 keys as iroh's TLS uses them: a 32-byte seed in, a checked 32-byte public key out.

iroh verifies with ed25519-dalek's ``verify_strict``, which refuses small-order public keys;
OpenSSL (behind ``cryptography``) does not. A small-order key such as the identity point lets
anyone forge signatures, so accepting one would let any peer claim that EndpointId. We apply
the same rule as iroh before a key becomes a peer identity.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from irohpy.errors import TlsError

KEY_LENGTH = 32

_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
# y of the two order-8 point pairs (x and -x share y); d*y^4 + 2*y^2 - 1 = 0 for both.
_ORDER_8_Y = 0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826
# Every point of order 1, 2, 4 or 8 has one of these y coordinates.
SMALL_ORDER_Y = frozenset({1, _P - 1, 0, _ORDER_8_Y, _P - _ORDER_8_Y})


def private_key(secret_key: bytes | Ed25519PrivateKey) -> Ed25519PrivateKey:
    """The signing key for a 32-byte seed (iroh's SecretKey bytes) or an existing key."""
    if isinstance(secret_key, Ed25519PrivateKey):
        return secret_key
    if not isinstance(secret_key, bytes | bytearray) or len(secret_key) != KEY_LENGTH:
        raise TlsError(f"a secret key must be a {KEY_LENGTH}-byte Ed25519 seed or an Ed25519PrivateKey")
    return Ed25519PrivateKey.from_private_bytes(bytes(secret_key))


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key (the EndpointId) of a signing key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_public_key(raw: bytes) -> Ed25519PublicKey:
    """Accept only a canonical encoding of a curve point that is not of small order."""
    if len(raw) != KEY_LENGTH:
        raise TlsError(f"an Ed25519 public key has {KEY_LENGTH} bytes, got {len(raw)}")
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise TlsError("Ed25519 public key is not canonically encoded")
    if y in SMALL_ORDER_Y:
        raise TlsError("Ed25519 public key is a small-order point")
    y2 = y * y % _P
    # The point exists iff x^2 = (y^2 - 1) / (d*y^2 + 1) has a square root (Euler's criterion).
    x2 = (y2 - 1) * pow(_D * y2 + 1, -1, _P) % _P
    if pow(x2, (_P - 1) // 2, _P) != 1:
        raise TlsError("Ed25519 public key is not a point on the curve")
    return Ed25519PublicKey.from_public_bytes(bytes(raw))
