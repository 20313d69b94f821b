"""iroh's TLS: TLS 1.3 with RFC 7250 raw Ed25519 public keys and mutual auth.

Two implementations live here. :mod:`irohpy.tls.handshake` is irohpy's own sans-IO TLS 1.3,
which the QUIC engine (:mod:`irohpy.quic`) and so every ``Endpoint`` uses. The names below are
an aioquic-based one, kept as a test peer (aioquic comes with the ``test`` extra): build a
configuration with :func:`quic_configuration` and drive an :class:`IrohQuicConnection`; after
the handshake its ``peer_id`` is the remote EndpointId. They are imported on first use, so the
engine never loads aioquic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irohpy.tls.config import quic_configuration
    from irohpy.tls.connection import IrohQuicConnection
    from irohpy.tls.name import peer_id_from_server_name, server_name
    from irohpy.tls.spki import encode_spki, parse_spki
    from irohpy.tls.ticket import IrohSessionTicket

_WHERE = {
    "IrohQuicConnection": "irohpy.tls.connection",
    "IrohSessionTicket": "irohpy.tls.ticket",
    "encode_spki": "irohpy.tls.spki",
    "parse_spki": "irohpy.tls.spki",
    "peer_id_from_server_name": "irohpy.tls.name",
    "quic_configuration": "irohpy.tls.config",
    "server_name": "irohpy.tls.name",
}

__all__ = [
    "IrohQuicConnection",
    "IrohSessionTicket",
    "encode_spki",
    "parse_spki",
    "peer_id_from_server_name",
    "quic_configuration",
    "server_name",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'irohpy.tls' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
