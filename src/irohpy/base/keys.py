"""Ed25519 identities as iroh uses them: SecretKey, PublicKey (= EndpointId) and Signature.

iroh verifies with ed25519-dalek's ``verify_strict``, which refuses small-order keys and
signatures whose R is of small order; OpenSSL (behind ``cryptography``) checks neither, and it
does not even check that a public key is a curve point. We apply those rules ourselves so that
an id that parses here is one iroh can authenticate, and a signature that verifies here verifies
there too.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hmac
import os
import secrets
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from irohpy.errors import DecodeError, InvalidKey, InvalidSignature, KeyFileError

KEY_LENGTH: Final = 32
SIGNATURE_LENGTH: Final = 64

_P: Final = 2**255 - 19
_L: Final = 2**252 + 27742317777372353535851937790883648493
_D: Final = -121665 * pow(121666, -1, _P) % _P
# y of the order-8 points; every point of order 1, 2, 4 or 8 has y in _SMALL_ORDER_Y.
_ORDER_8_Y: Final = 0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826
_SMALL_ORDER_Y: Final = frozenset({1, _P - 1, 0, _ORDER_8_Y, _P - _ORDER_8_Y})

_HEX_LOWER: Final = frozenset("0123456789abcdef")
_HEX_ANY: Final = _HEX_LOWER | frozenset("ABCDEF")
_B32_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_Z32_ALPHABET: Final = "ybndrfg8ejkmcpqxot1uwisza345h769"
_TO_Z32: Final = str.maketrans(_B32_ALPHABET, _Z32_ALPHABET)
_FROM_Z32: Final = str.maketrans(_Z32_ALPHABET, _B32_ALPHABET)
# Unpadded base32 lengths that end on a whole byte (RFC 4648 §6).
_B32_VALID_TAIL: Final = frozenset({0, 2, 4, 5, 7})
_MAX_KEY_FILE: Final = 1024


def encode_base32(data: bytes) -> str:
    """RFC 4648 base32, no padding, lowercase: iroh's ticket and id alphabet."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def decode_base32(text: str) -> bytes:
    """Decode unpadded RFC 4648 base32 in either case, rejecting what data-encoding rejects.

    That includes lengths that cannot come from whole bytes and non-zero trailing bits, so
    each byte string has exactly one accepted spelling (up to case).
    """
    if not text.isascii():
        raise DecodeError("base32 text contains non-ASCII characters")
    upper = text.upper()
    if len(upper) % 8 not in _B32_VALID_TAIL:
        raise DecodeError(f"base32 text has an impossible length ({len(upper)} characters)")
    if any(c not in _B32_ALPHABET for c in upper):
        raise DecodeError("base32 text contains characters outside the RFC 4648 alphabet")
    data = base64.b32decode(upper + "=" * (-len(upper) % 8))
    if base64.b32encode(data).decode("ascii").rstrip("=") != upper:
        raise DecodeError("base32 text has non-zero trailing bits")
    return data


def encode_z32(data: bytes) -> str:
    """z-base-32 (MSB first, no padding), the alphabet pkarr uses in DNS names."""
    return base64.b32encode(data).decode("ascii").rstrip("=").translate(_TO_Z32)


def decode_z32(text: str) -> bytes:
    """Decode z-base-32; it has one case only, so uppercase input is an error."""
    if not text.isascii() or any(c not in _Z32_ALPHABET for c in text):
        raise DecodeError("z-base-32 text contains characters outside its alphabet")
    return decode_base32(text.translate(_FROM_Z32))


def _decode_key_text(text: str, what: str) -> bytes:
    """The 32 bytes of a key written the way iroh's ``FromStr`` accepts: lowercase hex or base32.

    Messages never quote the input: it may be a secret.
    """
    if not isinstance(text, str):
        raise InvalidKey(f"{what} text must be str, not {type(text).__name__}")
    if len(text) == 2 * KEY_LENGTH:
        if any(c not in _HEX_LOWER for c in text):
            raise InvalidKey(f"{what} hex must be 64 lowercase hex characters")
        return bytes.fromhex(text)
    if len(text) == 52:
        try:
            return decode_base32(text)
        except DecodeError as exc:
            raise InvalidKey(f"{what} is not valid base32: {exc}") from None
    raise InvalidKey(f"{what} must be 64 lowercase hex or 52 base32 characters, got {len(text)}")


def _y_coordinate(raw: bytes) -> int:
    return int.from_bytes(raw, "little") & ((1 << 255) - 1)


def _is_small_order(raw: bytes) -> bool:
    return _y_coordinate(raw) % _P in _SMALL_ORDER_Y


def _check_point(raw: bytes) -> None:
    """Raise unless ``raw`` is the canonical encoding of a curve point of large order."""
    y = _y_coordinate(raw)
    if y >= _P:
        raise InvalidKey("public key is not a canonical Ed25519 encoding")
    if y in _SMALL_ORDER_Y:
        raise InvalidKey("public key is a small-order Ed25519 point")
    y2 = y * y % _P
    x2 = (y2 - 1) * pow(_D * y2 + 1, -1, _P) % _P
    if pow(x2, (_P - 1) // 2, _P) != 1:
        raise InvalidKey("public key is not a point on the Ed25519 curve")


@functools.lru_cache(maxsize=16384)
def _checked_key(raw: bytes) -> Ed25519PublicKey:
    """The point check costs ~0.2 ms in pure Python; relays and endpoints see the same
    few keys on every frame, so each valid key is checked once. Failures are not cached."""
    _check_point(raw)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidKey(f"public key rejected by the Ed25519 backend: {exc}") from None


def _as_bytes(data: object, length: int, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidKey(f"{what} must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) != length:
        raise InvalidKey(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _fsync_directory(directory: str) -> None:
    """Make a rename durable. Best effort: the key is already in place, and some platforms
    and file systems cannot sync a directory."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Signature:
    """A 64-byte Ed25519 signature (R || s)."""

    __slots__ = ("_bytes",)
    _bytes: bytes

    def __init__(self, data: bytes) -> None:
        object.__setattr__(self, "_bytes", _as_bytes(data, SIGNATURE_LENGTH, "a signature"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        return cls(data)

    def to_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Signature is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signature):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash((Signature, self._bytes))

    def __reduce__(self) -> tuple[type[Signature], tuple[bytes]]:
        return (Signature, (self._bytes,))

    def __repr__(self) -> str:
        return f"Signature({self._bytes.hex()})"


@functools.total_ordering
class PublicKey:
    """An Ed25519 public key; as ``EndpointId`` it names an iroh endpoint.

    Construction validates the point, so holding a PublicKey means holding a key iroh's
    ``verify_strict`` can use. Ordering is by bytes, like iroh's ``Ord``.
    """

    __slots__ = ("_bytes", "_key")
    _bytes: bytes
    _key: Ed25519PublicKey

    def __init__(self, data: bytes) -> None:
        raw = _as_bytes(data, KEY_LENGTH, "a public key")
        object.__setattr__(self, "_bytes", raw)
        object.__setattr__(self, "_key", _checked_key(raw))

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        return cls(data)

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """Parse 64 lowercase hex characters or 52 base32 characters (any case), as iroh does."""
        return cls(_decode_key_text(text, "public key"))

    @classmethod
    def from_z32(cls, text: str) -> PublicKey:
        try:
            raw = decode_z32(text)
        except DecodeError as exc:
            raise InvalidKey(f"public key is not valid z-base-32: {exc}") from None
        return cls(raw)

    def to_bytes(self) -> bytes:
        return self._bytes

    @property
    def as_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def to_base32(self) -> str:
        return encode_base32(self._bytes)

    def to_z32(self) -> str:
        return encode_z32(self._bytes)

    def fmt_short(self) -> str:
        """The first 5 bytes in hex: iroh's short form for logs and UIs."""
        return self._bytes[:5].hex()

    def verify(self, message: bytes, signature: Signature) -> None:
        """Raise InvalidSignature unless ``signature`` is valid under iroh's strict rules."""
        if not isinstance(signature, Signature):
            raise InvalidSignature(f"expected a Signature, not {type(signature).__name__}")
        raw = signature.to_bytes()
        if _is_small_order(raw[:32]):
            raise InvalidSignature("signature R is a small-order point")
        if int.from_bytes(raw[32:], "little") >= _L:
            raise InvalidSignature("signature s is not reduced")
        try:
            self._key.verify(raw, bytes(message))
        except _CryptoInvalidSignature:
            raise InvalidSignature(f"signature does not verify for {self.fmt_short()}") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PublicKey is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash((PublicKey, self._bytes))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._bytes < other._bytes

    def __str__(self) -> str:
        return self._bytes.hex()

    def __reduce__(self) -> tuple[type[PublicKey], tuple[bytes]]:
        return (PublicKey, (self._bytes,))

    def __repr__(self) -> str:
        return f"PublicKey({self._bytes.hex()})"


EndpointId = PublicKey


class SecretKey:
    """A 32-byte Ed25519 seed. It never shows its bytes unless asked with ``to_bytes()``."""

    __slots__ = ("_private", "_public", "_seed")
    _seed: bytes
    _private: Ed25519PrivateKey
    _public: PublicKey

    def __init__(self, seed: bytes) -> None:
        raw = _as_bytes(seed, KEY_LENGTH, "a secret key")
        private = Ed25519PrivateKey.from_private_bytes(raw)
        public = PublicKey(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        object.__setattr__(self, "_seed", raw)
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "_public", public)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(secrets.token_bytes(KEY_LENGTH))

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretKey:
        return cls(data)

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        """Parse 64 lowercase hex characters (or 52 base32, as iroh also accepts)."""
        return cls(_decode_key_text(text, "secret key"))

    def to_bytes(self) -> bytes:
        return self._seed

    def public(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> Signature:
        return Signature(self._private.sign(bytes(message)))

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The ``cryptography`` key, for the TLS layer."""
        return self._private

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SecretKey:
        """Read a key file: 64 hex characters (surrounding whitespace ignored) or 32 raw bytes."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = f.read(_MAX_KEY_FILE + 1)
        except FileNotFoundError:
            raise KeyFileError(f"key file {name} does not exist") from None
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise KeyFileError(f"cannot read key file {name}: {_reason(exc)}") from None
        if len(data) == KEY_LENGTH:
            return cls(data)
        if len(data) > _MAX_KEY_FILE:
            raise KeyFileError(f"key file {name} is too large to hold a key")
        text = data.strip(b" \t\r\n")
        if len(text) != 2 * KEY_LENGTH:
            raise KeyFileError(
                f"key file {name} has the wrong length: expected 64 hex characters or 32 raw bytes,"
                f" found {len(data)} bytes"
            )
        if any(chr(c) not in _HEX_ANY for c in text):
            raise KeyFileError(f"key file {name} is corrupt: it is not hex")
        return cls(bytes.fromhex(text.decode("ascii")))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as hex, readable by the owner only, replacing any old file atomically.

        The key goes to a fresh 0600 file in the same directory, which is synced and then renamed
        over ``path``: readers see the old file or the new one, never a partial or world-readable
        key.
        """
        target = os.path.abspath(os.fspath(path))
        directory = os.path.dirname(target)
        tmp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot write key file {target}: {_reason(exc)}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), 0o600)  # the umask may have cleared owner bits
                f.write((self._seed.hex() + "\n").encode("ascii"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise KeyFileError(f"cannot write key file {target}: {_reason(exc)}") from None
        _fsync_directory(directory)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SecretKey is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash((SecretKey, self._public.to_bytes()))

    def __repr__(self) -> str:
        return f"SecretKey(public={self._public.fmt_short()})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[SecretKey], tuple[bytes]]:
        return (SecretKey, (self._seed,))
