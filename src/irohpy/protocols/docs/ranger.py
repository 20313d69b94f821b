"""Range-based set reconciliation, sans-IO, step for step as iroh-docs ``ranger.rs`` does it.

Both sides hold entries sorted by record id. A message is a list of parts, each about one range
``[x, y)`` of ids (``x == y`` is the whole set; ``x > y`` wraps around): either the XOR
fingerprint of the range, or the entries in it. A side that sees a fingerprint it does not share
splits the range in two (the split factor) and answers with fingerprints of the halves, or with
their entries once a half holds at most one entry (the max set size). Entries that arrive are
validated and inserted with last-writer-wins and prefix deletion; the exchange ends when a side
has nothing to say. Splitting and ordering match upstream exactly, so the messages are the same
as a Rust peer's would be.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import blake3

from irohpy.errors import SyncError
from irohpy.protocols.docs.entry import ID_PREFIX_LEN, ContentStatus, SignedEntry

SPLIT_FACTOR: Final = 2
MAX_SET_SIZE: Final = 1
EMPTY_FINGERPRINT: Final = blake3.blake3(b"").digest()
_EMPTY_FP_INT: Final = int.from_bytes(EMPTY_FINGERPRINT, "little")
DEFAULT_ID: Final = bytes(ID_PREFIX_LEN)
"""The first id of an empty replica: namespace and author all zero, empty key."""


@dataclass(frozen=True, slots=True)
class Range:
    x: bytes
    y: bytes

    def is_all(self) -> bool:
        return self.x == self.y


@dataclass(frozen=True, slots=True)
class RangeFingerprint:
    range: Range
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class RangeItem:
    range: Range
    values: tuple[tuple[SignedEntry, ContentStatus], ...]
    have_local: bool


MessagePart = RangeFingerprint | RangeItem


@dataclass(frozen=True, slots=True)
class Message:
    parts: tuple[MessagePart, ...]

    def values(self) -> Iterator[tuple[SignedEntry, ContentStatus]]:
        for part in self.parts:
            if isinstance(part, RangeItem):
                yield from part.values

    def value_count(self) -> int:
        return sum(len(p.values) for p in self.parts if isinstance(p, RangeItem))


@dataclass(frozen=True, slots=True)
class Inserted:
    """An entry that made it into the replica, and the older entries it replaced."""

    entry: SignedEntry
    status: ContentStatus
    removed: tuple[SignedEntry, ...]


class EntryIndex:
    """The entries of one namespace, sorted by record id, with per-entry fingerprints."""

    __slots__ = ("_entries", "_fps", "_ids")

    def __init__(self, entries: Iterable[SignedEntry] = ()) -> None:
        """Bulk load of consistent entries (a store's); of two with one id, the newer record stays."""
        self._entries: dict[bytes, SignedEntry] = {}
        for e in entries:
            old = self._entries.get(e.id)
            if old is None or e.record > old.record:
                self._entries[e.id] = e
        self._ids: list[bytes] = sorted(self._entries)
        self._fps: dict[bytes, int] = {rid: e.fingerprint() for rid, e in self._entries.items()}

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, rid: bytes) -> SignedEntry | None:
        return self._entries.get(rid)

    def all(self) -> list[SignedEntry]:
        return [self._entries[rid] for rid in self._ids]

    def first(self) -> bytes:
        return self._ids[0] if self._ids else DEFAULT_ID

    def range_ids(self, r: Range) -> list[bytes]:
        """Ids in ``r`` in upstream's iteration order (for a wrapping range: ``< y`` first, then ``>= x``)."""
        ids = self._ids
        if r.x == r.y:
            return list(ids)
        if r.x < r.y:
            return ids[bisect.bisect_left(ids, r.x) : bisect.bisect_left(ids, r.y)]
        return ids[: bisect.bisect_left(ids, r.y)] + ids[bisect.bisect_left(ids, r.x) :]

    def count(self, r: Range) -> int:
        """How many ids ``r`` holds, without listing them."""
        ids = self._ids
        if r.x == r.y:
            return len(ids)
        lo, hi = bisect.bisect_left(ids, r.x), bisect.bisect_left(ids, r.y)
        return hi - lo if r.x < r.y else len(ids) - lo + hi

    def entries(self, ids: Iterable[bytes]) -> list[SignedEntry]:
        return [self._entries[rid] for rid in ids]

    def fingerprint(self, ids: Iterable[bytes]) -> bytes:
        fp = _EMPTY_FP_INT
        fps = self._fps
        for rid in ids:
            fp ^= fps[rid]
        return fp.to_bytes(32, "little")

    def prefixed_by(self, rid: bytes) -> list[bytes]:
        """Ids that start with ``rid`` (same namespace and author, key with that prefix)."""
        ids = self._ids
        lo = bisect.bisect_left(ids, rid)
        hi = lo
        while hi < len(ids) and ids[hi].startswith(rid):
            hi += 1
        return ids[lo:hi]

    def put(self, entry: SignedEntry) -> tuple[SignedEntry, ...] | None:
        """Insert unless this key or a prefix of it holds a record at least as new.

        Returns the entries the insert removed (older ones under this key prefix), or None when it
        was not inserted.
        """
        rid = entry.id
        record = entry.record
        for cut in range(ID_PREFIX_LEN, len(rid) + 1):
            parent = self._entries.get(rid[:cut])
            if parent is not None and record <= parent.record:
                return None
        removed = []
        for other in self.prefixed_by(rid):
            old = self._entries[other]
            if record >= old.record:
                removed.append(old)
        for old in removed:
            self._remove(old.id)
        self._entries[rid] = entry
        self._fps[rid] = entry.fingerprint()
        bisect.insort(self._ids, rid)
        return tuple(removed)

    def _remove(self, rid: bytes) -> None:
        del self._entries[rid]
        del self._fps[rid]
        del self._ids[bisect.bisect_left(self._ids, rid)]


@dataclass
class SyncOutcome:
    """What one sync exchanged: entries sent and received, and the newest timestamp per author seen."""

    num_sent: int = 0
    num_recv: int = 0
    heads_received: dict[bytes, int] = field(default_factory=dict)


Validate = Callable[[SignedEntry], bool]
StatusOf = Callable[[SignedEntry], ContentStatus]


def initial_message(index: EntryIndex) -> Message:
    x = index.first()
    r = Range(x, x)
    return Message((RangeFingerprint(r, index.fingerprint(index.range_ids(r))),))


def _with_status(entries: list[SignedEntry], status_of: StatusOf) -> tuple[tuple[SignedEntry, ContentStatus], ...]:
    return tuple((e, status_of(e)) for e in entries)


def process_message(index: EntryIndex, message: Message, validate: Validate, status_of: StatusOf,
                    outcome: SyncOutcome | None = None, *, split_factor: int = SPLIT_FACTOR,
                    max_set_size: int = MAX_SET_SIZE) -> tuple[Message | None, list[Inserted]]:
    """One reconciliation step: apply what ``message`` brings, and return the reply (None: done).

    SyncError if the parts' ranges together hold more ids than the replica has: an honest peer's
    parts split the disjoint ranges of our last message, so they hold each of our ids at most once,
    while overlapping parts (the whole set, over and over) would cost a full pass over it each.
    """
    if sum(index.count(p.range) for p in message.parts) > len(index):
        raise SyncError("sync message parts overlap")
    if outcome is not None:
        for entry, _status in message.values():
            outcome.num_recv += 1
            au = entry.author_bytes
            if entry.timestamp > outcome.heads_received.get(au, -1):
                outcome.heads_received[au] = entry.timestamp
    out: list[MessagePart] = []
    inserted: list[Inserted] = []
    items = [p for p in message.parts if isinstance(p, RangeItem)]
    fingerprints = [p for p in message.parts if isinstance(p, RangeFingerprint)]

    for item in items:
        diff: list[SignedEntry] | None = None
        if not item.have_local:
            theirs: dict[bytes, tuple[int, bytes]] = {}
            for entry, _ in item.values:
                rec = entry.record
                prev = theirs.get(entry.id)
                if prev is None or rec > prev:
                    theirs[entry.id] = rec
            diff = []
            for ours in index.entries(index.range_ids(item.range)):
                their = theirs.get(ours.id)
                if their is None or their < ours.record:
                    diff.append(ours)
        for entry, status in item.values:
            if validate(entry):
                removed = index.put(entry)
                if removed is not None:
                    inserted.append(Inserted(entry, status, removed))
        if diff:
            out.append(RangeItem(item.range, _with_status(diff, status_of), True))

    for part in fingerprints:
        r = part.range
        ids = index.range_ids(r)
        if index.fingerprint(ids) == part.fingerprint:
            continue
        n = len(ids)
        if n <= 1 or part.fingerprint == EMPTY_FINGERPRINT:
            out.append(RangeItem(r, _with_status(index.entries(ids), status_of), False))
            continue
        start = 0
        for rid in ids:
            if rid >= r.x:
                break
            start += 1

        def pivot(i: int, ids: list[bytes] = ids, n: int = n, start: int = start) -> bytes:
            i %= split_factor
            return ids[(start + (n * (i + 1)) // split_factor) % n]

        ranges: list[Range] = []
        if r.is_all():
            for i in range(split_factor):
                x, y = pivot(i), pivot(i + 1)
                if x != y:
                    ranges.append(Range(x, y))
        else:
            ranges.append(Range(r.x, pivot(0)))
            for i in range(split_factor - 2):
                x, y = pivot(i), pivot(i + 1)
                if x != y:
                    ranges.append(Range(x, y))
            ranges.append(Range(pivot(split_factor - 2), r.y))
        for sub in ranges:
            chunk = index.range_ids(sub)
            if len(chunk) > max_set_size:
                out.append(RangeFingerprint(sub, index.fingerprint(chunk)))
            else:
                out.append(RangeItem(sub, _with_status(index.entries(chunk), status_of), False))

    reply = Message(tuple(out)) if out else None
    if outcome is not None and reply is not None:
        outcome.num_sent += reply.value_count()
    return reply, inserted
