"""iroh's TLS 1.3 handshake rules, grafted onto aioquic's ``tls.Context``.

aioquic speaks X.509 only and has no hook for RFC 7250, but every rule iroh adds sits at a
message boundary that aioquic handles in its own method. :class:`IrohTlsContext` overrides
those methods and always defers to aioquic for the message itself:

- certificate types (extensions 19/20): a client offers ``[2]`` for both and requires the server
  to select 2 for both; a server refuses a ClientHello that does not offer 2 in both and selects 2;
- mutual authentication: the server always requests a client certificate and refuses an empty one;
- certificates are one Ed25519 SPKI each; only the ed25519 signature scheme is offered or accepted;
- the client pins the key it dials; either side learns the peer's EndpointId;
- resumption: tickets carry the peer's EndpointId, and aioquic's server state after a resumed
  handshake with client authentication on is repaired.

aioquic builds the context itself, so :meth:`IrohTlsContext.adopt` changes the class of that
instance instead of constructing one.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import cast

from aioquic import tls
from aioquic.buffer import Buffer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irohpy.errors import TlsError
from irohpy.tls.keys import public_key_bytes
from irohpy.tls.spki import PeerCertificate, SpkiCertificate
from irohpy.tls.ticket import ticket_peer, with_peer

CLIENT_CERTIFICATE_TYPE = 19
SERVER_CERTIFICATE_TYPE = 20
CERTIFICATE_TYPE_EXTENSIONS = (CLIENT_CERTIFICATE_TYPE, SERVER_CERTIFICATE_TYPE)
RAW_PUBLIC_KEY = 2
# ClientHello carries a list of acceptable types; EncryptedExtensions the single chosen one.
OFFERED_RAW_PUBLIC_KEY = bytes([1, RAW_PUBLIC_KEY])
SELECTED_RAW_PUBLIC_KEY = bytes([RAW_PUBLIC_KEY])

SIGNATURE_ALGORITHMS: list[int] = [tls.SignatureAlgorithm.ED25519]
# iroh's groups (rustls with ring). aioquic cannot answer HelloRetryRequest, so a client sends a
# key share for each; X25519 first because aioquic servers take the client's first usable share.
GROUPS: list[tls.Group] = [tls.Group.X25519, tls.Group.SECP256R1, tls.Group.SECP384R1]


class AlertCertificateRequired(tls.Alert):
    """RFC 8446's alert for a client that sends no certificate when one is mandatory."""

    description = tls.AlertDescription.certificate_required


def _offers_raw_public_key(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == len(data) - 1 and RAW_PUBLIC_KEY in data[1:]


def _values(extensions: list[tls.Extension] | None, extension_type: int) -> list[bytes]:
    return [data for kind, data in extensions or () if kind == extension_type]


class IrohTlsContext(tls.Context):
    """A ``tls.Context`` that authenticates both sides by raw Ed25519 public key, as iroh does.

    ``peer_id`` is the key the peer presented (or, after resumption, the one its ticket records).
    It is only authenticated once the handshake completes; callers read it through
    ``IrohQuicConnection.peer_id``, which waits for that.
    """

    peer_id: bytes | None
    _expected_peer: bytes | None
    _resumption_ticket: tls.SessionTicket | None

    @classmethod
    def adopt(cls, context: tls.Context, expected_peer: bytes | None) -> IrohTlsContext:
        """Turn the context aioquic just built (certificate key already set) into an iroh one."""
        context.__class__ = cls
        iroh_context = cast(IrohTlsContext, context)
        iroh_context._setup(expected_peer)
        return iroh_context

    def _setup(self, expected_peer: bytes | None) -> None:
        key = self.certificate_private_key
        if not isinstance(key, Ed25519PrivateKey):
            raise TlsError("iroh's TLS needs an Ed25519 private key")
        self.certificate = SpkiCertificate(public_key_bytes(key))  # type: ignore[assignment]
        self.certificate_chain = []
        # Pinning in _set_peer_certificate replaces X.509 path validation, which cannot read an SPKI.
        self._verify_mode = ssl.CERT_NONE
        self._signature_algorithms = list(SIGNATURE_ALGORITHMS)
        self._supported_groups = list(GROUPS)
        self.peer_id = None
        self._expected_peer = expected_peer
        self._resumption_ticket = None
        if self._is_client:
            self.handshake_extensions.extend(
                (kind, OFFERED_RAW_PUBLIC_KEY) for kind in CERTIFICATE_TYPE_EXTENSIONS
            )
        else:
            self._request_client_certificate = True

    # -- client ----------------------------------------------------------------

    def _client_handle_hello(self, input_buf: Buffer, output_buf: Buffer) -> None:
        super()._client_handle_hello(input_buf, output_buf)
        if self._session_resumed:
            # IrohQuicConnection only hands over tickets recorded for the id it dials.
            self.peer_id = ticket_peer(self.session_ticket)

    def _client_handle_encrypted_extensions(self, input_buf: Buffer) -> None:
        super()._client_handle_encrypted_extensions(input_buf)
        if self._session_resumed:
            return  # no certificates follow, so no certificate type is in play
        for kind in CERTIFICATE_TYPE_EXTENSIONS:
            if _values(self.received_extensions, kind) != [SELECTED_RAW_PUBLIC_KEY]:
                raise tls.AlertHandshakeFailure("server did not select raw public keys")

    # -- server ----------------------------------------------------------------

    def _server_handle_hello(self, input_buf: Buffer, initial_buf: Buffer, handshake_buf: Buffer) -> None:
        app_alpn_cb = self.alpn_cb
        app_fetch = self.get_session_ticket_cb

        def on_alpn(protocol: str) -> None:
            # aioquic calls this once the ClientHello's extensions are stored and just before it
            # writes EncryptedExtensions; the QUIC callback may rebuild handshake_extensions
            # (compatible version negotiation), so ours are appended after it.
            self._require_client_offers_raw_public_keys()
            if app_alpn_cb is not None:
                app_alpn_cb(protocol)
            self.handshake_extensions.extend(
                (kind, SELECTED_RAW_PUBLIC_KEY) for kind in CERTIFICATE_TYPE_EXTENSIONS
            )

        self.alpn_cb = on_alpn
        if app_fetch is not None:
            self.get_session_ticket_cb = self._ticket_fetcher(app_fetch)
        try:
            super()._server_handle_hello(input_buf, initial_buf, handshake_buf)
        finally:
            self.alpn_cb = app_alpn_cb
            self.get_session_ticket_cb = app_fetch
        if self._session_resumed:
            self.peer_id = ticket_peer(self._resumption_ticket)
            # aioquic skips CertificateRequest on resumption but still waits for a certificate.
            if self.state is tls.State.SERVER_EXPECT_CERTIFICATE:
                self._server_expect_finished()

    def _ticket_fetcher(
        self, app_fetch: Callable[[bytes], tls.SessionTicket | None]
    ) -> Callable[[bytes], tls.SessionTicket | None]:
        def fetch(label: bytes) -> tls.SessionTicket | None:
            ticket = app_fetch(label)
            peer = ticket_peer(ticket)
            if peer is None or (self._expected_peer is not None and peer != self._expected_peer):
                return None  # resuming it would leave the peer unidentified or unexpected
            self._resumption_ticket = ticket
            return ticket

        return fetch

    def _require_client_offers_raw_public_keys(self) -> None:
        for kind in CERTIFICATE_TYPE_EXTENSIONS:
            offered = _values(self.received_extensions, kind)
            if len(offered) != 1 or not _offers_raw_public_key(offered[0]):
                raise tls.AlertHandshakeFailure("peer does not offer raw public keys")

    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate(input_buf)
        # aioquic accepts an empty client Certificate (RFC 8446 allows it); iroh does not.
        if self._peer_certificate is None:
            raise AlertCertificateRequired("client certificate required")

    # -- both ------------------------------------------------------------------

    def _set_peer_certificate(self, certificate: tls.Certificate) -> None:
        if len(certificate.certificates) != 1:
            raise tls.AlertBadCertificate("expected exactly one raw public key certificate")
        try:
            peer = PeerCertificate(certificate.certificates[0][0])
        except TlsError as exc:
            raise tls.AlertBadCertificate(str(exc)) from exc
        if self._expected_peer is not None and peer.peer_id != self._expected_peer:
            raise tls.AlertBadCertificate("peer key does not match expected id")
        self._peer_certificate = peer  # type: ignore[assignment]
        self._peer_certificate_chain = []
        self.peer_id = peer.peer_id

    def _build_session_ticket(
        self, new_session_ticket: tls.NewSessionTicket, other_extensions: list[tls.Extension]
    ) -> tls.SessionTicket:
        ticket = super()._build_session_ticket(new_session_ticket, other_extensions)
        return with_peer(ticket, self.peer_id)
