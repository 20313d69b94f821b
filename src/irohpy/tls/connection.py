"""aioquic's QuicConnection with iroh's TLS: raw public keys, mutual auth, a pinned peer.

The only change to QUIC itself is which TLS context it drives: aioquic creates its context in
``_initialize`` (client: on ``connect``, again after Retry or Version Negotiation; server: on
the first Initial), and this class converts each one to :class:`IrohTlsContext`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irohpy.errors import TlsError
from irohpy.tls.context import IrohTlsContext
from irohpy.tls.keys import KEY_LENGTH
from irohpy.tls.ticket import ticket_peer


class IrohQuicConnection(QuicConnection):
    """A QUIC connection whose TLS authenticates both ends by EndpointId.

    A client must pass ``expected_peer`` (the EndpointId it dials); the handshake fails with
    bad_certificate (QUIC error 0x12a) if another key answers. A server may pass it to accept
    only that client. A client's ``configuration.session_ticket`` is used only if it was issued
    by this module for the same ``expected_peer``; otherwise the handshake starts afresh.
    """

    def __init__(
        self, *, configuration: QuicConfiguration, expected_peer: bytes | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(configuration.private_key, Ed25519PrivateKey):
            raise TlsError("iroh's TLS needs an Ed25519 private key in the configuration")
        if expected_peer is not None:
            if len(expected_peer) != KEY_LENGTH:
                raise TlsError(f"expected_peer must be a {KEY_LENGTH}-byte EndpointId")
            expected_peer = bytes(expected_peer)
        if configuration.is_client:
            if expected_peer is None:
                raise TlsError("a client must know the EndpointId it dials (expected_peer)")
            if not configuration.alpn_protocols:
                raise TlsError("iroh requires an ALPN to connect")
            ticket = configuration.session_ticket
            if ticket is not None and ticket_peer(ticket) != expected_peer:
                configuration = dataclasses.replace(configuration, session_ticket=None)
        elif configuration.alpn_protocols is None:
            raise TlsError("a server needs its list of accepted ALPNs (an empty list refuses all)")
        self._expected_peer = expected_peer
        super().__init__(configuration=configuration, **kwargs)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        IrohTlsContext.adopt(self.tls, self._expected_peer)

    @property
    def peer_id(self) -> bytes | None:
        """The remote's 32-byte Ed25519 key, once the handshake has authenticated it."""
        if not self._handshake_complete:
            return None
        return cast(IrohTlsContext, self.tls).peer_id
