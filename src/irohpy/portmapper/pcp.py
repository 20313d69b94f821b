"""PCP (RFC 6887), sans-IO: ANNOUNCE and MAP requests, strict answer parsers.

Only what a client mapping one UDP port needs: the 24-byte common header, the MAP
opcode's 36 bytes, and the option list walked for well-formedness (options are
ignored). Addresses travel as 16 bytes, IPv4 as IPv4-mapped IPv6 (§5).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from irohpy.errors import PortMapError, PortMapRefused

SERVER_PORT = 5351
VERSION = 2
OP_ANNOUNCE = 0
OP_MAP = 1
RESPONSE_BIT = 0x80
UDP = 17
MAX_MESSAGE = 1100
NONCE_SIZE = 12
LIFETIME = 60 * 60
"""Seconds we ask for (iroh asks one hour)."""

_REQUEST = struct.Struct("!BBHI16s")
_RESPONSE = struct.Struct("!BBBBII12x")
_MAP = struct.Struct("!12sB3xHH16s")
_OPTION = struct.Struct("!BBH")


@dataclass(frozen=True)
class Answer:
    opcode: int
    lifetime: int
    epoch: int


@dataclass(frozen=True)
class MapAnswer(Answer):
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: str


def _v6(ip: str) -> bytes:
    addr = ipaddress.ip_address(ip)
    return (ipaddress.IPv6Address(f"::ffff:{addr}") if addr.version == 4 else addr).packed


def _ip(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def announce_request(client_ip: str) -> bytes:
    """§14.1: an ANNOUNCE request; a PCP server answers it, so it is our probe."""
    return _REQUEST.pack(VERSION, OP_ANNOUNCE, 0, 0, _v6(client_ip))


def map_request(nonce: bytes, client_ip: str, internal_port: int, lifetime: int = LIFETIME,
                external_port: int = 0, external_ip: str = "0.0.0.0") -> bytes:
    """§11.1: map UDP ``internal_port``; ``lifetime`` 0 deletes the mapping with this nonce."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError("a PCP nonce is 12 bytes")
    return (_REQUEST.pack(VERSION, OP_MAP, 0, lifetime, _v6(client_ip))
            + _MAP.pack(nonce, UDP, internal_port, external_port, _v6(external_ip)))


def _walk_options(data: bytes, offset: int) -> None:
    while offset < len(data):
        if len(data) - offset < _OPTION.size:
            raise PortMapError("truncated PCP option header")
        _, _, length = _OPTION.unpack_from(data, offset)
        offset += _OPTION.size + length + (-length % 4)
        if offset > len(data):
            raise PortMapError("PCP option runs past the end")


def parse(data: bytes) -> Answer:
    """A PCP response: :class:`MapAnswer` for MAP, :class:`Answer` for ANNOUNCE.

    A non-zero result raises :class:`PortMapRefused` (code 1 also comes from
    NAT-PMP-only gateways, which answer in version 0).
    """
    if len(data) < 8 or len(data) > MAX_MESSAGE or len(data) % 4:
        raise PortMapError(f"PCP answer of {len(data)} bytes")
    version, op = data[0], data[1]
    if version == 0 and op >= 128 and len(data) >= 4:
        result = int.from_bytes(data[2:4], "big")
        raise PortMapRefused(f"NAT-PMP gateway answered PCP with result code {result}", code=result)
    if version != VERSION or not op & RESPONSE_BIT or len(data) < _RESPONSE.size:
        raise PortMapError(f"not a PCP response (version {version}, opcode {op:#x}, {len(data)} bytes)")
    _, _, _, result, lifetime, epoch = _RESPONSE.unpack_from(data)
    opcode = op & ~RESPONSE_BIT
    if result != 0:
        raise PortMapRefused(f"PCP result code {result}", code=result)
    if opcode == OP_ANNOUNCE:
        _walk_options(data, _RESPONSE.size)
        return Answer(opcode, lifetime, epoch)
    if opcode != OP_MAP:
        raise PortMapError(f"unexpected PCP opcode {opcode}")
    if len(data) < _RESPONSE.size + _MAP.size:
        raise PortMapError(f"PCP MAP answer of {len(data)} bytes")
    nonce, protocol, internal, external, ext_ip = _MAP.unpack_from(data, _RESPONSE.size)
    _walk_options(data, _RESPONSE.size + _MAP.size)
    return MapAnswer(opcode, lifetime, epoch, nonce, protocol, internal, external, _ip(ext_ip))
