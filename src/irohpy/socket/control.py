"""Hole-punching control packets: codec, sealing and replay protection (sans-IO).

They share the UDP sockets and relay paths with QUIC, so the first byte has
the QUIC fixed bit (0x40) clear: Rust iroh peers drop them as non-QUIC. Only
the holder of an endpoint's key can produce a packet that opens: each is
sealed with ChaCha20-Poly1305 under a key both ends derive from an X25519
agreement of their Ed25519 keys. The layout is specified in
``docs/wire/holepunch.md``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from irohpy.base.keys import EndpointId, SecretKey
from irohpy.errors import ControlPacketError, InvalidKey

MAGIC: Final = b"\x20ihp"
VERSION: Final = 1
HEADER_LEN: Final = len(MAGIC) + 1 + 32
NONCE_LEN: Final = 12
TAG_LEN: Final = 16
TX_ID_LEN: Final = 12
MAX_CANDIDATES: Final = 32
# An encoded address: family (4 or 6), 16 address bytes (v4 zero-padded), port.
ADDR_LEN: Final = 1 + 16 + 2
MAX_PACKET: Final = HEADER_LEN + NONCE_LEN + 1 + 8 + 1 + MAX_CANDIDATES * ADDR_LEN + TAG_LEN

PING: Final = 1
PONG: Final = 2
CALL_ME_MAYBE: Final = 3

# Replay protection: timestamps may arrive this much out of order (several
# paths, UDP reordering) and must lie within MAX_SKEW of our clock.
REORDER_WINDOW_US: Final = 2_000_000
MAX_SKEW_US: Final = 600_000_000
MAX_TRACKED_SENDERS: Final = 4096
MAX_CACHED_KEYS: Final = 1024
_P: Final = 2**255 - 19
_HKDF_SALT: Final = b"irohpy holepunch v1"

SockAddr = tuple[str, int]


def is_control(data: bytes) -> bool:
    return data[:4] == MAGIC


@dataclass(frozen=True)
class Ping:
    tx_id: bytes


@dataclass(frozen=True)
class Pong:
    """Answers a Ping on the path it came from, and says where it came from."""

    tx_id: bytes
    observed: SockAddr


@dataclass(frozen=True)
class CallMeMaybe:
    """Our candidate addresses: probe them now, we probe yours."""

    candidates: tuple[SockAddr, ...] = field(default_factory=tuple)


Message = Ping | Pong | CallMeMaybe


def _encode_addr(addr: SockAddr) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    family = 4 if ip.version == 4 else 6
    return bytes([family]) + ip.packed.ljust(16, b"\0") + struct.pack(">H", addr[1])


def _decode_addr(raw: bytes) -> SockAddr:
    family, port = raw[0], struct.unpack(">H", raw[17:19])[0]
    if family == 4:
        if raw[5:17] != bytes(12):
            raise ControlPacketError("IPv4 address with non-zero padding")
        host = str(ipaddress.IPv4Address(raw[1:5]))
    elif family == 6:
        host = str(ipaddress.IPv6Address(raw[1:17]))
    else:
        raise ControlPacketError(f"unknown address family {family}")
    if port == 0:
        raise ControlPacketError("address with port 0")
    return host, port


def encode_body(msg: Message, timestamp_us: int) -> bytes:
    ts = struct.pack(">Q", timestamp_us)
    if isinstance(msg, Ping):
        # Padded to a Pong's size, so answering never amplifies.
        return bytes([PING]) + ts + msg.tx_id + bytes(ADDR_LEN)
    if isinstance(msg, Pong):
        return bytes([PONG]) + ts + msg.tx_id + _encode_addr(msg.observed)
    if len(msg.candidates) > MAX_CANDIDATES:
        raise ControlPacketError(f"at most {MAX_CANDIDATES} candidates fit a CallMeMaybe")
    return bytes([CALL_ME_MAYBE]) + ts + bytes([len(msg.candidates)]) + b"".join(
        _encode_addr(a) for a in msg.candidates
    )


def decode_body(body: bytes) -> tuple[Message, int]:
    """Parse a decrypted body into its message and timestamp (µs since the epoch)."""
    if len(body) < 9:
        raise ControlPacketError("control body too short")
    kind = body[0]
    (ts,) = struct.unpack(">Q", body[1:9])
    rest = body[9:]
    if kind in (PING, PONG):
        if len(rest) != TX_ID_LEN + ADDR_LEN:
            raise ControlPacketError(f"ping/pong body of {len(rest)} bytes")
        tx_id = rest[:TX_ID_LEN]
        if kind == PING:
            if rest[TX_ID_LEN:] != bytes(ADDR_LEN):
                raise ControlPacketError("ping padding is not zero")
            return Ping(tx_id), ts
        return Pong(tx_id, _decode_addr(rest[TX_ID_LEN:])), ts
    if kind == CALL_ME_MAYBE:
        if not rest:
            raise ControlPacketError("call-me-maybe without a count")
        count = rest[0]
        if count > MAX_CANDIDATES or len(rest) != 1 + count * ADDR_LEN:
            raise ControlPacketError("call-me-maybe candidate list has the wrong length")
        addrs = tuple(_decode_addr(rest[1 + i * ADDR_LEN : 1 + (i + 1) * ADDR_LEN]) for i in range(count))
        return CallMeMaybe(addrs), ts
    raise ControlPacketError(f"unknown control message type {kind}")


def x25519_secret(secret: SecretKey) -> X25519PrivateKey:
    """The X25519 scalar of an Ed25519 seed (RFC 8032 §5.1.5; clamping is X25519's)."""
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(secret.to_bytes()).digest()[:32])


def x25519_public(endpoint_id: EndpointId) -> X25519PublicKey:
    """The Montgomery u of an Edwards point: u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(bytes(endpoint_id), "little") & ((1 << 255) - 1)
    if y == 1:
        raise InvalidKey("the identity point has no X25519 counterpart")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))


class ReplayGuard:
    """Refuses a packet seen before, or one too old, per sender.

    Senders stamp each packet with a strictly increasing time in µs. We keep
    the newest stamp per sender and the stamps of the last REORDER_WINDOW, so
    a replay inside the window is caught by the set and an older one by the
    window. MAX_SKEW bounds replays of old packets at a fresh receiver.
    """

    def __init__(self) -> None:
        self._senders: OrderedDict[EndpointId, tuple[int, set[int]]] = OrderedDict()

    def check(self, sender: EndpointId, ts: int, now_us: int) -> None:
        if abs(ts - now_us) > MAX_SKEW_US:
            raise ControlPacketError("control packet timestamp too far from our clock")
        entry = self._senders.get(sender)
        if entry is None:
            self._senders[sender] = (ts, {ts})
            if len(self._senders) > MAX_TRACKED_SENDERS:
                self._senders.popitem(last=False)
            return
        newest, recent = entry
        if ts <= newest - REORDER_WINDOW_US or ts in recent:
            raise ControlPacketError("replayed control packet")
        recent.add(ts)
        if ts > newest:
            newest = ts
            recent = {t for t in recent if t > newest - REORDER_WINDOW_US}
        self._senders[sender] = (newest, recent)
        self._senders.move_to_end(sender)


class ControlCodec:
    """Seals packets to a peer and opens packets from peers, for one endpoint key."""

    def __init__(self, secret: SecretKey) -> None:
        self._own = secret.public()
        self._x = x25519_secret(secret)
        self._keys: OrderedDict[EndpointId, tuple[ChaCha20Poly1305, ChaCha20Poly1305]] = OrderedDict()
        self.replay = ReplayGuard()
        self._last_ts = 0

    def _timestamp(self) -> int:
        ts = max(time.time_ns() // 1000, self._last_ts + 1)
        self._last_ts = ts
        return ts

    def _ciphers(self, peer: EndpointId) -> tuple[ChaCha20Poly1305, ChaCha20Poly1305]:
        """(ours → peer, peer → ours): one key per direction."""
        cached = self._keys.get(peer)
        if cached is not None:
            self._keys.move_to_end(peer)
            return cached
        shared = self._x.exchange(x25519_public(peer))
        if shared == bytes(32):
            raise ControlPacketError("peer key gives a degenerate X25519 agreement")

        def derive(sender: EndpointId, receiver: EndpointId) -> ChaCha20Poly1305:
            key = HKDF(hashes.SHA256(), 32, _HKDF_SALT, bytes(sender) + bytes(receiver)).derive(shared)
            return ChaCha20Poly1305(key)

        pair = (derive(self._own, peer), derive(peer, self._own))
        self._keys[peer] = pair
        if len(self._keys) > MAX_CACHED_KEYS:
            self._keys.popitem(last=False)
        return pair

    def seal(self, peer: EndpointId, msg: Message) -> bytes:
        header = MAGIC + bytes([VERSION]) + bytes(self._own)
        nonce = os.urandom(NONCE_LEN)
        body = encode_body(msg, self._timestamp())
        return header + nonce + self._ciphers(peer)[0].encrypt(nonce, body, header)

    def sender(self, data: bytes) -> EndpointId:
        """Who claims to have sent ``data`` (not yet authenticated)."""
        if len(data) < HEADER_LEN + NONCE_LEN + TAG_LEN + 9 or len(data) > MAX_PACKET:
            raise ControlPacketError(f"control packet of {len(data)} bytes")
        if data[:4] != MAGIC:
            raise ControlPacketError("not a control packet")
        if data[4] != VERSION:
            raise ControlPacketError(f"unknown control packet version {data[4]}")
        return EndpointId.from_bytes(data[5:HEADER_LEN])

    def open(self, data: bytes) -> tuple[EndpointId, Message]:
        """Authenticate, decrypt and replay-check a packet; raises ControlPacketError."""
        try:
            sender = self.sender(data)
        except InvalidKey as exc:
            raise ControlPacketError(f"control packet from an invalid key: {exc}") from None
        if sender == self._own:
            raise ControlPacketError("control packet claims to be from ourselves")
        nonce = data[HEADER_LEN : HEADER_LEN + NONCE_LEN]
        try:
            body = self._ciphers(sender)[1].decrypt(nonce, data[HEADER_LEN + NONCE_LEN :], data[:HEADER_LEN])
        except InvalidTag:
            raise ControlPacketError("control packet failed authentication") from None
        msg, ts = decode_body(body)
        self.replay.check(sender, ts, time.time_ns() // 1000)
        return sender, msg


def new_tx_id() -> bytes:
    return os.urandom(TX_ID_LEN)
