"""A replica: one document's entries, capability and persistence, without any I/O of its own.

Local writes are signed here; remote entries (from sync or gossip) are validated here and only
then stored, so a forged entry never reaches the index or the database. Every change is persisted
in one store transaction before it becomes an event.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, DocsError, EntryRejected
from irohpy.protocols.docs.entry import EMPTY_HASH, ContentStatus, SignedEntry, now_micros
from irohpy.protocols.docs.keys import Author, AuthorId, NamespaceId, NamespaceSecret
from irohpy.protocols.docs.ranger import (
    EntryIndex,
    Inserted,
    Message,
    SyncOutcome,
    initial_message,
    process_message,
)
from irohpy.protocols.docs.store import DocStore


class CapabilityKind(enum.IntEnum):
    WRITE = 1
    READ = 2


class FilterKind(enum.IntEnum):
    PREFIX = 0
    EXACT = 1


@dataclass(frozen=True)
class DownloadPolicy:
    """Which entries' content is fetched: everything except the filters, or nothing except them."""

    everything: bool = True
    filters: tuple[tuple[FilterKind, bytes], ...] = ()

    @classmethod
    def everything_except(cls, *filters: tuple[FilterKind, bytes]) -> DownloadPolicy:
        return cls(True, tuple(filters))

    @classmethod
    def nothing_except(cls, *filters: tuple[FilterKind, bytes]) -> DownloadPolicy:
        return cls(False, tuple(filters))

    def matches(self, key: bytes) -> bool:
        hit = any(key.startswith(v) if k is FilterKind.PREFIX else key == v for k, v in self.filters)
        return hit != self.everything

    def to_bytes(self) -> bytes:
        """postcard, as upstream's ``DownloadPolicy`` (NothingExcept = 0, EverythingExcept = 1)."""
        w = Writer().variant(1 if self.everything else 0)
        w.u64(len(self.filters))
        for kind, value in self.filters:
            w.variant(int(kind)).bytes_(value)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> DownloadPolicy:
        r = Reader(data)
        tag = r.variant()
        if tag > 1:
            raise DecodeError(f"unknown download policy {tag}")
        n = r.u64()
        filters = []
        for _ in range(min(n, r.remaining + 1)):
            kind = r.variant()
            if kind > 1:
                raise DecodeError(f"unknown filter kind {kind}")
            filters.append((FilterKind(kind), r.bytes_()))
        r.finish()
        return cls(tag == 1, tuple(filters))


@dataclass(frozen=True, slots=True)
class InsertLocal:
    entry: SignedEntry


@dataclass(frozen=True, slots=True)
class InsertRemote:
    entry: SignedEntry
    from_: bytes
    content_status: ContentStatus
    should_download: bool


ReplicaEvent = InsertLocal | InsertRemote
Listener = Callable[[ReplicaEvent], None]
_MAX_KEY: Final = 64 * 1024


class Replica:
    """Entries of one namespace, in memory (for sync) and in the store (for restarts)."""

    def __init__(self, namespace: NamespaceId, secret: NamespaceSecret | None, store: DocStore) -> None:
        self.namespace = namespace
        self.secret = secret
        self._ns = namespace.to_bytes()
        self._store = store
        self.index = EntryIndex(store.load_entries(self._ns))
        raw = store.download_policy(self._ns)
        self.download_policy = DownloadPolicy() if raw is None else DownloadPolicy.from_bytes(raw)
        self.listeners: list[Listener] = []
        self.status_of: Callable[[SignedEntry], ContentStatus] = lambda _e: ContentStatus.MISSING

    @property
    def writable(self) -> bool:
        return self.secret is not None

    def upgrade(self, secret: NamespaceSecret) -> None:
        if secret.id() != self.namespace:
            raise DocsError("secret belongs to another namespace")
        self.secret = secret

    def set_download_policy(self, policy: DownloadPolicy) -> None:
        self._store.set_download_policy(self._ns, policy.to_bytes())
        self.download_policy = policy

    def _emit(self, event: ReplicaEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    # -- writes --------------------------------------------------------------------

    def _insert_local(self, author: Author, key: bytes, content_hash: bytes, content_len: int) -> tuple[SignedEntry, int]:
        if self.secret is None:
            raise DocsError("document is read-only: no namespace secret")
        key = bytes(key)
        if len(key) > _MAX_KEY:
            raise ValueError(f"keys are at most {_MAX_KEY} bytes")
        rid = self._ns + author.id().to_bytes() + key
        existing = self.index.get(rid)
        ts = now_micros()
        if existing is not None and ts <= existing.timestamp:
            ts = existing.timestamp + 1
        entry = SignedEntry.sign(self.secret, author, key, content_hash, content_len, ts)
        removed = self.index.put(entry)
        if removed is None:
            raise EntryRejected("a newer entry exists for this key or a prefix of it")
        self._persist([Inserted(entry, ContentStatus.COMPLETE, removed)])
        self._emit(InsertLocal(entry))
        return entry, len(removed)

    def insert(self, author: Author, key: bytes, content_hash: bytes, content_len: int) -> SignedEntry:
        if content_len == 0 or content_hash == EMPTY_HASH:
            raise ValueError("an entry needs content; use delete to remove keys")
        return self._insert_local(author, key, content_hash, content_len)[0]

    def delete_prefix(self, author: Author, prefix: bytes) -> int:
        """Insert an empty entry at ``prefix``: removes this author's entries under it. Returns how many."""
        return self._insert_local(author, prefix, EMPTY_HASH, 0)[1]

    def _persist(self, inserted: list[Inserted]) -> None:
        if not inserted:
            return
        try:
            self._store.apply(inserted)
        except DocsError:
            # The index ran ahead of the database: rebuild it from what really is stored.
            with contextlib.suppress(DocsError):
                self.index = EntryIndex(self._store.load_entries(self._ns))
            raise

    def validate(self, entry: SignedEntry) -> bool:
        """Whether a remote entry may be stored (see ``SignedEntry.validate``)."""
        try:
            entry.validate(self._ns, now_micros())
        except EntryRejected:
            return False
        return True

    def insert_remote(self, entry: SignedEntry, from_: bytes, status: ContentStatus) -> bool:
        """Validate and insert an entry from a peer; False if refused or not newer."""
        if not self.validate(entry):
            return False
        removed = self.index.put(entry)
        if removed is None:
            return False
        self._persist([Inserted(entry, status, removed)])
        self._announce_remote([Inserted(entry, status, removed)], from_)
        return True

    def _announce_remote(self, inserted: list[Inserted], from_: bytes) -> None:
        for ins in inserted:
            self._emit(InsertRemote(ins.entry, from_, ins.status, self.download_policy.matches(ins.entry.key)))

    # -- sync ----------------------------------------------------------------------

    def sync_initial_message(self) -> Message:
        return initial_message(self.index)

    def sync_process_message(self, message: Message, from_: bytes, outcome: SyncOutcome,
                             valid: Callable[[SignedEntry], bool] | None = None) -> Message | None:
        """Apply a sync message; ``valid`` replaces the entry checks when the caller made them already."""
        reply, inserted = process_message(self.index, message, valid or self.validate, self.status_of, outcome)
        self._persist(inserted)
        self._announce_remote(inserted, from_)
        return reply

    def has_news_for_us(self, heads: dict[bytes, int]) -> bool:
        """True if a peer's author heads are newer than ours (then a sync is worth it)."""
        ours: dict[bytes, int] = {}
        for e in self.index.all():
            if e.timestamp > ours.get(e.author_bytes, -1):
                ours[e.author_bytes] = e.timestamp
        return any(ts > ours.get(author, -1) for author, ts in heads.items())

    # -- reads ---------------------------------------------------------------------

    def get_exact(self, author: AuthorId, key: bytes, include_empty: bool = False) -> SignedEntry | None:
        entry = self.index.get(self._ns + author.to_bytes() + bytes(key))
        if entry is None or (entry.is_empty() and not include_empty):
            return None
        return entry

    def query(self, *, author: AuthorId | None = None, key: bytes | None = None, prefix: bytes | None = None,
              include_empty: bool = False, sort_by_author: bool = False) -> list[SignedEntry]:
        out = []
        for e in self.index.all():
            if author is not None and e.author_bytes != author.to_bytes():
                continue
            if key is not None and e.key != key:
                continue
            if prefix is not None and not e.key.startswith(prefix):
                continue
            if e.is_empty() and not include_empty:
                continue
            out.append(e)
        if not sort_by_author:
            out.sort(key=lambda e: (e.key, e.author_bytes))
        return out
