"""Namespace and author keys of iroh-docs.

A namespace is a document: its Ed25519 secret is the write capability, its public key (the
``NamespaceId``) the read capability. An author is a second Ed25519 key that signs every entry
it writes. Text forms follow iroh-docs: 64 lowercase hex characters for ids and secrets alike.
"""

from __future__ import annotations

import functools
from typing import Final, Self

from irohpy.base.keys import KEY_LENGTH, PublicKey, SecretKey, Signature
from irohpy.errors import InvalidKey

_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _parse_hex32(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be text, not {type(text).__name__}")
    if len(text) != 2 * KEY_LENGTH or not set(text) <= _HEX:
        raise InvalidKey(f"{what} must be {2 * KEY_LENGTH} hex characters")
    return bytes.fromhex(text)


def _check32(data: object, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be {KEY_LENGTH} bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) != KEY_LENGTH:
        raise InvalidKey(f"{what} must be {KEY_LENGTH} bytes, got {len(raw)}")
    return raw


@functools.lru_cache(maxsize=4096)
def verifying_key(raw: bytes) -> PublicKey:
    """The checked public key for 32 id bytes, cached: every synced entry names two of them."""
    return PublicKey.from_bytes(raw)


class _Id:
    """32 public bytes, compared and hashed by value, shown as hex."""

    __slots__ = ("_bytes",)
    _bytes: bytes

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        object.__setattr__(self, "_bytes", _check32(data, type(self).__name__))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        return cls(data)

    @classmethod
    def parse(cls, text: str) -> Self:
        return cls(_parse_hex32(text, cls.__name__))

    def to_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def public_key(self) -> PublicKey:
        """The Ed25519 key behind the id; InvalidKey if the bytes are not a usable point."""
        return verifying_key(self._bytes)

    def fmt_short(self) -> str:
        return self._bytes.hex()[:10]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._bytes == other._bytes  # type: ignore[attr-defined]

    def __lt__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._bytes < other._bytes  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._bytes))

    def __str__(self) -> str:
        return self._bytes.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._bytes.hex()})"


class NamespaceId(_Id):
    """The public id of a document: its read capability, and the gossip topic it syncs on."""


class AuthorId(_Id):
    """The public id of an author."""


class _Secret:
    """An Ed25519 signing key that never shows its bytes unless asked with ``to_bytes()``."""

    __slots__ = ("_key",)
    _key: SecretKey

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        object.__setattr__(self, "_key", SecretKey.from_bytes(_check32(data, type(self).__name__)))

    @classmethod
    def generate(cls) -> Self:
        return cls(SecretKey.generate().to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        return cls(data)

    @classmethod
    def parse(cls, text: str) -> Self:
        return cls(_parse_hex32(text, cls.__name__))

    def to_bytes(self) -> bytes:
        return self._key.to_bytes()

    def sign(self, message: bytes) -> Signature:
        return self._key.sign(message)

    def public_key(self) -> PublicKey:
        return self._key.public()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._key))

    def __str__(self) -> str:
        """The secret as hex, like iroh-docs' Display: only call this to export it."""
        return self.to_bytes().hex()


class NamespaceSecret(_Secret):
    """The write capability of a document."""

    def id(self) -> NamespaceId:
        return NamespaceId(self.public_key().to_bytes())

    def __repr__(self) -> str:
        return f"NamespaceSecret(id={self.id().fmt_short()})"


class Author(_Secret):
    """A signing identity for entries; one author can write to any number of documents."""

    def id(self) -> AuthorId:
        return AuthorId(self.public_key().to_bytes())

    def __repr__(self) -> str:
        return f"Author(id={self.id().fmt_short()})"
