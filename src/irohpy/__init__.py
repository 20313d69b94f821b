"""irohpy: iroh in pure Python.

Dial an endpoint by its public key and get an end-to-end encrypted QUIC
connection, wire-compatible with Rust iroh 1.x.

The names below are imported on first use, so ``import irohpy`` (and every
``irohpy`` command) starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from irohpy import _build

_build.install()

if TYPE_CHECKING:
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

_WHERE = {
    "Endpoint": "irohpy.endpoint",
    "EndpointAddr": "irohpy.base",
    "EndpointId": "irohpy.base",
    "EndpointTicket": "irohpy.base",
    "PublicKey": "irohpy.base",
    "RelayMap": "irohpy.relay.map",
    "RelayMode": "irohpy.relay.map",
    "RelayUrl": "irohpy.base",
    "Router": "irohpy.protocols.router",
    "SecretKey": "irohpy.base",
    "Signature": "irohpy.base",
    "Ticket": "irohpy.base",
    "TransportAddr": "irohpy.base",
    "presets": "irohpy.endpoint",
}

__all__ = [*_WHERE, "__version__"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'irohpy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
