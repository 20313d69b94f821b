"""QUIC frames (RFC 9000 §19) and the extensions iroh negotiates: codec only.

Covered: every RFC 9000 frame, DATAGRAM (RFC 9221), ACK_FREQUENCY and IMMEDIATE_ACK
(draft-ietf-quic-ack-frequency), the multipath frames (draft-ietf-quic-multipath, as noq
numbers them), QUIC Address Discovery's OBSERVED_ADDRESS and n0's NAT-traversal frames
(docs/wire/quic.md lists the codepoints).

``decode_frames(payload, packet_type)`` returns the frames of one packet and raises
QuicDecodeError for malformed frames (FRAME_ENCODING_ERROR) and for frames that the packet
type may not carry, e.g. STREAM in an Initial (PROTOCOL_VIOLATION). Whether an extension was
negotiated, and which side may send a frame, is for the connection to check.

Sending: every frame class has ``encode(writer)``; the hot frames also have free functions
that write straight from integers (``push_stream_header``, ``push_ack``) so the packet
builder need not make frame objects. ACK ranges are half-open ``(start, stop)`` pairs, highest
first, as ``range`` and the recovery code use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Union

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic.buffer import Reader, Writer
from irohpy.quic.packet import (
    MAX_CID_SIZE,
    PACKET_HANDSHAKE,
    PACKET_INITIAL,
    PACKET_ONE_RTT,
    PACKET_ZERO_RTT,
    RESET_TOKEN_SIZE,
)
from irohpy.quic.varint import VARINT_MAX, varint_size

FRAME_PADDING: Final = 0x00
FRAME_PING: Final = 0x01
FRAME_ACK: Final = 0x02
FRAME_ACK_ECN: Final = 0x03
FRAME_RESET_STREAM: Final = 0x04
FRAME_STOP_SENDING: Final = 0x05
FRAME_CRYPTO: Final = 0x06
FRAME_NEW_TOKEN: Final = 0x07
FRAME_STREAM: Final = 0x08
"""STREAM is 0x08–0x0f: OFF = 0x04, LEN = 0x02, FIN = 0x01."""
FRAME_MAX_DATA: Final = 0x10
FRAME_MAX_STREAM_DATA: Final = 0x11
FRAME_MAX_STREAMS_BIDI: Final = 0x12
FRAME_MAX_STREAMS_UNI: Final = 0x13
FRAME_DATA_BLOCKED: Final = 0x14
FRAME_STREAM_DATA_BLOCKED: Final = 0x15
FRAME_STREAMS_BLOCKED_BIDI: Final = 0x16
FRAME_STREAMS_BLOCKED_UNI: Final = 0x17
FRAME_NEW_CONNECTION_ID: Final = 0x18
FRAME_RETIRE_CONNECTION_ID: Final = 0x19
FRAME_PATH_CHALLENGE: Final = 0x1A
FRAME_PATH_RESPONSE: Final = 0x1B
FRAME_CONNECTION_CLOSE: Final = 0x1C
FRAME_APPLICATION_CLOSE: Final = 0x1D
FRAME_HANDSHAKE_DONE: Final = 0x1E
FRAME_IMMEDIATE_ACK: Final = 0x1F
FRAME_DATAGRAM: Final = 0x30
FRAME_DATAGRAM_LEN: Final = 0x31
FRAME_ACK_FREQUENCY: Final = 0xAF
FRAME_PATH_ACK: Final = 0x3E
FRAME_PATH_ACK_ECN: Final = 0x3F
FRAME_PATH_ABANDON: Final = 0x3E75
FRAME_PATH_STATUS_BACKUP: Final = 0x3E76
FRAME_PATH_STATUS_AVAILABLE: Final = 0x3E77
FRAME_PATH_NEW_CONNECTION_ID: Final = 0x3E78
FRAME_PATH_RETIRE_CONNECTION_ID: Final = 0x3E79
FRAME_MAX_PATH_ID: Final = 0x3E7A
FRAME_PATHS_BLOCKED: Final = 0x3E7B
FRAME_PATH_CIDS_BLOCKED: Final = 0x3E7C
FRAME_ADD_ADDRESS_V4: Final = 0x3D7F90
FRAME_ADD_ADDRESS_V6: Final = 0x3D7F91
FRAME_REACH_OUT_V4: Final = 0x3D7F92
FRAME_REACH_OUT_V6: Final = 0x3D7F93
FRAME_REMOVE_ADDRESS: Final = 0x3D7F94
FRAME_OBSERVED_ADDRESS_V4: Final = 0x9F81A6
FRAME_OBSERVED_ADDRESS_V6: Final = 0x9F81A7

MAX_STREAMS_LIMIT: Final = 1 << 60
MAX_PATH_ID_VALUE: Final = (1 << 32) - 1

# Packet types a frame may arrive in (RFC 9000 Table 3), as bits.
_I: Final = 1
_Z: Final = 2
_H: Final = 4
_O: Final = 8
_PACKET_BITS: Final = {PACKET_INITIAL: _I, PACKET_ZERO_RTT: _Z, PACKET_HANDSHAKE: _H, PACKET_ONE_RTT: _O}

_ALLOWED: Final[dict[int, int]] = {
    FRAME_PADDING: _I | _Z | _H | _O,
    FRAME_PING: _I | _Z | _H | _O,
    FRAME_ACK: _I | _H | _O,
    FRAME_ACK_ECN: _I | _H | _O,
    FRAME_RESET_STREAM: _Z | _O,
    FRAME_STOP_SENDING: _Z | _O,
    FRAME_CRYPTO: _I | _H | _O,
    FRAME_NEW_TOKEN: _O,
    FRAME_MAX_DATA: _Z | _O,
    FRAME_MAX_STREAM_DATA: _Z | _O,
    FRAME_MAX_STREAMS_BIDI: _Z | _O,
    FRAME_MAX_STREAMS_UNI: _Z | _O,
    FRAME_DATA_BLOCKED: _Z | _O,
    FRAME_STREAM_DATA_BLOCKED: _Z | _O,
    FRAME_STREAMS_BLOCKED_BIDI: _Z | _O,
    FRAME_STREAMS_BLOCKED_UNI: _Z | _O,
    FRAME_NEW_CONNECTION_ID: _Z | _O,
    FRAME_RETIRE_CONNECTION_ID: _O,
    FRAME_PATH_CHALLENGE: _Z | _O,
    FRAME_PATH_RESPONSE: _O,
    FRAME_CONNECTION_CLOSE: _I | _Z | _H | _O,
    FRAME_APPLICATION_CLOSE: _Z | _O,
    FRAME_HANDSHAKE_DONE: _O,
    FRAME_IMMEDIATE_ACK: _Z | _O,
    FRAME_DATAGRAM: _Z | _O,
    FRAME_DATAGRAM_LEN: _Z | _O,
    FRAME_ACK_FREQUENCY: _Z | _O,
    FRAME_PATH_ACK: _O,
    FRAME_PATH_ACK_ECN: _O,
    FRAME_PATH_ABANDON: _O,
    FRAME_PATH_STATUS_BACKUP: _O,
    FRAME_PATH_STATUS_AVAILABLE: _O,
    FRAME_PATH_NEW_CONNECTION_ID: _O,
    FRAME_PATH_RETIRE_CONNECTION_ID: _O,
    FRAME_MAX_PATH_ID: _O,
    FRAME_PATHS_BLOCKED: _O,
    FRAME_PATH_CIDS_BLOCKED: _O,
    FRAME_ADD_ADDRESS_V4: _O,
    FRAME_ADD_ADDRESS_V6: _O,
    FRAME_REACH_OUT_V4: _O,
    FRAME_REACH_OUT_V6: _O,
    FRAME_REMOVE_ADDRESS: _O,
    FRAME_OBSERVED_ADDRESS_V4: _O,
    FRAME_OBSERVED_ADDRESS_V6: _O,
}
for _t in range(FRAME_STREAM, FRAME_STREAM + 8):
    _ALLOWED[_t] = _Z | _O

_NONZERO: Final = re.compile(b"[^\x00]")


def _not_allowed(frame_type: int) -> QuicDecodeError:
    return QuicDecodeError(
        f"frame 0x{frame_type:x} not allowed in this packet type",
        error_code=QuicError.PROTOCOL_VIOLATION,
        frame_type=frame_type,
    )


# -- frame classes ----------------------------------------------------------------


@dataclass(slots=True)
class Padding:
    length: int = 1

    def encode(self, w: Writer) -> None:
        w.push_zeros(self.length)


@dataclass(slots=True)
class Ping:
    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_PING)


@dataclass(slots=True)
class Ack:
    """ACK, ACK_ECN, PATH_ACK or PATH_ACK_ECN (``path_id`` set). ``delay`` is the raw field."""

    ranges: list[tuple[int, int]]
    delay: int = 0
    ecn: tuple[int, int, int] | None = None
    path_id: int | None = None

    @property
    def largest(self) -> int:
        return self.ranges[0][1] - 1

    def encode(self, w: Writer) -> None:
        push_ack(w, self.ranges, self.delay, self.ecn, self.path_id)


@dataclass(slots=True)
class ResetStream:
    stream_id: int
    error_code: int
    final_size: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_RESET_STREAM)
        w.push_varint(self.stream_id)
        w.push_varint(self.error_code)
        w.push_varint(self.final_size)


@dataclass(slots=True)
class StopSending:
    stream_id: int
    error_code: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_STOP_SENDING)
        w.push_varint(self.stream_id)
        w.push_varint(self.error_code)


@dataclass(slots=True)
class Crypto:
    offset: int
    data: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_CRYPTO)
        w.push_varint(self.offset)
        w.push_varint(len(self.data))
        w.push_bytes(self.data)


@dataclass(slots=True)
class NewToken:
    token: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_NEW_TOKEN)
        w.push_varint(len(self.token))
        w.push_bytes(self.token)


@dataclass(slots=True)
class Stream:
    stream_id: int
    offset: int
    data: bytes
    fin: bool = False

    def encode(self, w: Writer) -> None:
        push_stream_header(w, self.stream_id, self.offset, len(self.data), self.fin)
        w.push_bytes(self.data)


@dataclass(slots=True)
class MaxData:
    maximum: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_MAX_DATA)
        w.push_varint(self.maximum)


@dataclass(slots=True)
class MaxStreamData:
    stream_id: int
    maximum: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_MAX_STREAM_DATA)
        w.push_varint(self.stream_id)
        w.push_varint(self.maximum)


@dataclass(slots=True)
class MaxStreams:
    bidi: bool
    maximum: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_MAX_STREAMS_BIDI if self.bidi else FRAME_MAX_STREAMS_UNI)
        w.push_varint(self.maximum)


@dataclass(slots=True)
class DataBlocked:
    limit: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_DATA_BLOCKED)
        w.push_varint(self.limit)


@dataclass(slots=True)
class StreamDataBlocked:
    stream_id: int
    limit: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_STREAM_DATA_BLOCKED)
        w.push_varint(self.stream_id)
        w.push_varint(self.limit)


@dataclass(slots=True)
class StreamsBlocked:
    bidi: bool
    limit: int

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_STREAMS_BLOCKED_BIDI if self.bidi else FRAME_STREAMS_BLOCKED_UNI)
        w.push_varint(self.limit)


@dataclass(slots=True)
class NewConnectionId:
    """NEW_CONNECTION_ID, or PATH_NEW_CONNECTION_ID when ``path_id`` is set."""

    sequence: int
    retire_prior_to: int
    connection_id: bytes
    reset_token: bytes
    path_id: int | None = None

    def encode(self, w: Writer) -> None:
        if self.path_id is None:
            w.push_uint8(FRAME_NEW_CONNECTION_ID)
        else:
            w.push_varint(FRAME_PATH_NEW_CONNECTION_ID)
            w.push_varint(self.path_id)
        w.push_varint(self.sequence)
        w.push_varint(self.retire_prior_to)
        w.push_uint8(len(self.connection_id))
        w.push_bytes(self.connection_id)
        w.push_bytes(self.reset_token)


@dataclass(slots=True)
class RetireConnectionId:
    """RETIRE_CONNECTION_ID, or PATH_RETIRE_CONNECTION_ID when ``path_id`` is set."""

    sequence: int
    path_id: int | None = None

    def encode(self, w: Writer) -> None:
        if self.path_id is None:
            w.push_uint8(FRAME_RETIRE_CONNECTION_ID)
        else:
            w.push_varint(FRAME_PATH_RETIRE_CONNECTION_ID)
            w.push_varint(self.path_id)
        w.push_varint(self.sequence)


@dataclass(slots=True)
class PathChallenge:
    data: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_PATH_CHALLENGE)
        w.push_bytes(self.data)


@dataclass(slots=True)
class PathResponse:
    data: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_PATH_RESPONSE)
        w.push_bytes(self.data)


@dataclass(slots=True)
class ConnectionClose:
    """CONNECTION_CLOSE: transport (0x1c, with the offending ``frame_type``) or application (0x1d)."""

    error_code: int
    reason: bytes = b""
    frame_type: int = 0
    application: bool = False

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_APPLICATION_CLOSE if self.application else FRAME_CONNECTION_CLOSE)
        w.push_varint(self.error_code)
        if not self.application:
            w.push_varint(self.frame_type)
        w.push_varint(len(self.reason))
        w.push_bytes(self.reason)


@dataclass(slots=True)
class HandshakeDone:
    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_HANDSHAKE_DONE)


@dataclass(slots=True)
class Datagram:
    data: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_DATAGRAM_LEN)
        w.push_varint(len(self.data))
        w.push_bytes(self.data)


@dataclass(slots=True)
class AckFrequency:
    sequence: int
    ack_eliciting_threshold: int
    request_max_ack_delay: int
    reordering_threshold: int

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_ACK_FREQUENCY)
        w.push_varint(self.sequence)
        w.push_varint(self.ack_eliciting_threshold)
        w.push_varint(self.request_max_ack_delay)
        w.push_varint(self.reordering_threshold)


@dataclass(slots=True)
class ImmediateAck:
    def encode(self, w: Writer) -> None:
        w.push_uint8(FRAME_IMMEDIATE_ACK)


def _push_address(w: Writer, frame_v4: int, frame_v6: int, sequence: int, ip: bytes, port: int) -> None:
    w.push_varint(frame_v6 if len(ip) == 16 else frame_v4)
    w.push_varint(sequence)
    w.push_bytes(ip)
    w.push_uint16(port)


@dataclass(slots=True)
class ObservedAddress:
    """QAD: the address the sender sees us at. ``ip`` is 4 or 16 raw bytes."""

    sequence: int
    ip: bytes
    port: int

    def encode(self, w: Writer) -> None:
        _push_address(w, FRAME_OBSERVED_ADDRESS_V4, FRAME_OBSERVED_ADDRESS_V6, self.sequence, self.ip, self.port)


@dataclass(slots=True)
class AddAddress:
    """n0 NAT traversal, server to client: a candidate address."""

    sequence: int
    ip: bytes
    port: int

    def encode(self, w: Writer) -> None:
        _push_address(w, FRAME_ADD_ADDRESS_V4, FRAME_ADD_ADDRESS_V6, self.sequence, self.ip, self.port)


@dataclass(slots=True)
class ReachOut:
    """n0 NAT traversal, client to server: probe me at this address in this round."""

    round: int
    ip: bytes
    port: int

    def encode(self, w: Writer) -> None:
        _push_address(w, FRAME_REACH_OUT_V4, FRAME_REACH_OUT_V6, self.round, self.ip, self.port)


@dataclass(slots=True)
class RemoveAddress:
    sequence: int

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_REMOVE_ADDRESS)
        w.push_varint(self.sequence)


@dataclass(slots=True)
class PathAbandon:
    path_id: int
    error_code: int

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_PATH_ABANDON)
        w.push_varint(self.path_id)
        w.push_varint(self.error_code)


@dataclass(slots=True)
class PathStatus:
    """PATH_STATUS_AVAILABLE (``available``) or PATH_STATUS_BACKUP."""

    path_id: int
    sequence: int
    available: bool = True

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_PATH_STATUS_AVAILABLE if self.available else FRAME_PATH_STATUS_BACKUP)
        w.push_varint(self.path_id)
        w.push_varint(self.sequence)


@dataclass(slots=True)
class MaxPathId:
    path_id: int

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_MAX_PATH_ID)
        w.push_varint(self.path_id)


@dataclass(slots=True)
class PathsBlocked:
    path_id: int

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_PATHS_BLOCKED)
        w.push_varint(self.path_id)


@dataclass(slots=True)
class PathCidsBlocked:
    path_id: int
    next_sequence: int

    def encode(self, w: Writer) -> None:
        w.push_varint(FRAME_PATH_CIDS_BLOCKED)
        w.push_varint(self.path_id)
        w.push_varint(self.next_sequence)


Frame = Union[
    Padding,
    Ping,
    Ack,
    ResetStream,
    StopSending,
    Crypto,
    NewToken,
    Stream,
    MaxData,
    MaxStreamData,
    MaxStreams,
    DataBlocked,
    StreamDataBlocked,
    StreamsBlocked,
    NewConnectionId,
    RetireConnectionId,
    PathChallenge,
    PathResponse,
    ConnectionClose,
    HandshakeDone,
    Datagram,
    AckFrequency,
    ImmediateAck,
    ObservedAddress,
    AddAddress,
    ReachOut,
    RemoveAddress,
    PathAbandon,
    PathStatus,
    MaxPathId,
    PathsBlocked,
    PathCidsBlocked,
]


def is_ack_eliciting(frame: Frame) -> bool:
    """Everything but ACK, PADDING and CONNECTION_CLOSE asks for an acknowledgement."""
    return not isinstance(frame, (Ack, Padding, ConnectionClose))


# -- fast encoders ------------------------------------------------------------------


def push_stream_header(
    w: Writer, stream_id: int, offset: int, length: int, fin: bool, with_length: bool = True
) -> None:
    """STREAM frame up to its data; without the length the data runs to the packet's end."""
    frame_type = FRAME_STREAM | (0x04 if offset else 0) | (0x02 if with_length else 0) | (0x01 if fin else 0)
    w.push_uint8(frame_type)
    w.push_varint(stream_id)
    if offset:
        w.push_varint(offset)
    if with_length:
        w.push_varint(length)


def stream_header_size(stream_id: int, offset: int, length: int, with_length: bool = True) -> int:
    size = 1 + varint_size(stream_id)
    if offset:
        size += varint_size(offset)
    if with_length:
        size += varint_size(length)
    return size


def push_ack(
    w: Writer,
    ranges: list[tuple[int, int]],
    delay: int,
    ecn: tuple[int, int, int] | None = None,
    path_id: int | None = None,
) -> None:
    """ACK (or PATH_ACK) of ``ranges``: disjoint half-open ``(start, stop)``, highest first."""
    if not ranges:
        raise QuicError("ACK without ranges", error_code=QuicError.INTERNAL_ERROR)
    if path_id is None:
        w.push_uint8(FRAME_ACK_ECN if ecn is not None else FRAME_ACK)
    else:
        w.push_uint8(FRAME_PATH_ACK_ECN if ecn is not None else FRAME_PATH_ACK)
        w.push_varint(path_id)
    start, stop = ranges[0]
    w.push_varint(stop - 1)
    w.push_varint(delay)
    w.push_varint(len(ranges) - 1)
    w.push_varint(stop - 1 - start)
    for i in range(1, len(ranges)):
        low, high = ranges[i]
        w.push_varint(start - high - 1)
        w.push_varint(high - 1 - low)
        start = low
    if ecn is not None:
        w.push_varint(ecn[0])
        w.push_varint(ecn[1])
        w.push_varint(ecn[2])


def encode_frames(frames: list[Frame], capacity: int = 65536) -> bytes:
    """The frames one after the other, as a packet payload."""
    w = Writer(capacity)
    for frame in frames:
        frame.encode(w)
    return w.getvalue()


# -- decoding -----------------------------------------------------------------------


def _pull_ack(r: Reader, path_id: int | None, with_ecn: bool) -> Ack:
    largest = r.pull_varint()
    delay = r.pull_varint()
    count = r.pull_varint()
    first = r.pull_varint()
    smallest = largest - first
    if smallest < 0:
        raise QuicDecodeError("ACK range below zero")
    ranges = [(smallest, largest + 1)]
    for _ in range(count):
        gap = r.pull_varint()
        length = r.pull_varint()
        stop = smallest - gap - 1
        low = stop - 1 - length
        if low < 0:
            raise QuicDecodeError("ACK range below zero")
        ranges.append((low, stop))
        smallest = low
    ecn: tuple[int, int, int] | None = None
    if with_ecn:
        ecn = (r.pull_varint(), r.pull_varint(), r.pull_varint())
    return Ack(ranges, delay, ecn, path_id)


def _pull_any_ack(r: Reader, frame_type: int) -> Ack:
    """The body of an ACK, ACK_ECN, PATH_ACK or PATH_ACK_ECN frame of ``frame_type``."""
    if frame_type == FRAME_ACK or frame_type == FRAME_ACK_ECN:
        return _pull_ack(r, None, frame_type == FRAME_ACK_ECN)
    return _pull_ack(r, _pull_path_id(r), frame_type == FRAME_PATH_ACK_ECN)


def _pull_path_id(r: Reader) -> int:
    path_id = r.pull_varint()
    if path_id > MAX_PATH_ID_VALUE:
        raise QuicDecodeError("path ID above 2^32-1")
    return path_id


def _pull_new_connection_id(r: Reader, path_id: int | None) -> NewConnectionId:
    sequence = r.pull_varint()
    retire_prior_to = r.pull_varint()
    if retire_prior_to > sequence:
        raise QuicDecodeError("Retire Prior To above the sequence number")
    length = r.pull_uint8()
    if length < 1 or length > MAX_CID_SIZE:
        raise QuicDecodeError(f"connection ID of {length} bytes")
    cid = r.pull_bytes(length)
    token = r.pull_bytes(RESET_TOKEN_SIZE)
    return NewConnectionId(sequence, retire_prior_to, cid, token, path_id)


def _pull_ip(r: Reader, v6: bool) -> bytes:
    return r.pull_bytes(16 if v6 else 4)


def _pull_limit(r: Reader) -> int:
    value = r.pull_varint()
    if value > MAX_STREAMS_LIMIT:
        raise QuicDecodeError("stream count above 2^60")
    return value


def _pull_other(r: Reader, frame_type: int) -> Frame:
    """Every frame but the hot ones handled inline in ``decode_frames``."""
    if frame_type == FRAME_RESET_STREAM:
        return ResetStream(r.pull_varint(), r.pull_varint(), r.pull_varint())
    if frame_type == FRAME_STOP_SENDING:
        return StopSending(r.pull_varint(), r.pull_varint())
    if frame_type == FRAME_NEW_TOKEN:
        token = r.pull_bytes(r.pull_varint())
        if not token:
            raise QuicDecodeError("empty NEW_TOKEN")
        return NewToken(token)
    if frame_type == FRAME_MAX_DATA:
        return MaxData(r.pull_varint())
    if frame_type == FRAME_MAX_STREAM_DATA:
        return MaxStreamData(r.pull_varint(), r.pull_varint())
    if frame_type == FRAME_MAX_STREAMS_BIDI or frame_type == FRAME_MAX_STREAMS_UNI:
        return MaxStreams(frame_type == FRAME_MAX_STREAMS_BIDI, _pull_limit(r))
    if frame_type == FRAME_DATA_BLOCKED:
        return DataBlocked(r.pull_varint())
    if frame_type == FRAME_STREAM_DATA_BLOCKED:
        return StreamDataBlocked(r.pull_varint(), r.pull_varint())
    if frame_type == FRAME_STREAMS_BLOCKED_BIDI or frame_type == FRAME_STREAMS_BLOCKED_UNI:
        return StreamsBlocked(frame_type == FRAME_STREAMS_BLOCKED_BIDI, _pull_limit(r))
    if frame_type == FRAME_NEW_CONNECTION_ID:
        return _pull_new_connection_id(r, None)
    if frame_type == FRAME_RETIRE_CONNECTION_ID:
        return RetireConnectionId(r.pull_varint())
    if frame_type == FRAME_PATH_CHALLENGE:
        return PathChallenge(r.pull_bytes(8))
    if frame_type == FRAME_PATH_RESPONSE:
        return PathResponse(r.pull_bytes(8))
    if frame_type == FRAME_CONNECTION_CLOSE:
        code = r.pull_varint()
        offending = r.pull_varint()
        return ConnectionClose(code, r.pull_bytes(r.pull_varint()), offending, False)
    if frame_type == FRAME_APPLICATION_CLOSE:
        code = r.pull_varint()
        return ConnectionClose(code, r.pull_bytes(r.pull_varint()), 0, True)
    if frame_type == FRAME_HANDSHAKE_DONE:
        return HandshakeDone()
    if frame_type == FRAME_IMMEDIATE_ACK:
        return ImmediateAck()
    if frame_type == FRAME_ACK_FREQUENCY:
        return AckFrequency(r.pull_varint(), r.pull_varint(), r.pull_varint(), r.pull_varint())
    if frame_type == FRAME_PATH_ACK or frame_type == FRAME_PATH_ACK_ECN:
        return _pull_any_ack(r, frame_type)
    if frame_type == FRAME_PATH_ABANDON:
        return PathAbandon(_pull_path_id(r), r.pull_varint())
    if frame_type == FRAME_PATH_STATUS_BACKUP or frame_type == FRAME_PATH_STATUS_AVAILABLE:
        return PathStatus(_pull_path_id(r), r.pull_varint(), frame_type == FRAME_PATH_STATUS_AVAILABLE)
    if frame_type == FRAME_PATH_NEW_CONNECTION_ID:
        return _pull_new_connection_id(r, _pull_path_id(r))
    if frame_type == FRAME_PATH_RETIRE_CONNECTION_ID:
        path_id = _pull_path_id(r)
        return RetireConnectionId(r.pull_varint(), path_id)
    if frame_type == FRAME_MAX_PATH_ID:
        return MaxPathId(_pull_path_id(r))
    if frame_type == FRAME_PATHS_BLOCKED:
        return PathsBlocked(_pull_path_id(r))
    if frame_type == FRAME_PATH_CIDS_BLOCKED:
        return PathCidsBlocked(_pull_path_id(r), r.pull_varint())
    if frame_type == FRAME_OBSERVED_ADDRESS_V4 or frame_type == FRAME_OBSERVED_ADDRESS_V6:
        sequence = r.pull_varint()
        ip = _pull_ip(r, frame_type == FRAME_OBSERVED_ADDRESS_V6)
        return ObservedAddress(sequence, ip, r.pull_uint16())
    if frame_type == FRAME_ADD_ADDRESS_V4 or frame_type == FRAME_ADD_ADDRESS_V6:
        sequence = r.pull_varint()
        ip = _pull_ip(r, frame_type == FRAME_ADD_ADDRESS_V6)
        return AddAddress(sequence, ip, r.pull_uint16())
    if frame_type == FRAME_REACH_OUT_V4 or frame_type == FRAME_REACH_OUT_V6:
        round_ = r.pull_varint()
        ip = _pull_ip(r, frame_type == FRAME_REACH_OUT_V6)
        return ReachOut(round_, ip, r.pull_uint16())
    if frame_type == FRAME_REMOVE_ADDRESS:
        return RemoveAddress(r.pull_varint())
    raise QuicDecodeError(f"unknown frame type 0x{frame_type:x}", frame_type=frame_type)


def _decode_one(r: Reader, payload: bytes, bit: int, end: int) -> Frame:
    frame_type = 0
    try:
        frame_type = r.pull_varint()
        if FRAME_STREAM <= frame_type <= 0x0F:
            if not bit & (_Z | _O):
                raise _not_allowed(frame_type)
            stream_id = r.pull_varint()
            offset = r.pull_varint() if frame_type & 0x04 else 0
            data = r.pull_bytes(r.pull_varint()) if frame_type & 0x02 else r.pull_rest()
            if offset + len(data) > VARINT_MAX:
                raise QuicDecodeError("stream data beyond 2^62-1")
            return Stream(stream_id, offset, data, bool(frame_type & 0x01))
        if frame_type == FRAME_ACK or frame_type == FRAME_ACK_ECN:
            if not bit & (_I | _H | _O):
                raise _not_allowed(frame_type)
            return _pull_any_ack(r, frame_type)
        if frame_type == FRAME_PADDING:
            start = r.tell() - 1
            match = _NONZERO.search(payload, start + 1)
            stop = match.start() if match is not None else end
            r.seek(stop)
            return Padding(stop - start)
        if frame_type == FRAME_PING:
            return Ping()
        if frame_type == FRAME_CRYPTO:
            if not bit & (_I | _H | _O):
                raise _not_allowed(frame_type)
            offset = r.pull_varint()
            data = r.pull_bytes(r.pull_varint())
            if offset + len(data) > VARINT_MAX:
                raise QuicDecodeError("crypto data beyond 2^62-1")
            return Crypto(offset, data)
        if frame_type == FRAME_DATAGRAM or frame_type == FRAME_DATAGRAM_LEN:
            if not bit & (_Z | _O):
                raise _not_allowed(frame_type)
            data = r.pull_bytes(r.pull_varint()) if frame_type == FRAME_DATAGRAM_LEN else r.pull_rest()
            return Datagram(data)
        allowed = _ALLOWED.get(frame_type, -1)
        if allowed < 0:
            raise QuicDecodeError(f"unknown frame type 0x{frame_type:x}")
        if not allowed & bit:
            raise _not_allowed(frame_type)
        return _pull_other(r, frame_type)
    except QuicDecodeError as exc:
        if exc.frame_type == 0:
            exc.frame_type = frame_type
        raise


def decode_frames(payload: bytes, packet_type: int) -> list[Frame]:
    """The frames of a decrypted packet payload of ``packet_type`` (``irohpy.quic.packet``)."""
    if not payload:
        raise QuicDecodeError("packet without frames", error_code=QuicError.PROTOCOL_VIOLATION)
    bit = _PACKET_BITS.get(packet_type, 0)
    r = Reader(payload)
    end = len(payload)
    frames: list[Frame] = []
    while r.tell() < end:
        frames.append(_decode_one(r, payload, bit, end))
    return frames


def decode_frame(payload: bytes, pos: int, packet_type: int) -> tuple[Frame, int]:
    """The frame at ``pos`` of a decrypted payload, and where the next one starts."""
    r = Reader(payload, pos)
    return _decode_one(r, payload, _PACKET_BITS.get(packet_type, 0), len(payload)), r.tell()


def pull_ack_frame(payload: bytes, pos: int) -> tuple[Ack, int]:
    """The ACK, ACK_ECN, PATH_ACK or PATH_ACK_ECN frame at ``pos`` (type byte included) of a
    1-RTT payload, and where the next frame starts: the receive path's fast case of
    :func:`decode_frame` (every packet of a busy or keep-alive exchange holds one)."""
    r = Reader(payload, pos + 1)
    frame_type = payload[pos]
    try:
        frame = _pull_any_ack(r, frame_type)
    except QuicDecodeError as exc:
        exc.frame_type = frame_type
        raise
    return frame, r.tell()


def pull_stream_frame(payload: bytes, pos: int) -> tuple[int, int, bytes, bool, int]:
    """The STREAM frame at ``pos`` (its type byte, 0x08-0x0f, included) of a 1-RTT payload, as
    ``(stream_id, offset, data, fin, next_pos)``: the receive path's fast case of
    :func:`decode_frame`, without a frame object."""
    end = len(payload)
    frame_type = payload[pos]
    try:
        stream_id, pos = _pull_varint(payload, pos + 1, end)
        offset = 0
        if frame_type & 0x04:
            offset, pos = _pull_varint(payload, pos, end)
        if frame_type & 0x02:
            length, pos = _pull_varint(payload, pos, end)
            stop = pos + length
            if stop > end:
                raise QuicDecodeError("truncated")
        else:
            stop = end
        if offset + stop - pos > VARINT_MAX:
            raise QuicDecodeError("stream data beyond 2^62-1")
    except QuicDecodeError as exc:
        exc.frame_type = frame_type
        raise
    return stream_id, offset, payload[pos:stop], bool(frame_type & 0x01), stop


def _pull_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise QuicDecodeError("truncated varint")
    first = data[pos]
    kind = first >> 6
    if kind == 0:
        return first, pos + 1
    stop = pos + (1 << kind)
    if stop > end:
        raise QuicDecodeError("truncated varint")
    return int.from_bytes(data[pos:stop], "big") & ((1 << (8 * (1 << kind) - 2)) - 1), stop
