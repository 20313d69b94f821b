"""irohpy: iroh in pure Python.

Dial an endpoint by its public key and get an end-to-end encrypted QUIC
connection, wire-compatible with Rust iroh 1.x.
"""

from __future__ import annotations

from irohpy.base import (
    EndpointAddr,
    EndpointId,
    EndpointTicket,
    PublicKey,
    RelayUrl,
    SecretKey,
    Signature,
    Ticket,
    TransportAddr,
)
from irohpy.endpoint import Endpoint, presets
from irohpy.protocols.router import Router
from irohpy.relay.map import RelayMap, RelayMode

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "EndpointAddr",
    "EndpointId",
    "EndpointTicket",
    "PublicKey",
    "RelayMap",
    "RelayMode",
    "RelayUrl",
    "Router",
    "SecretKey",
    "Signature",
    "Ticket",
    "TransportAddr",
    "__version__",
    "presets",
]
