"""Ed25519 keys as iroh's TLS uses them: a 32-byte seed in, a checked public key out.

The point checks (canonical encoding, on the curve, not of small order, as
ed25519-dalek's ``verify_strict`` demands) live with the keys in
:mod:`irohpy.base.keys`; TLS only translates their error into a TLS one.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from irohpy.base.keys import KEY_LENGTH, PublicKey
from irohpy.errors import InvalidKey, TlsError

__all__ = ["KEY_LENGTH", "check_public_key", "private_key", "public_key_bytes"]


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
    """Accept only a key iroh would accept as a peer identity."""
    try:
        PublicKey.from_bytes(bytes(raw))
    except InvalidKey as exc:
        raise TlsError(f"peer key rejected: {exc}") from None
    return Ed25519PublicKey.from_public_bytes(bytes(raw))
