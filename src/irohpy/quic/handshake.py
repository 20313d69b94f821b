"""The TLS 1.3 handshake as the QUIC connection core sees it (RFC 9001 §4), and iroh's.

The connection only moves bytes: CRYPTO data in and out per epoch, and secrets as they are
installed. :class:`Handshake` is that contract, small enough that a second TLS implementation
can slot in. :func:`iroh_handshake` builds iroh's, an :class:`IrohHandshake` over irohpy's own
TLS 1.3 (:mod:`irohpy.tls.handshake`): mutual raw-public-key authentication, the dialed
EndpointId pinned, ALPN mandatory, transport parameters in extension 0x39, and session tickets
with resumption and 0-RTT (RFC 9001 §4.6).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irohpy.errors import QuicError, TlsError
from irohpy.quic.transport_params import TransportParameters
from irohpy.tls.handshake import CIPHER_SUITES, ClientHandshake, ServerHandshake
from irohpy.tls.keys import KEY_LENGTH
from irohpy.tls.resumption import ServerSession, TicketCache, TicketStore

#: Encryption levels, numbered as RFC 9001 numbers them.
EPOCH_INITIAL: Final = 0
EPOCH_ZERO_RTT: Final = 1
EPOCH_HANDSHAKE: Final = 2
EPOCH_ONE_RTT: Final = 3

#: The TLS extension that carries QUIC transport parameters (RFC 9001 §8.2).
QUIC_TRANSPORT_PARAMETERS: Final = 0x39


class Handshake(Protocol):
    """What the connection needs from TLS; every method is sans-IO and may raise QuicError.

    A TLS alert raises ``QuicError(error_code=0x100 + alert)``; the connection closes with it.
    """

    def start(self, transport_parameters: bytes) -> None:
        """Our encoded transport parameters; a client writes its ClientHello here."""
        ...

    def receive(self, epoch: int, data: bytes) -> None:
        """CRYPTO bytes of ``epoch``, in order and without gaps."""
        ...

    def take_output(self) -> list[tuple[int, bytes]]:
        """``(epoch, bytes)`` to send in CRYPTO frames, oldest first; cleared by the call."""
        ...

    def take_keys(self) -> list[tuple[int, bool, int, bytes]]:
        """``(epoch, is_send, cipher_suite, secret)`` installed since the last call.

        Epoch 1 (0-RTT) comes out of ``start`` on a client that attempts 0-RTT (send) and out
        of the ClientHello on a server that accepts it (receive)."""
        ...

    @property
    def complete(self) -> bool:
        """The handshake finished and the peer is authenticated."""
        ...

    @property
    def alpn(self) -> bytes | None: ...

    @property
    def peer_transport_parameters(self) -> bytes | None:
        """The peer's encoded transport parameters, once its hello or extensions arrived."""
        ...

    @property
    def peer_id(self) -> bytes | None:
        """The peer's raw Ed25519 key (its EndpointId) when the TLS authenticates by one."""
        ...

    @property
    def early_data_accepted(self) -> bool:
        """The server accepted 0-RTT (known to a client once EncryptedExtensions arrived)."""
        ...

    @property
    def session_resumed(self) -> bool:
        """The handshake resumed an earlier session by its ticket (PSK)."""
        ...

    @property
    def remembered_transport_parameters(self) -> bytes | None:
        """A client's 0-RTT limits: the server's transport parameters of the session it
        resumes (RFC 9000 §7.4.1); None when it attempts no 0-RTT."""
        ...


class IrohHandshake:
    """:class:`Handshake` over irohpy's TLS 1.3; built by :func:`iroh_handshake`.

    The TLS object is made in :meth:`start`, when the transport parameters are known. A client
    with a ``ticket_cache`` takes a ticket of the dialed id and one of its ALPNs from it (single
    use) and puts every ticket the server sends back in; a server with a ``ticket_store``
    resumes sessions it issued there and issues one ticket per full or resumed handshake.
    """

    __slots__ = (
        "_secret_key",
        "_is_client",
        "_alpns",
        "_expected_peer",
        "_ticket_store",
        "_ticket_cache",
        "_early_data",
        "_cipher_suites",
        "_send_key_share",
        "_clock",
        "_tls",
        "_remembered",
    )

    def __init__(
        self,
        secret_key: bytes | Ed25519PrivateKey,
        *,
        is_client: bool,
        alpns: Sequence[bytes],
        expected_peer: bytes | None,
        ticket_store: TicketStore | None = None,
        ticket_cache: TicketCache | None = None,
        early_data: bool = True,
        cipher_suites: Sequence[int] = CIPHER_SUITES,
        send_key_share: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret_key = secret_key
        self._is_client = is_client
        self._alpns = list(alpns)
        self._expected_peer = expected_peer
        self._ticket_store = ticket_store
        self._ticket_cache = ticket_cache
        self._early_data = early_data
        self._cipher_suites = list(cipher_suites)
        self._send_key_share = send_key_share
        self._clock = clock
        self._tls: ClientHandshake | ServerHandshake | None = None
        self._remembered: bytes | None = None

    def start(self, transport_parameters: bytes) -> None:
        if self._tls is not None:
            raise QuicError("handshake already started", error_code=QuicError.INTERNAL_ERROR)
        if not self._is_client:
            self._tls = ServerHandshake(
                self._secret_key,
                alpns=self._alpns,
                transport_parameters=transport_parameters,
                tickets=self._ticket_store,
                early_data=self._early_data,
                expected_peer=self._expected_peer,
                cipher_suites=self._cipher_suites,
                clock=self._clock,
                early_data_check=_limits_kept(transport_parameters),
            )
            return
        assert self._expected_peer is not None
        cache = self._ticket_cache
        ticket = cache.take(self._expected_peer, self._alpns, self._clock()) if cache is not None else None
        client = ClientHandshake(
            self._secret_key,
            alpns=self._alpns,
            transport_parameters=transport_parameters,
            expected_peer=self._expected_peer,
            ticket=ticket,
            early_data=self._early_data,
            cipher_suites=self._cipher_suites,
            send_key_share=self._send_key_share,
            clock=self._clock,
        )
        self._tls = client
        client.start()
        if ticket is not None and client.offers_early_data:
            self._remembered = ticket.transport_parameters

    def _started(self) -> ClientHandshake | ServerHandshake:
        tls = self._tls
        if tls is None:
            raise QuicError("handshake not started", error_code=QuicError.INTERNAL_ERROR)
        return tls

    def receive(self, epoch: int, data: bytes) -> None:
        tls = self._started()
        tls.receive(epoch, data)
        cache = self._ticket_cache
        if cache is not None and isinstance(tls, ClientHandshake):
            for ticket in tls.take_tickets():
                cache.put(ticket)

    def take_output(self) -> list[tuple[int, bytes]]:
        return self._tls.take_output() if self._tls is not None else []

    def take_keys(self) -> list[tuple[int, bool, int, bytes]]:
        return self._tls.take_keys() if self._tls is not None else []

    @property
    def complete(self) -> bool:
        return self._tls is not None and self._tls.complete

    @property
    def alpn(self) -> bytes | None:
        return self._tls.alpn if self._tls is not None else None

    @property
    def peer_transport_parameters(self) -> bytes | None:
        return self._tls.peer_transport_parameters if self._tls is not None else None

    @property
    def peer_id(self) -> bytes | None:
        return self._tls.peer_id if self._tls is not None else None

    @property
    def early_data_accepted(self) -> bool:
        return self._tls is not None and self._tls.early_data_accepted

    @property
    def session_resumed(self) -> bool:
        return self._tls is not None and self._tls.session_resumed

    @property
    def remembered_transport_parameters(self) -> bytes | None:
        return self._remembered


def _limits_kept(current: bytes) -> Callable[[ServerSession], bool]:
    """Accept 0-RTT of a session only if our limits did not shrink since (RFC 9000 §7.4.1)."""

    def check(session: ServerSession) -> bool:
        if session.transport_parameters is None:
            return False
        try:
            remembered = TransportParameters.decode(session.transport_parameters, from_server=True)
            ours = TransportParameters.decode(current, from_server=True)
        except QuicError:
            return False
        return ours.keeps_0rtt_limits(remembered)

    return check


def check_iroh_args(alpns: Sequence[bytes | str], *, is_client: bool, expected_peer: bytes | None) -> None:
    """What any iroh handshake needs: a list of ALPNs (one at least to dial) and a dialed id."""
    if isinstance(alpns, bytes | bytearray | str):
        raise TlsError("alpns is a list of ALPNs, not a single one")
    if not alpns and is_client:
        raise TlsError("iroh requires an ALPN to connect")
    if expected_peer is not None and len(expected_peer) != KEY_LENGTH:
        raise TlsError(f"expected_peer must be a {KEY_LENGTH}-byte EndpointId")
    if is_client and expected_peer is None:
        raise TlsError("a client must know the EndpointId it dials (expected_peer)")


def iroh_handshake(
    secret_key: bytes | Ed25519PrivateKey,
    *,
    is_client: bool,
    alpns: Sequence[bytes | str],
    expected_peer: bytes | None = None,
    ticket_store: TicketStore | None = None,
    ticket_cache: TicketCache | None = None,
    early_data: bool = True,
) -> IrohHandshake:
    """iroh's TLS (raw Ed25519 keys, mutual auth); a client pins ``expected_peer``, the id it dials.

    A server resumes with ``ticket_store`` (one per endpoint: tickets are single use, which is
    also what stops 0-RTT replay); a client resumes and attempts 0-RTT with ``ticket_cache``
    (one per endpoint, keyed by server id and ALPN). ``early_data=False`` resumes without 0-RTT.
    """
    check_iroh_args(alpns, is_client=is_client, expected_peer=expected_peer)
    if is_client and ticket_store is not None:
        raise TlsError("a client keeps tickets in a ticket_cache, not a ticket_store")
    if not is_client and ticket_cache is not None:
        raise TlsError("a server keeps tickets in a ticket_store, not a ticket_cache")
    encoded = [a.encode("ascii") if isinstance(a, str) else bytes(a) for a in alpns]
    if any(not 1 <= len(a) <= 255 for a in encoded):
        raise TlsError("an ALPN has 1 to 255 bytes")
    return IrohHandshake(
        secret_key,
        is_client=is_client,
        alpns=encoded,
        expected_peer=bytes(expected_peer) if expected_peer is not None else None,
        ticket_store=ticket_store,
        ticket_cache=ticket_cache,
        early_data=early_data,
    )
