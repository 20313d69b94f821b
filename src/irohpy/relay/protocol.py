"""The iroh-relay wire protocol (sans-IO): frames and the challenge handshake.

Each relay frame is one binary WebSocket message: a frame type (a QUIC
varint, always one byte here) and a body. Both the server and the client
use these codecs; neither does any I/O here. Layouts: ``iroh-wire.md`` §4.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import blake3

from irohpy.base.keys import PublicKey, SecretKey, Signature
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, InvalidKey, InvalidSignature, RelayProtocolError

SUBPROTOCOL_V2 = "iroh-relay-v2"
SUBPROTOCOL_V1 = "iroh-relay-v1"
SUBPROTOCOLS = (SUBPROTOCOL_V2, SUBPROTOCOL_V1)
RELAY_PATH = "/relay"
CHALLENGE_CONTEXT = "iroh-relay handshake v1 challenge signature"

MAX_MESSAGE_SIZE = 1 << 20  # one WebSocket message
MAX_PACKET_SIZE = 64 * 1024  # a frame body after the type byte
# The smallest QUIC packet (header protection samples 16 bytes, 4 after the packet number;
# RFC 9001 §5.4.2). Batches of smaller segments are refused: one 64 KB frame of 1-byte segments
# would be 64,000 datagrams. Anything larger is legitimate: a GSO batch's segments are as big as
# its first packet, and noq sends batches of retransmissions and paced packets well below 1200.
MIN_SEGMENT_SIZE = 21
KEY_LEN = 32
SIG_LEN = 64


class FrameType(enum.IntEnum):
    SERVER_CHALLENGE = 0
    CLIENT_AUTH = 1
    SERVER_CONFIRMS_AUTH = 2
    SERVER_DENIES_AUTH = 3
    CLIENT_TO_RELAY_DATAGRAM = 4
    CLIENT_TO_RELAY_DATAGRAM_BATCH = 5
    RELAY_TO_CLIENT_DATAGRAM = 6
    RELAY_TO_CLIENT_DATAGRAM_BATCH = 7
    ENDPOINT_GONE = 8
    PING = 9
    PONG = 10
    HEALTH = 11
    RESTARTING = 12
    STATUS = 13


class Status(enum.IntEnum):
    HEALTHY = 0
    SAME_ENDPOINT_ID_CONNECTED = 1
    RATE_LIMITED = 2


# -- frames -------------------------------------------------------------------


@dataclass(frozen=True)
class ServerChallenge:
    challenge: bytes


@dataclass(frozen=True)
class ClientAuth:
    public_key: PublicKey
    signature: Signature


@dataclass(frozen=True)
class ServerConfirmsAuth:
    pass


@dataclass(frozen=True)
class ServerDeniesAuth:
    reason: str


@dataclass(frozen=True)
class Datagrams:
    """One or more QUIC datagrams with their peer (destination C→S, source S→C).

    ``segment_size`` is None for a single datagram; with a batch every
    segment has that size except possibly the last, as with UDP GSO.
    """

    peer: PublicKey
    ecn: int
    payload: bytes
    segment_size: int | None = None

    def datagrams(self) -> list[bytes]:
        if self.segment_size is None:
            return [self.payload]
        size = self.segment_size
        return [self.payload[i : i + size] for i in range(0, len(self.payload), size)]


@dataclass(frozen=True)
class ClientToRelay(Datagrams):
    pass


@dataclass(frozen=True)
class RelayToClient(Datagrams):
    pass


@dataclass(frozen=True)
class EndpointGone:
    endpoint_id: PublicKey


@dataclass(frozen=True)
class Ping:
    data: bytes


@dataclass(frozen=True)
class Pong:
    data: bytes


@dataclass(frozen=True)
class Health:
    problem: str


@dataclass(frozen=True)
class Restarting:
    reconnect_in_ms: int
    try_for_ms: int


@dataclass(frozen=True)
class StatusFrame:
    status: int


Frame = (
    ServerChallenge | ClientAuth | ServerConfirmsAuth | ServerDeniesAuth | ClientToRelay | RelayToClient
    | EndpointGone | Ping | Pong | Health | Restarting | StatusFrame
)


def _datagram_body(frame: Datagrams, single: FrameType, batch: FrameType) -> bytes:
    if not frame.payload:
        raise RelayProtocolError("a relay datagram must not be empty")
    if not 0 <= frame.ecn <= 3:
        raise RelayProtocolError(f"ECN codepoint {frame.ecn} out of range")
    head = bytes(frame.peer) + bytes([frame.ecn])
    if frame.segment_size is None:
        return bytes([single]) + head + frame.payload
    if not 0 < frame.segment_size <= 0xFFFF:
        raise RelayProtocolError(f"segment size {frame.segment_size} out of range")
    return bytes([batch]) + head + frame.segment_size.to_bytes(2, "big") + frame.payload


def encode(frame: Frame) -> bytes:
    """The WebSocket message for ``frame``."""
    match frame:
        case ServerChallenge(challenge):
            if len(challenge) != 16:
                raise RelayProtocolError("a challenge has 16 bytes")
            return bytes([FrameType.SERVER_CHALLENGE]) + challenge
        case ClientAuth(public_key, signature):
            return bytes([FrameType.CLIENT_AUTH]) + bytes(public_key) + bytes([SIG_LEN]) + bytes(signature)
        case ServerConfirmsAuth():
            return bytes([FrameType.SERVER_CONFIRMS_AUTH])
        case ServerDeniesAuth(reason):
            w = Writer()
            w.str_(reason)
            return bytes([FrameType.SERVER_DENIES_AUTH]) + w.finish()
        case ClientToRelay():
            return _datagram_body(frame, FrameType.CLIENT_TO_RELAY_DATAGRAM, FrameType.CLIENT_TO_RELAY_DATAGRAM_BATCH)
        case RelayToClient():
            return _datagram_body(frame, FrameType.RELAY_TO_CLIENT_DATAGRAM, FrameType.RELAY_TO_CLIENT_DATAGRAM_BATCH)
        case EndpointGone(endpoint_id):
            return bytes([FrameType.ENDPOINT_GONE]) + bytes(endpoint_id)
        case Ping(data) | Pong(data):
            if len(data) != 8:
                raise RelayProtocolError("ping and pong carry 8 bytes")
            kind = FrameType.PING if isinstance(frame, Ping) else FrameType.PONG
            return bytes([kind]) + data
        case Health(problem):
            return bytes([FrameType.HEALTH]) + problem.encode()
        case Restarting(reconnect_in_ms, try_for_ms):
            return bytes([FrameType.RESTARTING]) + reconnect_in_ms.to_bytes(4, "big") + try_for_ms.to_bytes(4, "big")
        case StatusFrame(status):
            return bytes([FrameType.STATUS, status])
    raise TypeError(f"not a relay frame: {frame!r}")


def _key(body: bytes, what: str) -> PublicKey:
    try:
        return PublicKey.from_bytes(body[:KEY_LEN])
    except InvalidKey as exc:
        raise RelayProtocolError(f"{what}: {exc}") from None


def _exact(body: bytes, n: int, name: str) -> None:
    if len(body) != n:
        raise RelayProtocolError(f"{name} frame body has {len(body)} bytes, expected {n}")


def _datagrams(cls: type[Datagrams], body: bytes, batch: bool, name: str) -> Datagrams:
    header = KEY_LEN + 1 + (2 if batch else 0)
    if len(body) <= header:
        raise RelayProtocolError(f"{name} frame is truncated or carries no datagram")
    peer = _key(body, name)
    ecn = body[KEY_LEN]
    if ecn > 3:
        raise RelayProtocolError(f"{name} frame has invalid ECN byte {ecn}")
    if not batch:
        return cls(peer, ecn, body[KEY_LEN + 1 :])
    segment = int.from_bytes(body[KEY_LEN + 1 : header], "big")
    if segment == 0:
        raise RelayProtocolError(f"{name} frame has segment size 0")
    return cls(peer, ecn, body[header:], segment)


def decode(message: bytes, *, version: int = 2) -> Frame:
    """Parse one WebSocket message; anything malformed raises RelayProtocolError."""
    if not message:
        raise RelayProtocolError("empty relay frame")
    if len(message) > MAX_MESSAGE_SIZE:
        raise RelayProtocolError(f"relay frame of {len(message)} bytes exceeds {MAX_MESSAGE_SIZE}")
    kind, body = message[0], message[1:]
    if kind >= 64:
        raise RelayProtocolError(f"unknown relay frame type (first byte 0x{kind:02x})")
    if len(body) > MAX_PACKET_SIZE + KEY_LEN + 3:
        raise RelayProtocolError(f"relay frame body of {len(body)} bytes is too large")
    if kind == FrameType.SERVER_CHALLENGE:
        _exact(body, 16, "ServerChallenge")
        return ServerChallenge(body)
    if kind == FrameType.CLIENT_AUTH:
        _exact(body, KEY_LEN + 1 + SIG_LEN, "ClientAuth")
        if body[KEY_LEN] != SIG_LEN:
            raise RelayProtocolError("ClientAuth signature length prefix must be 64")
        return ClientAuth(_key(body, "ClientAuth"), Signature.from_bytes(body[KEY_LEN + 1 :]))
    if kind == FrameType.SERVER_CONFIRMS_AUTH:
        _exact(body, 0, "ServerConfirmsAuth")
        return ServerConfirmsAuth()
    if kind == FrameType.SERVER_DENIES_AUTH:
        try:
            reader = Reader(body)
            reason = reader.str_()
            reader.finish()
        except DecodeError as exc:
            raise RelayProtocolError(f"ServerDeniesAuth: {exc}") from None
        return ServerDeniesAuth(reason)
    if kind == FrameType.CLIENT_TO_RELAY_DATAGRAM:
        return _datagrams(ClientToRelay, body, False, "ClientToRelayDatagram")
    if kind == FrameType.CLIENT_TO_RELAY_DATAGRAM_BATCH:
        return _datagrams(ClientToRelay, body, True, "ClientToRelayDatagramBatch")
    if kind == FrameType.RELAY_TO_CLIENT_DATAGRAM:
        return _datagrams(RelayToClient, body, False, "RelayToClientDatagram")
    if kind == FrameType.RELAY_TO_CLIENT_DATAGRAM_BATCH:
        return _datagrams(RelayToClient, body, True, "RelayToClientDatagramBatch")
    if kind == FrameType.ENDPOINT_GONE:
        _exact(body, KEY_LEN, "EndpointGone")
        return EndpointGone(_key(body, "EndpointGone"))
    if kind in (FrameType.PING, FrameType.PONG):
        _exact(body, 8, "Ping" if kind == FrameType.PING else "Pong")
        return Ping(body) if kind == FrameType.PING else Pong(body)
    if kind == FrameType.HEALTH and version == 1:
        return Health(body.decode("utf-8", "replace"))
    if kind == FrameType.RESTARTING:
        _exact(body, 8, "Restarting")
        return Restarting(int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))
    if kind == FrameType.STATUS and version >= 2:
        _exact(body, 1, "Status")
        return StatusFrame(body[0])
    raise RelayProtocolError(f"unknown relay frame type {kind}")


# -- handshake ------------------------------------------------------------------


def new_challenge() -> ServerChallenge:
    return ServerChallenge(os.urandom(16))


def challenge_message(challenge: bytes) -> bytes:
    """What the client signs: a BLAKE3 key derived from the challenge (domain-separated)."""
    return blake3.blake3(challenge, derive_key_context=CHALLENGE_CONTEXT).digest()


def answer_challenge(secret: SecretKey, challenge: ServerChallenge) -> ClientAuth:
    return ClientAuth(secret.public(), secret.sign(challenge_message(challenge.challenge)))


def verify_client_auth(challenge: ServerChallenge, auth: ClientAuth) -> bool:
    try:
        auth.public_key.verify(challenge_message(challenge.challenge), auth.signature)
    except InvalidSignature:
        return False
    return True


def negotiate_subprotocol(offered: str) -> str | None:
    """The highest protocol version both sides speak, from a client's header."""
    wanted = {p.strip() for p in offered.split(",")}
    for proto in SUBPROTOCOLS:
        if proto in wanted:
            return proto
    return None


def version_of(subprotocol: str) -> int:
    return 2 if subprotocol == SUBPROTOCOL_V2 else 1
