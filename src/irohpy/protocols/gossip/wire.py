"""Byte-exact codec for iroh-gossip messages and stream frames (wire spec §10.1-10.2).

Messages are plain frozen dataclasses so the sans-IO state machine and tests can build and
compare them; only the codec here knows variant indices and field order. Every decoding
failure is a :class:`~irohpy.errors.GossipError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Generic, TypeVar, Union

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import PublicKey
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, GossipError

ALPN = b"/iroh-gossip/1"
DEFAULT_MAX_MESSAGE_SIZE = 4096
MIN_MAX_MESSAGE_SIZE = 512
TOPIC_ID_LENGTH = 32
MESSAGE_ID_LENGTH = 32
_LEN = struct.Struct(">I")

P = TypeVar("P")


class Priority(enum.IntEnum):
    """Neighbor request priority: High must be accepted, Low only if there is room."""

    HIGH = 0
    LOW = 1


@dataclass(frozen=True)
class PeerInfo(Generic[P]):
    id: P
    data: bytes | None = None


@dataclass(frozen=True)
class Join:
    data: bytes | None = None


@dataclass(frozen=True)
class ForwardJoin(Generic[P]):
    peer: PeerInfo[P]
    ttl: int


@dataclass(frozen=True)
class Shuffle(Generic[P]):
    origin: P
    nodes: tuple[PeerInfo[P], ...]
    ttl: int


@dataclass(frozen=True)
class ShuffleReply(Generic[P]):
    nodes: tuple[PeerInfo[P], ...]


@dataclass(frozen=True)
class Neighbor:
    priority: Priority
    data: bytes | None = None


@dataclass(frozen=True)
class Disconnect:
    """``respond`` is obsolete upstream but still on the wire, so it round-trips."""

    alive: bool
    respond: bool = False


@dataclass(frozen=True)
class Gossip:
    """``round`` is None for DeliveryScope::Neighbors, else the Swarm hop count."""

    id: bytes
    content: bytes
    round: int | None


@dataclass(frozen=True)
class Prune:
    pass


@dataclass(frozen=True)
class Graft:
    id: bytes | None
    round: int


@dataclass(frozen=True)
class IHave:
    entries: tuple[tuple[bytes, int], ...]


SwarmMessage = Union[Join, ForwardJoin[P], Shuffle[P], ShuffleReply[P], Neighbor, Disconnect]
GossipMessage = Union[Gossip, Prune, Graft, IHave]
Message = Union[SwarmMessage[P], GossipMessage]

_SWARM_TYPES = (Join, ForwardJoin, Shuffle, ShuffleReply, Neighbor, Disconnect)
_GOSSIP_TYPES = (Gossip, Prune, Graft, IHave)


def _w_peer_info(w: Writer, info: PeerInfo[PublicKey]) -> None:
    w.fixed(info.id.to_bytes(), 32)
    w.option(info.data, w.bytes_)


def encode_message(msg: Message[PublicKey]) -> bytes:
    """postcard body of a ``topic::Message<PublicKey>``."""
    w = Writer()
    if isinstance(msg, _SWARM_TYPES):
        w.variant(0)
        if isinstance(msg, Join):
            w.variant(0).option(msg.data, w.bytes_)
        elif isinstance(msg, ForwardJoin):
            w.variant(1)
            _w_peer_info(w, msg.peer)
            w.u16(msg.ttl)
        elif isinstance(msg, Shuffle):
            w.variant(2).fixed(msg.origin.to_bytes(), 32)
            w.seq(msg.nodes, lambda i: _w_peer_info(w, i))
            w.u16(msg.ttl)
        elif isinstance(msg, ShuffleReply):
            w.variant(3).seq(msg.nodes, lambda i: _w_peer_info(w, i))
        elif isinstance(msg, Neighbor):
            w.variant(4).variant(int(msg.priority)).option(msg.data, w.bytes_)
        else:
            w.variant(5).bool(msg.alive).bool(msg.respond)
    elif isinstance(msg, _GOSSIP_TYPES):
        w.variant(1)
        if isinstance(msg, Gossip):
            w.variant(0).fixed(msg.id, 32).bytes_(msg.content)
            if msg.round is None:
                w.variant(1)
            else:
                w.variant(0).u16(msg.round)
        elif isinstance(msg, Prune):
            w.variant(1)
        elif isinstance(msg, Graft):
            w.variant(2).option(msg.id, lambda i: w.fixed(i, 32)).u16(msg.round)
        else:
            w.variant(3)
            w.seq(msg.entries, lambda e: w.fixed(e[0], 32).u16(e[1]))
    else:
        raise TypeError(f"not a gossip message: {type(msg).__name__}")
    return w.finish()


def _r_peer_info(r: Reader) -> PeerInfo[PublicKey]:
    key = PublicKey(r.fixed(32))
    return PeerInfo(key, r.option(r.bytes_))


def _decode(r: Reader) -> Message[PublicKey]:
    outer = r.variant()
    tag = r.variant()
    if outer == 0:
        if tag == 0:
            return Join(r.option(r.bytes_))
        if tag == 1:
            return ForwardJoin(_r_peer_info(r), r.u16())
        if tag == 2:
            origin = PublicKey(r.fixed(32))
            return Shuffle(origin, tuple(r.seq(lambda: _r_peer_info(r))), r.u16())
        if tag == 3:
            return ShuffleReply(tuple(r.seq(lambda: _r_peer_info(r))))
        if tag == 4:
            prio = r.variant()
            if prio > 1:
                raise GossipError(f"unknown Priority variant {prio}")
            return Neighbor(Priority(prio), r.option(r.bytes_))
        if tag == 5:
            return Disconnect(r.bool(), r.bool())
        raise GossipError(f"unknown hyparview::Message variant {tag}")
    if outer == 1:
        if tag == 0:
            mid = r.fixed(32)
            content = r.bytes_()
            scope = r.variant()
            if scope == 0:
                return Gossip(mid, content, r.u16())
            if scope == 1:
                return Gossip(mid, content, None)
            raise GossipError(f"unknown DeliveryScope variant {scope}")
        if tag == 1:
            return Prune()
        if tag == 2:
            return Graft(r.option(lambda: r.fixed(32)), r.u16())
        if tag == 3:
            return IHave(tuple(r.seq(lambda: (r.fixed(32), r.u16()))))
        raise GossipError(f"unknown plumtree::Message variant {tag}")
    raise GossipError(f"unknown topic::Message variant {outer}")


def decode_message(body: bytes) -> Message[PublicKey]:
    """Strict inverse of :func:`encode_message`; trailing bytes are an error."""
    try:
        r = Reader(body)
        msg = _decode(r)
        r.finish()
    except GossipError:
        raise
    except DecodeError as exc:
        raise GossipError(f"bad gossip message: {exc}") from None
    return msg


def encode_frame(body: bytes, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """u32 BE length + body; like upstream the sender refuses length >= max."""
    if len(body) >= max_message_size:
        raise GossipError(f"gossip frame of {len(body)} bytes is not below the limit of {max_message_size}")
    return _LEN.pack(len(body)) + body


def encode_header(topic_id: bytes) -> bytes:
    """The first frame of each per-topic uni stream: the raw 32-byte topic id."""
    if len(topic_id) != TOPIC_ID_LENGTH:
        raise ValueError("topic id must be 32 bytes")
    return encode_frame(topic_id)


def decode_header(body: bytes) -> bytes:
    if len(body) != TOPIC_ID_LENGTH:
        raise GossipError(f"stream header must be 32 bytes, got {len(body)}")
    return body


class FrameDecoder:
    """Splits a byte stream into frame bodies; a reader rejects length > max (spec §10.1)."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max = max_message_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 4:
            (length,) = _LEN.unpack_from(self._buf)
            if length > self._max:
                raise GossipError(f"gossip frame of {length} bytes exceeds the limit of {self._max}")
            if len(self._buf) < 4 + length:
                break
            out.append(bytes(self._buf[4 : 4 + length]))
            del self._buf[: 4 + length]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame; non-zero at end of stream means truncation."""
        return len(self._buf)


def encode_peer_data(addr: EndpointAddr) -> bytes:
    """PeerData for iroh: the postcard AddrInfo ``{relay_url, direct_addresses}``."""
    w = Writer()
    addr.encode_addr_info(w)
    return w.finish()


def decode_peer_data(peer: PublicKey, data: bytes) -> EndpointAddr:
    """Inverse of :func:`encode_peer_data`; empty data means no addresses are known."""
    if not data:
        return EndpointAddr.from_id(peer)
    try:
        r = Reader(data)
        addr = EndpointAddr.decode_addr_info(peer, r)
        r.finish()
    except DecodeError as exc:
        raise GossipError(f"bad gossip peer data: {exc}") from None
    return addr
