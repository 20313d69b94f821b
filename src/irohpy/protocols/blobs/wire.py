"""The iroh-blobs request codec (ALPN ``/iroh-bytes/4``, iroh-blobs ``protocol.rs`` and ``range_spec.rs``).

A requester opens a bidi stream, writes one postcard ``Request`` and finishes its side. Only
``Get`` and ``GetMany`` are served here; ``Observe`` and ``Push`` are refused with a typed error.

Ranges are in 1 KiB chunks. A ``RangeSpec`` is the varint deltas between the alternating
selected/unselected boundaries of a :class:`ChunkRanges`; a ``ChunkRangesSeq`` pairs
delta-encoded blob offsets with range specs, and its last entry applies to every later blob.
Decoding is strict: a delta of zero is accepted only where Rust writes one (the first boundary,
the first offset), so every accepted request re-encodes to the same bytes. It is also bounded:
each count is checked against its limit before any item is read, so decoding the largest
request we accept costs milliseconds, not seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from irohpy.base.postcard import Reader, Writer
from irohpy.errors import BlobRequestError, DecodeError
from irohpy.protocols.blobs.hashseq import HASH_LEN, check_hash
from irohpy.protocols.blobs.ranges import ChunkRanges

ALPN = b"/iroh-bytes/4"
MAX_MESSAGE_SIZE = 1024 * 1024
"""The largest request a provider reads (iroh's ``MAX_MESSAGE_SIZE``)."""

MAX_RANGE_ITEMS = 8192
"""Range-spec boundaries plus sequence entries one request may carry (a few ms to decode)."""
MAX_GET_MANY_HASHES = 4096
"""Hashes one GetMany may name (128 KiB); a downloader splits longer lists."""

ERR_PERMISSION = 1
ERR_LIMIT = 2
ERR_INTERNAL = 3
"""Application error codes a provider resets a stream with."""

SIZE_HEADER_LEN = 8
_U64_LIMIT = 1 << 64


class RequestType(enum.IntEnum):
    """The postcard variant index of ``Request``: its first byte on the wire."""

    GET = 0
    OBSERVE = 1
    PUSH = 8
    GET_MANY = 9


def size_header(size: int) -> bytes:
    """The 8-byte little-endian size that starts each blob in a response."""
    return size.to_bytes(SIZE_HEADER_LEN, "little")


def encode_range_spec(writer: Writer, ranges: ChunkRanges) -> None:
    bounds = ranges.boundaries()
    deltas = [b - a for a, b in zip((0, *bounds), bounds, strict=False)]
    writer.seq(deltas, writer.u64)


class _ItemBudget:
    """How many more range items a request may hold; every count is charged before it is read."""

    def __init__(self, items: int) -> None:
        self.left = items

    def charge(self, count: int, what: str) -> None:
        if count > self.left:
            raise BlobRequestError(f"{what} of {count} items exceeds the request's limit of {MAX_RANGE_ITEMS}")
        self.left -= count


def decode_range_spec(reader: Reader, budget: _ItemBudget | None = None) -> ChunkRanges:
    budget = budget if budget is not None else _ItemBudget(MAX_RANGE_ITEMS)
    bounds: list[int] = []
    position = 0
    count = reader.usize()
    if count > reader.remaining:
        raise BlobRequestError(f"range spec claims {count} boundaries in {reader.remaining} bytes")
    budget.charge(count, "range spec")
    for i in range(count):
        delta = reader.u64()
        if i and not delta:
            raise BlobRequestError("range spec has an empty span after its first boundary")
        position += delta
        if position >= _U64_LIMIT:
            raise BlobRequestError("range spec boundary overflows a u64 chunk number")
        bounds.append(position)
    return ChunkRanges.from_boundaries(bounds)


@dataclass(frozen=True)
class ChunkRangesSeq:
    """Chunk ranges for a sequence of blobs: ``seq[i]`` is what to send of blob ``i``.

    ``entries`` are ``(offset, ranges)`` with strictly increasing offsets; each holds until the
    next offset, and the last one forever (an empty last entry ends the sequence).
    """

    entries: tuple[tuple[int, ChunkRanges], ...] = ()

    def __post_init__(self) -> None:
        offsets = [offset for offset, _ in self.entries]
        if any(b <= a for a, b in zip(offsets, offsets[1:], strict=False)) or any(o < 0 for o in offsets):
            raise ValueError("ChunkRangesSeq offsets must be non-negative and strictly increasing")

    @classmethod
    def empty(cls) -> ChunkRangesSeq:
        return cls()

    @classmethod
    def all(cls) -> ChunkRangesSeq:
        """Every chunk of every blob: a hash sequence and all its children."""
        return cls(((0, ChunkRanges.all()),))

    @classmethod
    def from_ranges(cls, ranges: Iterable[ChunkRanges]) -> ChunkRangesSeq:
        """One entry per blob, then nothing for later blobs."""
        entries, count = cls._compress(ranges)
        if entries and not entries[-1][1].is_empty():
            entries.append((count, ChunkRanges.empty()))
        return cls(tuple(entries))

    @classmethod
    def from_ranges_infinite(cls, ranges: Iterable[ChunkRanges]) -> ChunkRangesSeq:
        """One entry per blob; the last one repeats for every later blob."""
        entries, _ = cls._compress(ranges)
        return cls(tuple(entries))

    @staticmethod
    def _compress(ranges: Iterable[ChunkRanges]) -> tuple[list[tuple[int, ChunkRanges]], int]:
        entries: list[tuple[int, ChunkRanges]] = []
        count = 0
        for count, item in enumerate(ranges, start=1):
            previous = entries[-1][1] if entries else ChunkRanges.empty()
            if item != previous:
                entries.append((count - 1, item))
        return entries, count

    def __getitem__(self, index: int) -> ChunkRanges:
        current = ChunkRanges.empty()
        for offset, ranges in self.entries:
            if offset > index:
                break
            current = ranges
        return current

    @property
    def is_infinite(self) -> bool:
        return bool(self.entries) and not self.entries[-1][1].is_empty()

    def non_empty(self, count: int) -> Iterator[tuple[int, ChunkRanges]]:
        """``(index, ranges)`` for each blob below ``count`` with something selected."""
        for i, (offset, ranges) in enumerate(self.entries):
            end = self.entries[i + 1][0] if i + 1 < len(self.entries) else count
            if ranges.is_empty():
                continue
            for index in range(offset, min(end, count)):
                yield index, ranges

    def encode(self, writer: Writer) -> None:
        previous = 0
        writer.usize(len(self.entries))
        for offset, ranges in self.entries:
            writer.u64(offset - previous)
            encode_range_spec(writer, ranges)
            previous = offset

    @classmethod
    def decode(cls, reader: Reader, budget: _ItemBudget | None = None) -> ChunkRangesSeq:
        budget = budget if budget is not None else _ItemBudget(MAX_RANGE_ITEMS)
        entries: list[tuple[int, ChunkRanges]] = []
        offset = 0
        count = cls._count(reader)
        budget.charge(count, "chunk ranges sequence")
        for i in range(count):
            delta = reader.u64()
            if i and not delta:
                raise BlobRequestError("chunk ranges sequence repeats an offset")
            offset += delta
            if offset >= _U64_LIMIT:
                raise BlobRequestError("chunk ranges sequence offset overflows a u64")
            entries.append((offset, decode_range_spec(reader, budget)))
        return cls(tuple(entries))

    @staticmethod
    def _count(reader: Reader) -> int:
        count = reader.usize()
        if count * 2 > reader.remaining:
            raise BlobRequestError(f"chunk ranges sequence claims {count} entries in {reader.remaining} bytes")
        return count


@dataclass(frozen=True)
class GetRequest:
    """Get one blob, or a hash sequence and (some of) its children: ``ranges[0]`` is the blob itself."""

    hash: bytes
    ranges: ChunkRangesSeq

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", check_hash(self.hash))

    @classmethod
    def blob(cls, hash: bytes) -> GetRequest:
        return cls(hash, ChunkRangesSeq.from_ranges([ChunkRanges.all()]))

    @classmethod
    def blob_ranges(cls, hash: bytes, ranges: ChunkRanges) -> GetRequest:
        return cls(hash, ChunkRangesSeq.from_ranges([ranges]))

    @classmethod
    def all(cls, hash: bytes) -> GetRequest:
        """A hash sequence with all its children."""
        return cls(hash, ChunkRangesSeq.all())

    def to_bytes(self) -> bytes:
        writer = Writer().variant(RequestType.GET).fixed(self.hash, HASH_LEN)
        self.ranges.encode(writer)
        return writer.finish()


@dataclass(frozen=True)
class GetManyRequest:
    """Get several unrelated blobs on one stream: ``ranges[i]`` applies to ``hashes[i]``."""

    hashes: tuple[bytes, ...]
    ranges: ChunkRangesSeq

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", tuple(check_hash(h) for h in self.hashes))

    @classmethod
    def with_ranges(cls, items: Iterable[tuple[bytes, ChunkRanges]]) -> GetManyRequest:
        pairs = list(items)
        return cls(tuple(h for h, _ in pairs), ChunkRangesSeq.from_ranges(r for _, r in pairs))

    def to_bytes(self) -> bytes:
        writer = Writer().variant(RequestType.GET_MANY)
        writer.seq(self.hashes, lambda h: writer.fixed(h, HASH_LEN))
        self.ranges.encode(writer)
        return writer.finish()


Request = GetRequest | GetManyRequest


def decode_request(data: bytes) -> Request:
    """Parse one request; anything but a well-formed Get or GetMany is a BlobRequestError."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise BlobRequestError(f"request of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    reader = Reader(data)
    try:
        kind = reader.u8()
        if kind == RequestType.GET:
            request: Request = GetRequest(reader.fixed(HASH_LEN), ChunkRangesSeq.decode(reader))
        elif kind == RequestType.GET_MANY:
            count = reader.usize()
            if count > MAX_GET_MANY_HASHES:
                raise BlobRequestError(f"GetMany of {count} hashes exceeds the limit of {MAX_GET_MANY_HASHES}")
            if count * HASH_LEN > reader.remaining:
                raise BlobRequestError(f"GetMany claims {count} hashes in {reader.remaining} bytes")
            block = reader.fixed(count * HASH_LEN)
            hashes = tuple(block[i : i + HASH_LEN] for i in range(0, len(block), HASH_LEN))
            request = GetManyRequest(hashes, ChunkRangesSeq.decode(reader))
        elif kind in (RequestType.OBSERVE, RequestType.PUSH):
            raise BlobRequestError(f"unsupported request type {RequestType(kind).name.lower()}")
        else:
            raise BlobRequestError(f"unknown request type {kind}")
        reader.finish()
    except BlobRequestError:
        raise
    except DecodeError as exc:
        raise BlobRequestError(f"malformed request: {exc}") from exc
    return request
