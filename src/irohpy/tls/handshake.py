"""irohpy's own sans-IO TLS 1.3 handshake for QUIC: iroh's subset, on ``cryptography``.

RFC 8446 with RFC 9001 §4: no record layer; handshake messages travel in CRYPTO frames of an
epoch (0 Initial, 1 0-RTT, 2 Handshake, 3 1-RTT) and every new secret goes to QUIC, which
makes its packet keys. The subset is what iroh speaks (``../shared/spec/iroh-wire.md`` §2):
X25519, the three TLS 1.3 AEAD suites, RFC 7250 raw Ed25519 public keys for both sides (certificate
types 19/20 = 2, only the ed25519 signature scheme), mandatory client authentication, ALPN,
QUIC transport parameters (extension 0x39), session tickets with PSK-DHE resumption and 0-RTT.

Driving it: a client calls :meth:`ClientHandshake.start`; both sides then feed CRYPTO bytes to
``receive`` and collect ``take_output`` (CRYPTO data per epoch), ``take_keys`` (new secrets)
and, on a client, ``take_tickets``. A failure raises :class:`~irohpy.errors.QuicError` with
``error_code`` 0x100 + the TLS alert, which QUIC sends in CONNECTION_CLOSE.
"""

from __future__ import annotations

import hmac
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from irohpy.errors import QuicError, TlsDecodeError, TlsError
from irohpy.quic.crypto import AES_128_GCM_SHA256, AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256
from irohpy.tls import messages as m
from irohpy.tls.key_schedule import (
    CLIENT_SIGNATURE_CONTEXT,
    SERVER_SIGNATURE_CONTEXT,
    KeySchedule,
    Transcript,
    suite_hash,
)
from irohpy.tls.keys import KEY_LENGTH, private_key, public_key_bytes
from irohpy.tls.resumption import (
    MAX_EARLY_DATA,
    TICKET_LIFETIME,
    ResumptionTicket,
    ServerSession,
    TicketStore,
)
from irohpy.tls.spki import encode_spki, parse_spki

INITIAL: Final = 0
ZERO_RTT: Final = 1
HANDSHAKE: Final = 2
ONE_RTT: Final = 3

CIPHER_SUITES: Final = (AES_128_GCM_SHA256, AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256)
"""Our preference: AES-128-GCM is the cheapest with AES-NI and what Initial packets use anyway."""

# TLS alerts (RFC 8446 §6.2) this handshake sends.
UNEXPECTED_MESSAGE: Final = 10
HANDSHAKE_FAILURE: Final = 40
BAD_CERTIFICATE: Final = 42
ILLEGAL_PARAMETER: Final = 47
DECRYPT_ERROR: Final = 51
PROTOCOL_VERSION: Final = 70
INTERNAL_ERROR: Final = 80
MISSING_EXTENSION: Final = 109
UNSUPPORTED_EXTENSION: Final = 110
CERTIFICATE_REQUIRED: Final = 116
NO_APPLICATION_PROTOCOL: Final = 120

Key = tuple[int, bool, int, bytes]
"""(epoch, is_send, cipher_suite, secret)."""


def alert(description: int, message: str) -> QuicError:
    return QuicError(message, error_code=QuicError.CRYPTO_ERROR + description)


def _check_alpns(alpns: Sequence[bytes]) -> list[bytes]:
    if isinstance(alpns, bytes | bytearray | str):
        raise TlsError("alpns is a list of ALPNs, not a single one")
    out = [bytes(a) for a in alpns]
    if any(not 1 <= len(a) <= 255 for a in out):
        raise TlsError("an ALPN has 1 to 255 bytes")
    return out


def _peer_key(context: bytes, certificates: list[bytes], expected: bytes | None) -> bytes:
    """The peer's EndpointId from its Certificate message (exactly one Ed25519 SPKI)."""
    if context:
        raise alert(ILLEGAL_PARAMETER, "certificate_request_context must be empty in the handshake")
    if len(certificates) != 1:
        raise alert(BAD_CERTIFICATE, "expected exactly one raw public key certificate")
    try:
        peer = parse_spki(certificates[0])
    except TlsError as exc:
        raise alert(BAD_CERTIFICATE, str(exc)) from None
    if expected is not None and peer != expected:
        raise alert(BAD_CERTIFICATE, "peer key does not match expected id")
    return peer


def _verify(peer: bytes, scheme: int, signature: bytes, context: bytes, transcript_hash: bytes) -> None:
    if scheme != m.ED25519:
        raise alert(ILLEGAL_PARAMETER, f"CertificateVerify uses scheme 0x{scheme:04x}, not ed25519")
    try:
        Ed25519PublicKey.from_public_bytes(peer).verify(signature, context + transcript_hash)
    except InvalidSignature:
        raise alert(DECRYPT_ERROR, "CertificateVerify signature does not verify") from None


def _x25519(private: X25519PrivateKey, share: bytes) -> bytes:
    if len(share) != 32:
        raise alert(ILLEGAL_PARAMETER, "X25519 key share is not 32 bytes")
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:
        raise alert(ILLEGAL_PARAMETER, "X25519 key share is a low-order point") from None


def _x25519_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class _Handshake(ABC):
    """What client and server share: per-epoch reassembly, outputs, key installs, identity.

    ``secret_key`` None: the side authenticates otherwise (an X.509 server, a WebPKI client)."""

    def __init__(
        self,
        secret_key: bytes | Ed25519PrivateKey | None,
        alpns: Sequence[bytes],
        transport_parameters: bytes,
        expected_peer: bytes | None,
        cipher_suites: Sequence[int],
        clock: Callable[[], float],
    ) -> None:
        self._key = private_key(secret_key) if secret_key is not None else None
        self._spki = encode_spki(public_key_bytes(self._key)) if self._key is not None else b""
        self._alpns = _check_alpns(alpns)
        self._transport_parameters = bytes(transport_parameters)
        if expected_peer is not None and len(expected_peer) != KEY_LENGTH:
            raise TlsError(f"expected_peer must be a {KEY_LENGTH}-byte EndpointId")
        self._expected_peer = None if expected_peer is None else bytes(expected_peer)
        self._suites = list(cipher_suites)
        for suite in self._suites:
            suite_hash(suite)
        self._clock = clock
        self.complete = False
        self.alpn: bytes | None = None
        self.peer_transport_parameters: bytes | None = None
        self.early_data_accepted = False
        self.session_resumed = False
        self.cipher_suite: int | None = None
        self._peer_id: bytes | None = None
        self._recv_epoch = INITIAL
        self._buffer = b""
        self._output: list[tuple[int, bytes]] = []
        self._keys: list[Key] = []
        self._transcript: Transcript | None = None
        self._schedule: KeySchedule | None = None
        self._failed: QuicError | None = None

    @property
    def peer_id(self) -> bytes | None:
        """The peer's EndpointId, once the handshake has completed and so authenticated it."""
        return self._peer_id if self.complete else None

    def take_output(self) -> list[tuple[int, bytes]]:
        out, self._output = self._output, []
        return out

    def take_keys(self) -> list[Key]:
        out, self._keys = self._keys, []
        return out

    def receive(self, epoch: int, data: bytes) -> None:
        """CRYPTO bytes of ``epoch``, in order; whole messages are handled as they complete."""
        if self._failed is not None:
            raise self._failed
        try:
            if epoch < self._recv_epoch:
                # Data past the end of an older level's flow (RFC 9001 §4.1.3).
                raise QuicError(
                    f"TLS message at the wrong encryption level: epoch {epoch}, expected {self._recv_epoch}",
                    error_code=QuicError.PROTOCOL_VIOLATION,
                )
            if epoch != self._recv_epoch:
                raise alert(UNEXPECTED_MESSAGE, f"handshake data in epoch {epoch}, expected {self._recv_epoch}")
            buffer = self._buffer + data
            while len(buffer) >= 4:
                length = int.from_bytes(buffer[1:4], "big")
                if length > m.MAX_MESSAGE_SIZE:
                    raise TlsDecodeError(f"handshake message of {length} bytes is too large")
                if len(buffer) < 4 + length:
                    break
                message, buffer = buffer[: 4 + length], buffer[4 + length :]
                self._buffer = buffer
                before = self._recv_epoch
                self._handle(message)
                if self._recv_epoch != before and buffer:
                    raise alert(UNEXPECTED_MESSAGE, "handshake data continues past a key change")
            self._buffer = buffer
        except QuicError as exc:
            self._failed = exc
            raise

    @abstractmethod
    def _handle(self, message: bytes) -> None:
        """One whole handshake message, in order: the client's or the server's state machine."""

    def _send(self, epoch: int, message: bytes) -> None:
        if self._transcript is not None:
            self._transcript.add(message)
        self._output.append((epoch, message))

    def _install(self, epoch: int, is_send: bool, secret: bytes) -> None:
        assert self._schedule is not None
        self._keys.append((epoch, is_send, self._schedule.cipher_suite, secret))

    def _sign(self, context: bytes) -> bytes:
        assert self._transcript is not None and self._key is not None
        return self._key.sign(context + self._transcript.digest())

    def _check_finished(self, message: bytes, secret: bytes, sender: str) -> tuple[KeySchedule, Transcript]:
        """Verify the peer's Finished with its handshake ``secret``, then add it to the transcript."""
        schedule, transcript = self._schedule, self._transcript
        assert schedule is not None and transcript is not None
        verify_data = m.decode_finished(message, schedule.hash_length)
        if not hmac.compare_digest(verify_data, schedule.finished(secret, transcript.digest())):
            raise alert(DECRYPT_ERROR, f"{sender} Finished does not verify")
        transcript.add(message)
        return schedule, transcript


# -- client --------------------------------------------------------------------

_WAIT_SERVER_HELLO: Final = 0
_WAIT_ENCRYPTED_EXTENSIONS: Final = 1
_WAIT_CERTIFICATE_OR_REQUEST: Final = 2
_WAIT_CERTIFICATE: Final = 3
_WAIT_CERTIFICATE_VERIFY: Final = 4
_WAIT_FINISHED: Final = 5
_CONNECTED: Final = 6


class ClientHandshake(_Handshake):
    """The dialing side. It pins ``expected_peer``: any other server key fails with bad_certificate.

    ``ticket`` (from an earlier connection's :meth:`take_tickets`) is offered for resumption
    if it belongs to ``expected_peer``, is still valid and its ALPN is one we offer; with
    ``early_data`` it also offers 0-RTT, and a 0-RTT send key comes out of :meth:`start`.
    ``send_key_share=False`` sends an empty key_share, letting the server pick the group by
    HelloRetryRequest at the cost of a round trip (RFC 8446 §4.2.8).
    """

    def __init__(
        self,
        secret_key: bytes | Ed25519PrivateKey,
        *,
        alpns: Sequence[bytes],
        transport_parameters: bytes,
        expected_peer: bytes,
        ticket: ResumptionTicket | None = None,
        early_data: bool = True,
        cipher_suites: Sequence[int] = CIPHER_SUITES,
        send_key_share: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(secret_key, alpns, transport_parameters, expected_peer, cipher_suites, clock)
        if not self._alpns:
            raise TlsError("iroh requires an ALPN to connect")
        now = clock()
        if ticket is not None and not (
            ticket.peer_id == self._expected_peer
            and ticket.is_valid(now)
            and ticket.cipher_suite in self._suites
            and ticket.alpn in self._alpns
        ):
            ticket = None
        self._ticket = ticket
        self._offer_early_data = early_data and ticket is not None and ticket.max_early_data_size == MAX_EARLY_DATA
        self._send_key_share = send_key_share
        self._x25519 = X25519PrivateKey.generate()
        self._random = os.urandom(32)
        self._state = _WAIT_SERVER_HELLO
        self._retried = False
        self._hello = b""
        self._psk_schedule: KeySchedule | None = None
        self._certificate_requested = False
        self._client_hs = b""
        self._server_hs = b""
        self._resumption_master = b""
        self._tickets: list[ResumptionTicket] = []
        self._started = False

    def start(self) -> None:
        """Queue the ClientHello (and, resuming with 0-RTT, install the early-data send key)."""
        if self._started:
            raise TlsError("the handshake has already started")
        self._started = True
        self._hello = self._client_hello(self._send_key_share, self._offer_early_data)
        self._output.append((INITIAL, self._hello))
        if self._offer_early_data:
            assert self._psk_schedule is not None
            transcript = Transcript(self._psk_schedule.hash_name)
            transcript.add(self._hello)
            secret = self._psk_schedule.derive(b"c e traffic", transcript.digest())
            self._keys.append((ZERO_RTT, True, self._psk_schedule.cipher_suite, secret))

    @property
    def offers_early_data(self) -> bool:
        """The ClientHello offers 0-RTT (a HelloRetryRequest withdraws the offer)."""
        return self._offer_early_data

    def take_tickets(self) -> list[ResumptionTicket]:
        """Tickets the server has sent since the last call, for a later connection to it."""
        out, self._tickets = self._tickets, []
        return out

    def _client_hello(self, key_share: bool, early_data: bool) -> bytes:
        shares = [(m.X25519, _x25519_public(self._x25519))] if key_share else []
        ticket = self._ticket
        if ticket is None:
            return m.encode_client_hello(
                random=self._random,
                cipher_suites=self._suites,
                key_shares=shares,
                alpns=self._alpns,
                transport_parameters=self._transport_parameters,
            )
        schedule = KeySchedule(ticket.cipher_suite, ticket.resumption_secret)
        hello = m.encode_client_hello(
            random=self._random,
            cipher_suites=self._suites,
            key_shares=shares,
            alpns=self._alpns,
            transport_parameters=self._transport_parameters,
            psk_identity=(ticket.ticket, ticket.obfuscated_age(self._clock())),
            binder_length=schedule.hash_length,
            early_data=early_data,
        )
        # The binder covers the transcript so far (after HelloRetryRequest: ClientHello1's
        # hash and the HRR) plus this hello up to its binders list.
        prefix = Transcript(schedule.hash_name)
        if self._retried:
            assert self._transcript is not None
            prefix = self._transcript.fork()
        prefix.add(hello[: m.binders_offset(hello, schedule.hash_length)])
        binder_key = schedule.derive(b"res binder", schedule.empty_hash())
        self._psk_schedule = schedule
        return m.patch_binder(hello, schedule.finished(binder_key, prefix.digest()))

    def _handle(self, message: bytes) -> None:
        kind = message[0]
        state = self._state
        if state == _WAIT_SERVER_HELLO and kind == m.SERVER_HELLO:
            self._on_server_hello(message)
        elif state == _WAIT_ENCRYPTED_EXTENSIONS and kind == m.ENCRYPTED_EXTENSIONS:
            self._on_encrypted_extensions(message)
        elif state == _WAIT_CERTIFICATE_OR_REQUEST and kind == m.CERTIFICATE_REQUEST:
            self._on_certificate_request(message)
        elif state in (_WAIT_CERTIFICATE_OR_REQUEST, _WAIT_CERTIFICATE) and kind == m.CERTIFICATE:
            self._on_certificate(message)
        elif state == _WAIT_CERTIFICATE_VERIFY and kind == m.CERTIFICATE_VERIFY:
            self._on_certificate_verify(message)
        elif state == _WAIT_FINISHED and kind == m.FINISHED:
            self._on_finished(message)
        elif state == _CONNECTED and kind == m.NEW_SESSION_TICKET:
            self._on_new_session_ticket(message)
        else:
            raise alert(UNEXPECTED_MESSAGE, f"unexpected handshake message type {kind}")

    def _check_hello(self, hello: m.ServerHello) -> None:
        if hello.version != m.TLS13:
            raise alert(PROTOCOL_VERSION, "server did not select TLS 1.3")
        if hello.session_id:
            raise alert(ILLEGAL_PARAMETER, "server echoed a session id we did not send")
        if hello.cipher_suite not in self._suites:
            raise alert(ILLEGAL_PARAMETER, "server selected a cipher suite we did not offer")
        if hello.other_extensions:
            raise alert(UNSUPPORTED_EXTENSION, f"server sent extensions we did not offer: {hello.other_extensions}")
        if hello.group != m.X25519:
            raise alert(ILLEGAL_PARAMETER, "server selected a group we did not offer")

    def _on_server_hello(self, message: bytes) -> None:
        hello = m.decode_server_hello(message)
        if not self._started:
            raise alert(UNEXPECTED_MESSAGE, "ServerHello before ClientHello")
        if hello.is_retry:
            self._on_retry(hello, message)
            return
        self._check_hello(hello)
        if not self._send_key_share and not self._retried:
            raise alert(ILLEGAL_PARAMETER, "ServerHello for an empty key_share")
        if self._retried and self.cipher_suite != hello.cipher_suite:
            raise alert(ILLEGAL_PARAMETER, "cipher suite changed after HelloRetryRequest")
        if hello.psk_identity is not None:
            if self._psk_schedule is None or hello.psk_identity != 0 or self._psk_schedule.cipher_suite != hello.cipher_suite:
                raise alert(ILLEGAL_PARAMETER, "server selected a PSK we did not offer")
            self._schedule = self._psk_schedule
            self.session_resumed = True
        else:
            self._schedule = KeySchedule(hello.cipher_suite)
        self.cipher_suite = hello.cipher_suite
        if self._transcript is None:
            self._transcript = Transcript(self._schedule.hash_name)
            self._transcript.add(self._hello)
        self._transcript.add(message)
        self._schedule.advance(_x25519(self._x25519, hello.key_share))
        transcript_hash = self._transcript.digest()
        self._client_hs = self._schedule.derive(b"c hs traffic", transcript_hash)
        self._server_hs = self._schedule.derive(b"s hs traffic", transcript_hash)
        self._install(HANDSHAKE, False, self._server_hs)
        self._install(HANDSHAKE, True, self._client_hs)
        self._recv_epoch = HANDSHAKE
        self._state = _WAIT_ENCRYPTED_EXTENSIONS

    def _on_retry(self, hello: m.ServerHello, message: bytes) -> None:
        self._check_hello(hello)
        if self._retried or self._send_key_share:
            raise alert(ILLEGAL_PARAMETER, "HelloRetryRequest for a group we already sent")
        self._retried = True
        self.cipher_suite = hello.cipher_suite
        hash_name = suite_hash(hello.cipher_suite)
        self._transcript = Transcript(hash_name)
        self._transcript.add(self._hello)
        self._transcript.restart_for_retry(hash_name)
        self._transcript.add(message)
        if self._ticket is not None and suite_hash(self._ticket.cipher_suite) != hash_name:
            self._ticket = None
        self._psk_schedule = None
        self._offer_early_data = False
        self._hello = self._client_hello(True, False)
        self._send(INITIAL, self._hello)

    def _on_encrypted_extensions(self, message: bytes) -> None:
        extensions = m.decode_encrypted_extensions(message)
        assert self._transcript is not None
        self._transcript.add(message)
        if extensions.alpn is None or extensions.alpn not in self._alpns:
            raise alert(NO_APPLICATION_PROTOCOL, "server did not select one of our ALPNs")
        if extensions.transport_parameters is None:
            raise alert(MISSING_EXTENSION, "server sent no QUIC transport parameters")
        if extensions.early_data and not self._offer_early_data:
            raise alert(ILLEGAL_PARAMETER, "server accepted early data we did not offer")
        if not self.session_resumed and (
            extensions.client_cert_type != m.RAW_PUBLIC_KEY or extensions.server_cert_type != m.RAW_PUBLIC_KEY
        ):
            raise alert(HANDSHAKE_FAILURE, "server did not select raw public keys")
        self.alpn = extensions.alpn
        self.peer_transport_parameters = extensions.transport_parameters
        self.early_data_accepted = extensions.early_data
        self._state = _WAIT_FINISHED if self.session_resumed else _WAIT_CERTIFICATE_OR_REQUEST

    def _on_certificate_request(self, message: bytes) -> None:
        context, schemes = m.decode_certificate_request(message)
        assert self._transcript is not None
        self._transcript.add(message)
        if context:
            raise alert(ILLEGAL_PARAMETER, "certificate_request_context must be empty in the handshake")
        if m.ED25519 not in schemes:
            raise alert(HANDSHAKE_FAILURE, "server does not accept ed25519 signatures")
        self._certificate_requested = True
        self._state = _WAIT_CERTIFICATE

    def _on_certificate(self, message: bytes) -> None:
        context, certificates = m.decode_certificate(message)
        self._peer_id = _peer_key(context, certificates, self._expected_peer)
        assert self._transcript is not None
        self._transcript.add(message)
        self._state = _WAIT_CERTIFICATE_VERIFY

    def _on_certificate_verify(self, message: bytes) -> None:
        scheme, signature = m.decode_certificate_verify(message)
        assert self._transcript is not None and self._peer_id is not None
        _verify(self._peer_id, scheme, signature, SERVER_SIGNATURE_CONTEXT, self._transcript.digest())
        self._transcript.add(message)
        self._state = _WAIT_FINISHED

    def _on_finished(self, message: bytes) -> None:
        schedule, transcript = self._check_finished(message, self._server_hs, "server")
        schedule.advance(None)
        transcript_hash = transcript.digest()
        server_ap = schedule.derive(b"s ap traffic", transcript_hash)
        client_ap = schedule.derive(b"c ap traffic", transcript_hash)
        self._install(ONE_RTT, False, server_ap)
        if self._certificate_requested:
            self._send(HANDSHAKE, m.encode_certificate(self._spki))
            self._send(HANDSHAKE, m.encode_certificate_verify(self._sign(CLIENT_SIGNATURE_CONTEXT)))
        self._send(HANDSHAKE, m.frame(m.FINISHED, schedule.finished(self._client_hs, transcript.digest())))
        self._install(ONE_RTT, True, client_ap)
        self._resumption_master = schedule.derive(b"res master", transcript.digest())
        if self.session_resumed:
            assert self._ticket is not None
            self._peer_id = self._ticket.peer_id
        self._client_hs = self._server_hs = b""
        self._recv_epoch = ONE_RTT
        self._state = _CONNECTED
        self.complete = True

    def _on_new_session_ticket(self, message: bytes) -> None:
        ticket = m.decode_new_session_ticket(message)
        if ticket.max_early_data_size not in (None, MAX_EARLY_DATA):
            raise QuicError("max_early_data_size is not 0xffffffff", error_code=QuicError.PROTOCOL_VIOLATION)
        assert self._schedule is not None and self._peer_id is not None and self.alpn is not None
        self._tickets.append(
            ResumptionTicket(
                ticket=ticket.ticket,
                resumption_secret=self._schedule.resumption_psk(self._resumption_master, ticket.nonce),
                cipher_suite=self._schedule.cipher_suite,
                peer_id=self._peer_id,
                alpn=self.alpn,
                age_add=ticket.age_add,
                issued_at=self._clock(),
                lifetime=min(ticket.lifetime, 7 * 86400),
                max_early_data_size=ticket.max_early_data_size,
                transport_parameters=self.peer_transport_parameters,
            )
        )


# -- server --------------------------------------------------------------------

_WAIT_CLIENT_HELLO: Final = 10
_WAIT_CLIENT_HELLO_RETRY: Final = 11
_WAIT_CLIENT_CERTIFICATE: Final = 12
_WAIT_CLIENT_CERTIFICATE_VERIFY: Final = 13
_WAIT_CLIENT_FINISHED: Final = 14
_SERVER_DONE: Final = 15


class ServerHandshake(_Handshake):
    """The accepting side: requires a raw-public-key client certificate (or a ticket) and an ALPN.

    ``alpns`` are those we accept, in our order of preference. With ``tickets`` the server
    resumes sessions it issued there and issues one ticket per handshake; with ``early_data``
    it accepts 0-RTT on resumption, if ``early_data_check`` (when given) passes for the
    session; QUIC checks there that its limits did not shrink since (RFC 9000 §7.4.1).
    ``expected_peer`` accepts only that client.
    """

    def __init__(
        self,
        secret_key: bytes | Ed25519PrivateKey,
        *,
        alpns: Sequence[bytes],
        transport_parameters: bytes,
        tickets: TicketStore | None = None,
        early_data: bool = True,
        expected_peer: bytes | None = None,
        cipher_suites: Sequence[int] = CIPHER_SUITES,
        clock: Callable[[], float] = time.time,
        early_data_check: Callable[[ServerSession], bool] | None = None,
    ) -> None:
        super().__init__(secret_key, alpns, transport_parameters, expected_peer, cipher_suites, clock)
        self._tickets = tickets
        self._early_data = early_data
        self._early_data_check = early_data_check
        self._state = _WAIT_CLIENT_HELLO
        self._client_hs = b""
        self._client_ap = b""

    def _handle(self, message: bytes) -> None:
        kind = message[0]
        state = self._state
        if state in (_WAIT_CLIENT_HELLO, _WAIT_CLIENT_HELLO_RETRY) and kind == m.CLIENT_HELLO:
            self._on_client_hello(message)
        elif state == _WAIT_CLIENT_CERTIFICATE and kind == m.CERTIFICATE:
            self._on_certificate(message)
        elif state == _WAIT_CLIENT_CERTIFICATE_VERIFY and kind == m.CERTIFICATE_VERIFY:
            self._on_certificate_verify(message)
        elif state == _WAIT_CLIENT_FINISHED and kind == m.FINISHED:
            self._on_finished(message)
        else:
            raise alert(UNEXPECTED_MESSAGE, f"unexpected handshake message type {kind}")

    def _negotiate(self, hello: m.ClientHello) -> tuple[int, bytes]:
        """(cipher suite, ALPN) for a parsed ClientHello, or the alert iroh's rules call for."""
        if m.TLS13 not in hello.versions:
            raise alert(PROTOCOL_VERSION, "client does not offer TLS 1.3")
        if hello.session_id:
            raise QuicError("QUIC ClientHello with a legacy_session_id", error_code=QuicError.PROTOCOL_VIOLATION)
        suite = next((s for s in self._suites if s in hello.cipher_suites), None)
        if suite is None:
            raise alert(HANDSHAKE_FAILURE, "no common cipher suite")
        if m.ED25519 not in hello.signature_schemes:
            raise alert(HANDSHAKE_FAILURE, "client does not accept ed25519 signatures")
        for offered in (hello.client_cert_types, hello.server_cert_types):
            if offered is None or m.RAW_PUBLIC_KEY not in offered:
                raise alert(HANDSHAKE_FAILURE, "peer does not offer raw public keys")
        alpn = next((a for a in self._alpns if hello.alpns is not None and a in hello.alpns), None)
        if alpn is None:
            raise alert(NO_APPLICATION_PROTOCOL, "no common ALPN")
        if hello.transport_parameters is None:
            raise alert(MISSING_EXTENSION, "client sent no QUIC transport parameters")
        if hello.key_shares is None:
            raise alert(MISSING_EXTENSION, "client sent no key_share")
        return suite, alpn

    def _on_client_hello(self, message: bytes) -> None:
        hello = m.decode_client_hello(message)
        suite, alpn = self._negotiate(hello)
        retried = self._state == _WAIT_CLIENT_HELLO_RETRY
        assert hello.key_shares is not None
        share = next((key for group, key in hello.key_shares if group == m.X25519), None)
        if share is None:
            if retried or m.X25519 not in hello.groups:
                raise alert(HANDSHAKE_FAILURE, "no common key exchange group")
            self._retry(hello, suite, message)
            return
        if retried and suite != self.cipher_suite:
            raise alert(ILLEGAL_PARAMETER, "cipher suite changed after HelloRetryRequest")
        private = X25519PrivateKey.generate()
        shared = _x25519(private, share)
        session = self._resume(hello, suite, message)
        if session is not None:
            suite = session.cipher_suite
            self._schedule = KeySchedule(suite, session.resumption_secret)
            self.session_resumed = True
            self._peer_id = session.peer_id
        else:
            self._schedule = KeySchedule(suite)
        self.cipher_suite = suite
        self.alpn = alpn
        self.peer_transport_parameters = hello.transport_parameters
        if self._transcript is None:
            self._transcript = Transcript(self._schedule.hash_name)
        self._transcript.add(message)
        schedule, transcript = self._schedule, self._transcript
        self.early_data_accepted = (
            session is not None
            and hello.early_data
            and self._early_data
            and not retried
            and session.max_early_data_size == MAX_EARLY_DATA
            and session.alpn == alpn
            and (self._early_data_check is None or self._early_data_check(session))
        )
        if self.early_data_accepted:
            self._install(ZERO_RTT, False, schedule.derive(b"c e traffic", transcript.digest()))
        self._send(
            INITIAL,
            m.encode_server_hello(
                random=os.urandom(32),
                session_id=hello.session_id,
                cipher_suite=suite,
                group=m.X25519,
                key_share=_x25519_public(private),
                psk_identity=0 if session is not None else None,
            ),
        )
        schedule.advance(shared)
        transcript_hash = transcript.digest()
        server_hs = schedule.derive(b"s hs traffic", transcript_hash)
        self._client_hs = schedule.derive(b"c hs traffic", transcript_hash)
        self._install(HANDSHAKE, True, server_hs)
        self._install(HANDSHAKE, False, self._client_hs)
        self._send(
            HANDSHAKE,
            m.encode_encrypted_extensions(
                alpn=alpn, early_data=self.early_data_accepted, transport_parameters=self._transport_parameters
            ),
        )
        if session is None:
            self._send(HANDSHAKE, m.encode_certificate_request())
            self._send(HANDSHAKE, m.encode_certificate(self._spki))
            self._send(HANDSHAKE, m.encode_certificate_verify(self._sign(SERVER_SIGNATURE_CONTEXT)))
        self._send(HANDSHAKE, m.frame(m.FINISHED, schedule.finished(server_hs, transcript.digest())))
        schedule.advance(None)
        transcript_hash = transcript.digest()
        self._install(ONE_RTT, True, schedule.derive(b"s ap traffic", transcript_hash))
        self._client_ap = schedule.derive(b"c ap traffic", transcript_hash)
        self._recv_epoch = HANDSHAKE
        self._state = _WAIT_CLIENT_FINISHED if session is not None else _WAIT_CLIENT_CERTIFICATE

    def _retry(self, hello: m.ClientHello, suite: int, message: bytes) -> None:
        """Ask for an X25519 share with a HelloRetryRequest (RFC 8446 §4.1.4)."""
        hash_name = suite_hash(suite)
        self.cipher_suite = suite
        self._transcript = Transcript(hash_name)
        self._transcript.add(message)
        self._transcript.restart_for_retry(hash_name)
        self._send(
            INITIAL,
            m.encode_server_hello(
                random=m.HRR_RANDOM,
                session_id=hello.session_id,
                cipher_suite=suite,
                group=m.X25519,
                key_share=b"",
                psk_identity=None,
            ),
        )
        self._state = _WAIT_CLIENT_HELLO_RETRY

    def _resume(self, hello: m.ClientHello, suite: int, message: bytes) -> ServerSession | None:
        """The session of the client's ticket if it is ours, fresh, and its binder verifies."""
        if self._tickets is None or not hello.psk_identities or m.PSK_DHE_KE not in hello.psk_modes:
            return None
        session = self._tickets.take(hello.psk_identities[0][0], self._clock())
        if session is None or session.cipher_suite not in hello.cipher_suites:
            return None
        if self._transcript is not None and session.cipher_suite != suite:
            return None  # HelloRetryRequest already fixed the cipher suite
        if self._expected_peer is not None and session.peer_id != self._expected_peer:
            return None
        schedule = KeySchedule(session.cipher_suite, session.resumption_secret)
        prefix = self._transcript.fork() if self._transcript is not None else Transcript(schedule.hash_name)
        prefix.add(message[: hello.binders_offset])
        expected = schedule.finished(schedule.derive(b"res binder", schedule.empty_hash()), prefix.digest())
        if not hmac.compare_digest(expected, hello.psk_binders[0]):
            raise alert(DECRYPT_ERROR, "PSK binder does not verify")
        return session

    def _on_certificate(self, message: bytes) -> None:
        context, certificates = m.decode_certificate(message)
        if not certificates:
            raise alert(CERTIFICATE_REQUIRED, "client certificate required")
        self._peer_id = _peer_key(context, certificates, self._expected_peer)
        assert self._transcript is not None
        self._transcript.add(message)
        self._state = _WAIT_CLIENT_CERTIFICATE_VERIFY

    def _on_certificate_verify(self, message: bytes) -> None:
        scheme, signature = m.decode_certificate_verify(message)
        assert self._transcript is not None and self._peer_id is not None
        _verify(self._peer_id, scheme, signature, CLIENT_SIGNATURE_CONTEXT, self._transcript.digest())
        self._transcript.add(message)
        self._state = _WAIT_CLIENT_FINISHED

    def _on_finished(self, message: bytes) -> None:
        schedule, transcript = self._check_finished(message, self._client_hs, "client")
        self._install(ONE_RTT, False, self._client_ap)
        self._client_hs = self._client_ap = b""
        self._recv_epoch = ONE_RTT
        self._state = _SERVER_DONE
        self.complete = True
        if self._tickets is not None:
            self._issue_ticket(schedule.derive(b"res master", transcript.digest()))

    def _issue_ticket(self, resumption_master: bytes) -> None:
        schedule = self._schedule
        assert schedule is not None and self._tickets is not None
        assert self._peer_id is not None and self.alpn is not None
        nonce = b"\x00"
        max_early_data = MAX_EARLY_DATA if self._early_data else None
        ticket = self._tickets.issue(
            ServerSession(
                resumption_secret=schedule.resumption_psk(resumption_master, nonce),
                cipher_suite=schedule.cipher_suite,
                peer_id=self._peer_id,
                alpn=self.alpn,
                issued_at=self._clock(),
                lifetime=TICKET_LIFETIME,
                max_early_data_size=max_early_data,
                transport_parameters=self._transport_parameters,
            )
        )
        nst = m.NewSessionTicket(
            lifetime=TICKET_LIFETIME,
            age_add=int.from_bytes(os.urandom(4), "big"),
            nonce=nonce,
            ticket=ticket,
            max_early_data_size=max_early_data,
        )
        self._output.append((ONE_RTT, m.encode_new_session_ticket(nst)))
