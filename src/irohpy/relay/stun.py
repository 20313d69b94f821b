"""STUN binding (RFC 8489, the part NAT traversal needs; sans-IO).

Our relay answers binding requests on UDP so that an endpoint learns its
reflexive address, the NAT mapping peers will see, from its main socket.
STUN's first byte has the QUIC fixed bit clear, so requests and responses
share the endpoint's sockets with QUIC.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from typing import Final

from irohpy.errors import StunError

MAGIC_COOKIE: Final = 0x2112A442
HEADER_LEN: Final = 20
BINDING_REQUEST: Final = 0x0001
BINDING_SUCCESS: Final = 0x0101
ATTR_MAPPED_ADDRESS: Final = 0x0001
ATTR_XOR_MAPPED_ADDRESS: Final = 0x0020
ATTR_SOFTWARE: Final = 0x8022
MAX_MESSAGE: Final = 548
# The relay's /ping response names its STUN port in this header.
STUN_PORT_HEADER: Final = "Irohpy-Stun-Port"

SockAddr = tuple[str, int]


def is_stun(data: bytes) -> bool:
    return len(data) >= HEADER_LEN and data[0] < 2 and data[4:8] == MAGIC_COOKIE.to_bytes(4, "big")


@dataclass(frozen=True)
class StunMessage:
    kind: int
    tx_id: bytes
    mapped: SockAddr | None = None


def binding_request(tx_id: bytes | None = None) -> tuple[bytes, bytes]:
    """A binding request and its transaction id."""
    tx = tx_id if tx_id is not None else os.urandom(12)
    return struct.pack(">HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + tx, tx


def _xor_addr(addr: SockAddr, tx_id: bytes) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    port = addr[1] ^ (MAGIC_COOKIE >> 16)
    mask = MAGIC_COOKIE.to_bytes(4, "big") + (tx_id if ip.version == 6 else b"")
    raw = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=True))
    return struct.pack(">BBH", 0, 1 if ip.version == 4 else 2, port) + raw


def binding_response(tx_id: bytes, observed: SockAddr) -> bytes:
    value = _xor_addr(observed, tx_id)
    attrs = struct.pack(">HH", ATTR_XOR_MAPPED_ADDRESS, len(value)) + value
    return struct.pack(">HHI", BINDING_SUCCESS, len(attrs), MAGIC_COOKIE) + tx_id + attrs


def _parse_addr(value: bytes, tx_id: bytes, xor: bool) -> SockAddr:
    if len(value) < 4:
        raise StunError("address attribute too short")
    family, port = value[1], struct.unpack(">H", value[2:4])[0]
    size = {1: 4, 2: 16}.get(family)
    if size is None or len(value) != 4 + size:
        raise StunError(f"address attribute with family {family} and {len(value)} bytes")
    raw = value[4:]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = MAGIC_COOKIE.to_bytes(4, "big") + (tx_id if size == 16 else b"")
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    host = str(ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw))
    return host, port


def parse(data: bytes) -> StunMessage:
    """Parse a binding request or success response; anything else is a StunError."""
    if len(data) < HEADER_LEN or len(data) > MAX_MESSAGE:
        raise StunError(f"STUN message of {len(data)} bytes")
    kind, length, cookie = struct.unpack(">HHI", data[:8])
    if cookie != MAGIC_COOKIE:
        raise StunError("STUN message without the magic cookie")
    if kind not in (BINDING_REQUEST, BINDING_SUCCESS):
        raise StunError(f"unsupported STUN message type {kind:#06x}")
    if length % 4 or HEADER_LEN + length != len(data):
        raise StunError("STUN length field does not match the message")
    tx_id = data[8:20]
    mapped: SockAddr | None = None
    xor_mapped: SockAddr | None = None
    at = HEADER_LEN
    while at < len(data):
        if at + 4 > len(data):
            raise StunError("truncated STUN attribute header")
        attr, size = struct.unpack(">HH", data[at : at + 4])
        end = at + 4 + size
        if end > len(data):
            raise StunError("truncated STUN attribute")
        value = data[at + 4 : end]
        if attr == ATTR_XOR_MAPPED_ADDRESS:
            xor_mapped = _parse_addr(value, tx_id, xor=True)
        elif attr == ATTR_MAPPED_ADDRESS:
            mapped = _parse_addr(value, tx_id, xor=False)
        at = end + (-size % 4)
    if at != len(data):
        raise StunError("STUN attribute padding runs past the message")
    if kind == BINDING_SUCCESS and xor_mapped is None and mapped is None:
        raise StunError("binding response without a mapped address")
    return StunMessage(kind, tx_id, xor_mapped or mapped)
