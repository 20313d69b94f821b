"""Entries: signed (namespace, author, key) -> (content hash, length, timestamp) records.

Layouts follow iroh-docs ``sync.rs``:

* the **record id** is ``namespace || author || key`` (32 + 32 + n bytes), and ids order as
  plain byte strings;
* the **signed payload** is the id followed by ``len (u64 BE) || hash (32) || timestamp (u64 BE)``,
  signed once by the namespace secret and once by the author;
* the **fingerprint** of an entry is ``BLAKE3(namespace || author || key || timestamp BE || hash)``;
* on the wire (postcard) a ``SignedEntry`` is ``author signature (64), namespace signature (64),
  id (length-prefixed bytes), len (varint), hash (32), timestamp (varint)``.

Records order by ``(timestamp, hash)``: a later write wins, the hash breaks ties. An entry with the
empty hash and length 0 is a deletion of every entry of its author whose key starts with its key.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Final

import blake3

from irohpy.base.keys import Signature
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, EntryRejected, InvalidKey, InvalidSignature
from irohpy.protocols.docs.keys import Author, AuthorId, NamespaceId, NamespaceSecret, verifying_key

ID_PREFIX_LEN: Final = 64
HASH_LEN: Final = 32
SIG_LEN: Final = 64
EMPTY_HASH: Final = blake3.blake3(b"").digest()
MAX_TIMESTAMP_FUTURE_SHIFT: Final = 10 * 60 * 1_000_000
"""Entries more than ten minutes (in microseconds) ahead of our clock are refused, as upstream."""
_U64: Final = (1 << 64) - 1


def now_micros() -> int:
    return time.time_ns() // 1000


class ContentStatus(enum.IntEnum):
    """How much of an entry's content a peer holds (sent along with entries during sync)."""

    COMPLETE = 0
    INCOMPLETE = 1
    MISSING = 2


@dataclass(frozen=True, slots=True)
class SignedEntry:
    """One entry with both signatures. Raw bytes inside, so that sync of many entries stays cheap."""

    namespace_bytes: bytes
    author_bytes: bytes
    key: bytes
    content_len: int
    content_hash: bytes
    timestamp: int
    author_signature: bytes
    namespace_signature: bytes

    # -- construction ------------------------------------------------------------

    @classmethod
    def sign(cls, namespace: NamespaceSecret, author: Author, key: bytes, content_hash: bytes,
             content_len: int, timestamp: int | None = None) -> SignedEntry:
        """Sign a new record; ``timestamp`` defaults to now, in microseconds since the Unix epoch."""
        if len(content_hash) != HASH_LEN:
            raise ValueError(f"content hash must be {HASH_LEN} bytes")
        if not 0 <= content_len <= _U64:
            raise ValueError("content length must fit in u64")
        ts = now_micros() if timestamp is None else timestamp
        if not 0 <= ts <= _U64:
            raise ValueError("timestamp must fit in u64")
        ns, au = namespace.id().to_bytes(), author.id().to_bytes()
        payload = signing_payload(ns, au, bytes(key), content_len, bytes(content_hash), ts)
        return cls(ns, au, bytes(key), content_len, bytes(content_hash), ts,
                   author.sign(payload).to_bytes(), namespace.sign(payload).to_bytes())

    # -- views -------------------------------------------------------------------

    @property
    def namespace(self) -> NamespaceId:
        return NamespaceId(self.namespace_bytes)

    @property
    def author(self) -> AuthorId:
        return AuthorId(self.author_bytes)

    @property
    def id(self) -> bytes:
        """The record id, ``namespace || author || key``: the sort key of the reconciliation."""
        return self.namespace_bytes + self.author_bytes + self.key

    @property
    def record(self) -> tuple[int, bytes]:
        """What last-writer-wins compares: ``(timestamp, hash)``."""
        return (self.timestamp, self.content_hash)

    def is_empty(self) -> bool:
        """An empty entry is a deletion marker (a tombstone for its key prefix)."""
        return self.content_hash == EMPTY_HASH

    def fingerprint(self) -> int:
        """This entry's share of a range fingerprint, as an int so that ranges XOR quickly."""
        h = blake3.blake3(self.namespace_bytes)
        h.update(self.author_bytes)
        h.update(self.key)
        h.update(self.timestamp.to_bytes(8, "big"))
        h.update(self.content_hash)
        return int.from_bytes(h.digest(), "little")

    def payload(self) -> bytes:
        return signing_payload(self.namespace_bytes, self.author_bytes, self.key, self.content_len,
                               self.content_hash, self.timestamp)

    # -- checks ------------------------------------------------------------------

    def verify(self) -> None:
        """Both signatures, under ed25519 ``verify_strict`` rules; EntryRejected if either fails."""
        payload = self.payload()
        try:
            verifying_key(self.namespace_bytes).verify(payload, Signature(self.namespace_signature))
            verifying_key(self.author_bytes).verify(payload, Signature(self.author_signature))
        except (InvalidSignature, InvalidKey) as exc:
            raise EntryRejected(f"bad signature: {exc}") from None

    def validate(self, namespace: bytes, now: int) -> None:
        """Everything iroh-docs checks before it stores a remote entry."""
        if self.namespace_bytes != namespace:
            raise EntryRejected("entry belongs to another namespace")
        if (self.content_hash == EMPTY_HASH) != (self.content_len == 0):
            raise EntryRejected("empty hash and zero length must go together")
        if self.timestamp > now + MAX_TIMESTAMP_FUTURE_SHIFT:
            raise EntryRejected("entry timestamp is too far in the future")
        self.verify()

    # -- postcard ----------------------------------------------------------------

    def encode(self, w: Writer) -> None:
        w.fixed(self.author_signature, SIG_LEN).fixed(self.namespace_signature, SIG_LEN)
        w.bytes_(self.namespace_bytes + self.author_bytes + self.key)
        w.u64(self.content_len).fixed(self.content_hash, HASH_LEN).u64(self.timestamp)

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.finish()

    @classmethod
    def decode(cls, r: Reader) -> SignedEntry:
        author_sig = r.fixed(SIG_LEN)
        namespace_sig = r.fixed(SIG_LEN)
        rid = decode_record_id(r)
        content_len = r.u64()
        content_hash = r.fixed(HASH_LEN)
        timestamp = r.u64()
        return cls(rid[:32], rid[32:64], rid[64:], content_len, content_hash, timestamp, author_sig, namespace_sig)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedEntry:
        r = Reader(data)
        entry = cls.decode(r)
        r.finish()
        return entry

    def __repr__(self) -> str:
        return (f"SignedEntry(author={self.author_bytes.hex()[:10]}, key={self.key!r}, "
                f"len={self.content_len}, hash={self.content_hash.hex()[:10]}, ts={self.timestamp})")


def signing_payload(namespace: bytes, author: bytes, key: bytes, content_len: int, content_hash: bytes,
                    timestamp: int) -> bytes:
    return b"".join((namespace, author, key, content_len.to_bytes(8, "big"), content_hash,
                     timestamp.to_bytes(8, "big")))


def decode_record_id(r: Reader) -> bytes:
    """A record id as postcard bytes; shorter than namespace + author is malformed."""
    rid = r.bytes_()
    if len(rid) < ID_PREFIX_LEN:
        raise DecodeError(f"record id must be at least {ID_PREFIX_LEN} bytes, got {len(rid)}")
    return rid
