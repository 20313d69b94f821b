"""BEP 44 mutable items as iroh uses them (no salt), and the store a DHT node keeps. No I/O.

An item is (k, seq, v, sig) with ``sig`` an Ed25519 signature by ``k`` over
``bep44_signable(seq, v)``; its target is SHA1(k). A storage node accepts an item only if the
signature verifies (strict rules), ``v`` is at most 1000 bytes (the pkarr DNS message limit),
and ``seq`` is newer than what it holds (the same seq and value is a refresh).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from irohpy.base.keys import PublicKey, SecretKey, Signature
from irohpy.errors import DhtError, InvalidKey, InvalidSignature
from irohpy.lookup.dht.krpc import (
    CAS_MISMATCH,
    INVALID_SIGNATURE,
    MESSAGE_TOO_BIG,
    PROTOCOL_ERROR,
    SEQ_TOO_LOW,
)
from irohpy.lookup.signing import bep44_signable

MAX_VALUE = 1000
ITEM_LIFETIME = 7200.0
TOKEN_ROTATION = 300.0


def mutable_target(public_key: PublicKey) -> bytes:
    """Where a no-salt mutable item lives in the DHT: SHA1 of the public key."""
    return hashlib.sha1(public_key.to_bytes()).digest()


@dataclass(frozen=True)
class MutableItem:
    public_key: PublicKey
    seq: int
    value: bytes
    signature: Signature

    @classmethod
    def sign(cls, secret_key: SecretKey, seq: int, value: bytes) -> MutableItem:
        return cls(secret_key.public(), seq, bytes(value), secret_key.sign(bep44_signable(seq, value)))

    @classmethod
    def from_wire(cls, k: bytes, seq: int, v: bytes, sig: bytes) -> MutableItem:
        """Build from KRPC fields and check it; raises DhtError with the BEP 44 code."""
        try:
            item = cls(PublicKey(k), seq, v, Signature(sig))
        except InvalidKey as exc:
            raise DhtError(f"invalid key or signature: {exc}", code=INVALID_SIGNATURE) from None
        item.check()
        return item

    @property
    def target(self) -> bytes:
        return mutable_target(self.public_key)

    def check(self) -> None:
        """Raise DhtError unless the item is one a storage node may accept."""
        if len(self.value) > MAX_VALUE:
            raise DhtError(f"v of {len(self.value)} bytes exceeds {MAX_VALUE}", code=MESSAGE_TOO_BIG)
        if self.seq < 0:
            raise DhtError("negative seq", code=PROTOCOL_ERROR)
        try:
            self.public_key.verify(bep44_signable(self.seq, self.value), self.signature)
        except InvalidSignature as exc:
            raise DhtError(str(exc), code=INVALID_SIGNATURE) from None


@dataclass
class _Stored:
    item: MutableItem
    stored_at: float


class MutableStore:
    """The items this node stores for others, newest seq per target, expiring unrefreshed ones."""

    def __init__(self, *, max_items: int = 10_000, lifetime: float = ITEM_LIFETIME) -> None:
        self.max_items = max_items
        self.lifetime = lifetime
        self._items: dict[bytes, _Stored] = {}

    def put(self, item: MutableItem, now: float, *, cas: int | None = None) -> None:
        """Store ``item`` or raise DhtError (bad signature, too big, CAS mismatch, old seq)."""
        item.check()
        current = self.get(item.target, now)
        if current is not None:
            if cas is not None and cas != current.seq:
                raise DhtError(f"cas {cas} does not match seq {current.seq}", code=CAS_MISMATCH)
            if item.seq < current.seq or (item.seq == current.seq and item.value != current.value):
                raise DhtError(f"seq {item.seq} is not newer than {current.seq}", code=SEQ_TOO_LOW)
        elif len(self._items) >= self.max_items:
            self.expire(now)
            if len(self._items) >= self.max_items:
                oldest = min(self._items, key=lambda t: self._items[t].stored_at)
                del self._items[oldest]
        self._items[item.target] = _Stored(item, now)

    def get(self, target: bytes, now: float) -> MutableItem | None:
        stored = self._items.get(target)
        if stored is None:
            return None
        if now - stored.stored_at > self.lifetime:
            del self._items[target]
            return None
        return stored.item

    def expire(self, now: float) -> None:
        for target in [t for t, s in self._items.items() if now - s.stored_at > self.lifetime]:
            del self._items[target]

    def __len__(self) -> int:
        return len(self._items)


class TokenManager:
    """Write tokens (BEP 5): a keyed hash of the asker's IP, valid for two rotation periods.

    A put or announce must present a token we handed to that IP recently, so nobody can write
    on behalf of an address they do not receive packets at.
    """

    def __init__(self, now: float, *, rotation: float = TOKEN_ROTATION) -> None:
        self.rotation = rotation
        self._secrets = [secrets.token_bytes(16), secrets.token_bytes(16)]
        self._rotated_at = now

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= self.rotation:
            self._secrets = [secrets.token_bytes(16), self._secrets[0]]
            self._rotated_at = now

    def issue(self, host: str, now: float) -> bytes:
        self._rotate(now)
        return self._token(self._secrets[0], host)

    def valid(self, token: bytes, host: str, now: float) -> bool:
        self._rotate(now)
        return any(hmac.compare_digest(token, self._token(s, host)) for s in self._secrets)

    @staticmethod
    def _token(secret: bytes, host: str) -> bytes:
        return hashlib.sha1(secret + host.encode()).digest()[:8]
