"""Wire formats of iroh-docs: the ``/iroh-sync/1`` frames and the gossip ``Op`` messages.

Sync frames (``net/codec.rs``) are a u32 big-endian length and a postcard ``Message``:

* ``Init { namespace: [u8; 32], message }`` (variant 0), ``Sync(message)`` (1), ``Abort { reason }`` (2);
* a reconciliation message is ``Vec<MessagePart>``; a part is ``RangeFingerprint { range, fingerprint }``
  (0) or ``RangeItem { range, values: Vec<(SignedEntry, ContentStatus)>, have_local: bool }`` (1);
* a range is two record ids (length-prefixed bytes), a fingerprint 32 bytes.

Gossip messages on the namespace's topic (``engine/live.rs``) are a postcard ``Op``:
``Put(SignedEntry)`` (0), ``ContentReady(Hash)`` (1), ``SyncReport { namespace, heads }`` (2), where
``heads`` are postcard ``Vec<(u64 timestamp, [u8; 32] author)>`` bytes.

Every decoder raises :class:`~irohpy.errors.SyncError` on anything malformed.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, SyncError
from irohpy.protocols.docs.entry import HASH_LEN, ContentStatus, SignedEntry, decode_record_id
from irohpy.protocols.docs.ranger import Message, MessagePart, Range, RangeFingerprint, RangeItem

ALPN: Final = b"/iroh-sync/1"
DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024
"""Largest frame we accept (upstream allows 1 GiB; a reply of 100,000 entries fits in this)."""
_LEN: Final = struct.Struct(">I")


class AbortReason(enum.IntEnum):
    NOT_FOUND = 0
    ALREADY_SYNCING = 1
    INTERNAL_SERVER_ERROR = 2


@dataclass(frozen=True, slots=True)
class Init:
    namespace: bytes
    message: Message


@dataclass(frozen=True, slots=True)
class Sync:
    message: Message


@dataclass(frozen=True, slots=True)
class Abort:
    reason: AbortReason


SyncFrame = Init | Sync | Abort


def _encode_range(w: Writer, r: Range) -> None:
    w.bytes_(r.x).bytes_(r.y)


def _decode_range(r: Reader) -> Range:
    return Range(decode_record_id(r), decode_record_id(r))


def encode_message(w: Writer, message: Message) -> None:
    w.u64(len(message.parts))
    for part in message.parts:
        if isinstance(part, RangeFingerprint):
            w.variant(0)
            _encode_range(w, part.range)
            w.fixed(part.fingerprint, 32)
        else:
            w.variant(1)
            _encode_range(w, part.range)
            w.u64(len(part.values))
            for entry, status in part.values:
                entry.encode(w)
                w.variant(int(status))
            w.bool(part.have_local)


def decode_message(r: Reader) -> Message:
    count = r.u64()
    if count > r.remaining:
        raise DecodeError(f"message claims {count} parts in {r.remaining} bytes")
    parts: list[MessagePart] = []
    for _ in range(count):
        tag = r.variant()
        if tag == 0:
            rng = _decode_range(r)
            parts.append(RangeFingerprint(rng, r.fixed(32)))
        elif tag == 1:
            rng = _decode_range(r)
            n = r.u64()
            if n > r.remaining:
                raise DecodeError(f"range item claims {n} entries in {r.remaining} bytes")
            values = []
            for _ in range(n):
                entry = SignedEntry.decode(r)
                status = r.variant()
                if status > ContentStatus.MISSING:
                    raise DecodeError(f"unknown content status {status}")
                values.append((entry, ContentStatus(status)))
            parts.append(RangeItem(rng, tuple(values), r.bool()))
        else:
            raise DecodeError(f"unknown message part variant {tag}")
    return Message(tuple(parts))


def encode_frame(frame: SyncFrame) -> bytes:
    """One length-prefixed sync frame."""
    w = Writer()
    if isinstance(frame, Init):
        w.variant(0).fixed(frame.namespace, 32)
        encode_message(w, frame.message)
    elif isinstance(frame, Sync):
        w.variant(1)
        encode_message(w, frame.message)
    else:
        w.variant(2).variant(int(frame.reason))
    body = w.finish()
    return _LEN.pack(len(body)) + body


def decode_frame_body(body: bytes) -> SyncFrame:
    try:
        r = Reader(body)
        tag = r.variant()
        frame: SyncFrame
        if tag == 0:
            namespace = r.fixed(32)
            frame = Init(namespace, decode_message(r))
        elif tag == 1:
            frame = Sync(decode_message(r))
        elif tag == 2:
            reason = r.variant()
            if reason > AbortReason.INTERNAL_SERVER_ERROR:
                raise DecodeError(f"unknown abort reason {reason}")
            frame = Abort(AbortReason(reason))
        else:
            raise DecodeError(f"unknown sync message variant {tag}")
        r.finish()
    except SyncError:
        raise
    except DecodeError as exc:
        raise SyncError(f"malformed sync message: {exc}") from None
    return frame


class FrameDecoder:
    """Feed bytes, take whole frames; a length over ``max_frame`` is a SyncError before any buffering."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[SyncFrame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 4:
            (length,) = _LEN.unpack_from(self._buf)
            if length > self._max:
                raise SyncError(f"sync frame of {length} bytes exceeds the limit of {self._max}")
            if len(self._buf) < 4 + length:
                break
            body = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            frames.append(decode_frame_body(body))
        return frames

    def needed(self) -> int:
        """Bytes still missing for the frame in progress (4 if none started)."""
        if len(self._buf) < 4:
            return 4 - len(self._buf)
        (length,) = _LEN.unpack_from(self._buf)
        return max(0, 4 + length - len(self._buf))

    @property
    def buffered(self) -> int:
        return len(self._buf)


# -- gossip ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpPut:
    entry: SignedEntry


@dataclass(frozen=True, slots=True)
class OpContentReady:
    hash: bytes


@dataclass(frozen=True, slots=True)
class OpSyncReport:
    namespace: bytes
    heads: dict[bytes, int]


Op = OpPut | OpContentReady | OpSyncReport


def encode_heads(heads: dict[bytes, int]) -> bytes:
    """AuthorHeads: newest first, one author per timestamp, as upstream encodes it."""
    by_ts: dict[int, bytes] = {}
    for author, ts in sorted(heads.items()):
        by_ts[ts] = author
    w = Writer()
    items = sorted(by_ts.items(), reverse=True)
    w.u64(len(items))
    for ts, author in items:
        w.u64(ts).fixed(author, 32)
    return w.finish()


def decode_heads(data: bytes) -> dict[bytes, int]:
    r = Reader(data)
    n = r.u64()
    if n > r.remaining:
        raise DecodeError(f"heads claim {n} items in {r.remaining} bytes")
    heads: dict[bytes, int] = {}
    for _ in range(n):
        ts = r.u64()
        heads[r.fixed(32)] = ts
    r.finish()
    return heads


def encode_op(op: Op) -> bytes:
    w = Writer()
    if isinstance(op, OpPut):
        w.variant(0)
        op.entry.encode(w)
    elif isinstance(op, OpContentReady):
        w.variant(1).fixed(op.hash, HASH_LEN)
    else:
        w.variant(2).fixed(op.namespace, 32).bytes_(encode_heads(op.heads))
    return w.finish()


def decode_op(data: bytes) -> Op:
    try:
        r = Reader(data)
        tag = r.variant()
        op: Op
        if tag == 0:
            op = OpPut(SignedEntry.decode(r))
        elif tag == 1:
            op = OpContentReady(r.fixed(HASH_LEN))
        elif tag == 2:
            op = OpSyncReport(r.fixed(32), decode_heads(r.bytes_()))
        else:
            raise DecodeError(f"unknown docs gossip op {tag}")
        r.finish()
    except DecodeError as exc:
        raise SyncError(f"malformed docs gossip message: {exc}") from None
    return op
