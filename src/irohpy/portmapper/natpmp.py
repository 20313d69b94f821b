"""NAT-PMP (RFC 6886), sans-IO: request builders and strict answer parsers.

A client sends to UDP 5351 on its default gateway. Version 0 only; a PCP server
answering a NAT-PMP request also speaks version 0 (with result code 1), which the
parsers turn into :class:`~irohpy.errors.PortMapRefused` like any other refusal.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from irohpy.errors import PortMapError, PortMapRefused

SERVER_PORT = 5351
VERSION = 0
OP_EXTERNAL_ADDRESS = 0
OP_MAP_UDP = 1
RESPONSE = 128
LIFETIME = 2 * 60 * 60
"""Seconds we ask for: RFC 6886 §3.3 recommends two hours."""

_HEADER = struct.Struct("!BBHI")
_MAP = struct.Struct("!BBHHHI")
_MAP_ANSWER = struct.Struct("!BBHIHHI")


@dataclass(frozen=True)
class ExternalAddress:
    epoch: int
    ip: str


@dataclass(frozen=True)
class MapAnswer:
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


def external_address_request() -> bytes:
    """§3.2: version 0, opcode 0."""
    return bytes([VERSION, OP_EXTERNAL_ADDRESS])


def map_request(internal_port: int, external_port: int = 0, lifetime: int = LIFETIME) -> bytes:
    """§3.3: map UDP ``internal_port``; ``lifetime`` 0 with ``external_port`` 0 deletes the mapping."""
    return _MAP.pack(VERSION, OP_MAP_UDP, 0, internal_port, external_port, lifetime)


def _header(data: bytes, opcode: int, size: int) -> tuple[int, int]:
    if len(data) < 8:
        raise PortMapError(f"NAT-PMP answer of {len(data)} bytes")
    version, op, result, epoch = _HEADER.unpack_from(data)
    if version != VERSION or op != RESPONSE + opcode:
        raise PortMapError(f"not a NAT-PMP answer to opcode {opcode} (version {version}, opcode {op})")
    if result != 0:
        raise PortMapRefused(f"NAT-PMP result code {result}", code=result)
    if len(data) != size:
        raise PortMapError(f"NAT-PMP answer of {len(data)} bytes, expected {size}")
    return result, epoch


def parse_external_address(data: bytes) -> ExternalAddress:
    """The answer to :func:`external_address_request`."""
    _, epoch = _header(data, OP_EXTERNAL_ADDRESS, 12)
    ip = ipaddress.IPv4Address(data[8:12])
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise PortMapError(f"NAT-PMP external address {ip} is not usable")
    return ExternalAddress(epoch, str(ip))


def parse_map(data: bytes) -> MapAnswer:
    """The answer to :func:`map_request` (UDP)."""
    _header(data, OP_MAP_UDP, _MAP_ANSWER.size)
    _, _, _, epoch, internal, external, lifetime = _MAP_ANSWER.unpack(data)
    return MapAnswer(epoch, internal, external, lifetime)
