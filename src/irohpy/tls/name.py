"""The TLS server name that carries the EndpointId a client dials: ``<base32hex(id)>.iroh.invalid``.

iroh encodes the 32-byte key with RFC 4648 §7 "extended hex" base32 (lowercase, no padding;
``data_encoding::BASE32_DNSSEC``): 52 characters fit a DNS label where 64 hex digits would not.
The name also scopes session tickets to one EndpointId.
"""

from __future__ import annotations

import base64
import binascii

from irohpy.errors import TlsError
from irohpy.tls.keys import KEY_LENGTH, check_public_key

SUFFIX = ".iroh.invalid"
LABEL_LENGTH = 52
_ALPHABET = frozenset("0123456789abcdefghijklmnopqrstuv")


def server_name(peer_id: bytes) -> str:
    """The name a client sends (and keys its tickets by) when dialing ``peer_id``."""
    if len(peer_id) != KEY_LENGTH:
        raise TlsError(f"an EndpointId has {KEY_LENGTH} bytes, got {len(peer_id)}")
    label = base64.b32hexencode(bytes(peer_id)).decode("ascii").rstrip("=").lower()
    return label + SUFFIX


def peer_id_from_server_name(name: str) -> bytes:
    """The EndpointId in a server name; rejects anything :func:`server_name` would not produce.

    Like iroh, the label may use either case, but its unused trailing bits must be zero and the
    key must be a valid Ed25519 point.
    """
    if not name.endswith(SUFFIX):
        raise TlsError(f"not an iroh server name (expected <id>{SUFFIX}): {name!r}")
    label = name[: -len(SUFFIX)].lower()
    if len(label) != LABEL_LENGTH or not _ALPHABET.issuperset(label):
        raise TlsError(f"not a base32hex EndpointId label of {LABEL_LENGTH} characters: {name!r}")
    try:
        peer_id = base64.b32hexdecode(label.upper() + "====")
    except binascii.Error as exc:
        raise TlsError(f"bad base32hex in server name {name!r}") from exc
    if server_name(peer_id) != label + SUFFIX:
        raise TlsError(f"non-canonical base32hex (trailing bits set) in server name {name!r}")
    check_public_key(peer_id)
    return peer_id
