"""iroh's TLS on aioquic: TLS 1.3 with RFC 7250 raw Ed25519 public keys and mutual auth.

Build a configuration with :func:`quic_configuration` and drive an :class:`IrohQuicConnection`;
after the handshake its ``peer_id`` is the remote EndpointId. aioquic is subclassed, not
patched, which is why it is pinned to one version.
"""

from __future__ import annotations

from irohpy.tls.config import quic_configuration
from irohpy.tls.connection import IrohQuicConnection
from irohpy.tls.name import peer_id_from_server_name, server_name
from irohpy.tls.spki import encode_spki, parse_spki
from irohpy.tls.ticket import IrohSessionTicket

__all__ = [
    "IrohQuicConnection",
    "IrohSessionTicket",
    "encode_spki",
    "parse_spki",
    "peer_id_from_server_name",
    "quic_configuration",
    "server_name",
]
