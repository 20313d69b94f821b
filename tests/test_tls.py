"""irohpy.tls in memory: two QUIC connections joined by a simulated link and clock, no sockets."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import ssl
from collections.abc import Callable

import aioquic
import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from irohpy.errors import IrohError, TlsError
from irohpy.tls import (
    IrohQuicConnection,
    IrohSessionTicket,
    encode_spki,
    parse_spki,
    peer_id_from_server_name,
    quic_configuration,
    server_name,
)
from irohpy.tls.context import IrohTlsContext
from irohpy.base.keys import _SMALL_ORDER_Y as SMALL_ORDER_Y
from irohpy.tls.keys import check_public_key
from irohpy.tls.spki import SpkiCertificate

ALPN = b"irohpy/test/0"
CLIENT_ADDR = ("10.0.0.1", 40000)
SERVER_ADDR = ("10.0.0.2", 4433)

CLIENT_SECRET = bytes([1]) * 32
SERVER_SECRET = bytes([2]) * 32
OTHER_SECRET = bytes([3]) * 32

BAD_CERTIFICATE = 0x100 + tls.AlertDescription.bad_certificate
HANDSHAKE_FAILURE = 0x100 + tls.AlertDescription.handshake_failure
CERTIFICATE_REQUIRED = 0x100 + tls.AlertDescription.certificate_required
NO_APPLICATION_PROTOCOL = 0x100 + tls.AlertDescription.no_application_protocol


def public(secret: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


CLIENT_ID = public(CLIENT_SECRET)
SERVER_ID = public(SERVER_SECRET)
OTHER_ID = public(OTHER_SECRET)


# -- the in-memory link ------------------------------------------------------


class Link:
    """A client and a server that is created from the client's first Initial, as a real server would."""

    def __init__(self, client: QuicConnection, server_factory: Callable[[bytes], QuicConnection]) -> None:
        self.now = 0.0
        self.client = client
        self.server: QuicConnection | None = None
        self._server_factory = server_factory
        self.client_events: list[events.QuicEvent] = []
        self.server_events: list[events.QuicEvent] = []
        client.connect(SERVER_ADDR, now=self.now)

    def to_server(self, datagrams: list[tuple[bytes, object]]) -> None:
        for data, _ in datagrams:
            if self.server is None:
                header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                self.server = self._server_factory(header.destination_cid)
            self.server.receive_datagram(data, CLIENT_ADDR, now=self.now)
        self._drain()

    def _drain(self) -> None:
        for conn, sink in ((self.client, self.client_events), (self.server, self.server_events)):
            while conn is not None and (event := conn.next_event()) is not None:
                sink.append(event)

    def _exchange(self) -> bool:
        moved = False
        outgoing = self.client.datagrams_to_send(now=self.now)
        if outgoing:
            moved = True
            self.to_server(outgoing)
        if self.server is not None:
            for data, _ in self.server.datagrams_to_send(now=self.now):
                moved = True
                self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
        self._drain()
        return moved

    def run(self, duration: float = 5.0) -> None:
        """Deliver everything and fire timers until ``duration`` of simulated time has passed."""
        end = self.now + duration
        while True:
            while self._exchange():
                pass
            conns = [c for c in (self.client, self.server) if c is not None]
            due = [(t, c) for c in conns if (t := c.get_timer()) is not None and t <= end]
            if not due:
                return
            when, conn = min(due, key=lambda item: item[0])
            self.now = max(self.now, when)
            conn.handle_timer(now=self.now)
            self._drain()


def first(sink: list[events.QuicEvent], kind: type[events.QuicEvent]) -> events.QuicEvent | None:
    return next((e for e in sink if isinstance(e, kind)), None)


def handshake(sink: list[events.QuicEvent]) -> events.HandshakeCompleted | None:
    event = first(sink, events.HandshakeCompleted)
    assert event is None or isinstance(event, events.HandshakeCompleted)
    return event


def termination(sink: list[events.QuicEvent]) -> events.ConnectionTerminated:
    event = first(sink, events.ConnectionTerminated)
    assert isinstance(event, events.ConnectionTerminated), f"not terminated: {sink}"
    return event


def iroh_client(
    secret: bytes = CLIENT_SECRET,
    peer: bytes = SERVER_ID,
    alpns: list[bytes] | None = None,
    cls: type[IrohQuicConnection] = IrohQuicConnection,
    **kwargs: object,
) -> IrohQuicConnection:
    ticket = kwargs.pop("session_ticket", None)
    config = quic_configuration(
        secret, is_client=True, alpns=alpns or [ALPN], expected_peer=peer, session_ticket=ticket
    )
    return cls(configuration=config, expected_peer=peer, **kwargs)  # type: ignore[arg-type]


def iroh_server(
    secret: bytes = SERVER_SECRET,
    alpns: list[bytes] | None = None,
    cls: type[IrohQuicConnection] = IrohQuicConnection,
    **kwargs: object,
) -> Callable[[bytes], QuicConnection]:
    def make(odcid: bytes) -> QuicConnection:
        config = quic_configuration(secret, is_client=False, alpns=[ALPN] if alpns is None else alpns)
        return cls(configuration=config, original_destination_connection_id=odcid, **kwargs)  # type: ignore[arg-type]

    return make


class TicketStore:
    """Session tickets as an application keeps them: the server by label, the client in a list."""

    def __init__(self) -> None:
        self.server: dict[bytes, tls.SessionTicket] = {}
        self.client: list[tls.SessionTicket] = []

    def keep_server(self, ticket: tls.SessionTicket) -> None:
        self.server[ticket.ticket] = ticket

    def fetch(self, label: bytes) -> tls.SessionTicket | None:
        return self.server.pop(label, None)


def connected_with_ticket(store: TicketStore) -> IrohSessionTicket:
    link = Link(
        iroh_client(session_ticket_handler=store.client.append),
        iroh_server(session_ticket_fetcher=store.fetch, session_ticket_handler=store.keep_server),
    )
    link.run()
    assert store.client, "the server issued no session ticket"
    ticket = store.client[-1]
    assert isinstance(ticket, IrohSessionTicket)
    return ticket


# -- names, keys, SPKI -----------------------------------------------------------


def test_server_name_vector() -> None:
    peer = public(bytes(32))
    assert peer.hex() == "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    name = server_name(peer)
    assert name == "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kg.iroh.invalid"
    assert peer_id_from_server_name(name) == peer
    assert peer_id_from_server_name(name.replace("7dl2ff6emq", "7DL2FF6EMQ")) == peer


@given(st.binary(min_size=32, max_size=32))
def test_server_name_roundtrip(seed: bytes) -> None:
    peer = public(seed)
    name = server_name(peer)
    assert len(name) == 52 + len(".iroh.invalid")
    assert set(name[:52]) <= set("0123456789abcdefghijklmnopqrstuv")
    assert peer_id_from_server_name(name) == peer


@pytest.mark.parametrize(
    "name",
    [
        "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kg.iroh.example",
        "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kg.IROH.INVALID",
        "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8k.iroh.invalid",
        "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kgg.iroh.invalid",
        "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kw.iroh.invalid",  # 'w' is not base32hex
        "7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kh.iroh.invalid",  # trailing bits set
        "x.7dl2ff6emqi2qol3l382krodedij45bn3nh479hqo14a32qpr8kg.iroh.invalid",
        server_name(bytes([1]) + bytes(31)),  # the identity point: small order
        "",
    ],
)
def test_server_name_rejects(name: str) -> None:
    with pytest.raises(TlsError):
        peer_id_from_server_name(name)


def test_tls_error_is_an_iroh_error() -> None:
    assert issubclass(TlsError, IrohError)


def test_server_name_needs_32_bytes() -> None:
    with pytest.raises(TlsError):
        server_name(bytes(31))


def test_spki_vector() -> None:
    peer = public(bytes([0x2A]) * 32)
    spki = encode_spki(peer)
    assert spki.hex() == (
        "302a300506032b6570032100197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
    )
    assert len(spki) == 44
    # The same bytes cryptography writes for the key's SubjectPublicKeyInfo.
    key = Ed25519PrivateKey.from_private_bytes(bytes([0x2A]) * 32).public_key()
    assert spki == key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert parse_spki(spki) == peer


@pytest.mark.parametrize(
    "spki",
    [
        b"",
        encode_spki(SERVER_ID)[:-1],
        encode_spki(SERVER_ID) + b"\x00",
        bytes.fromhex("302a300506032b6571032100") + SERVER_ID,  # Ed448 OID
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    ],
)
def test_spki_rejects(spki: bytes) -> None:
    with pytest.raises(TlsError):
        parse_spki(spki)


P = 2**255 - 19


@pytest.mark.parametrize("y", sorted(SMALL_ORDER_Y))
@pytest.mark.parametrize("sign", [0, 1])
def test_small_order_keys_rejected(y: int, sign: int) -> None:
    raw = (y | sign << 255).to_bytes(32, "little")
    with pytest.raises(TlsError):
        check_public_key(raw)
    with pytest.raises(TlsError):
        parse_spki(encode_spki(raw))


def test_small_order_table() -> None:
    d = -121665 * pow(121666, -1, P) % P
    order_8 = [y for y in SMALL_ORDER_Y if y not in (0, 1, P - 1)]
    assert len(order_8) == 2
    for y in order_8:  # doubling gives y = 0 (order 4) exactly when d*y^4 + 2*y^2 - 1 = 0
        assert (d * pow(y, 4, P) + 2 * y * y - 1) % P == 0


def test_non_canonical_and_off_curve_keys_rejected() -> None:
    with pytest.raises(TlsError):
        check_public_key((P + 5).to_bytes(32, "little"))  # y >= p
    with pytest.raises(TlsError):
        check_public_key((2).to_bytes(32, "little"))  # y = 2 has no x on the curve
    check_public_key(SERVER_ID)


# -- configuration ----------------------------------------------------------------


def test_configuration_defaults() -> None:
    config = quic_configuration(SERVER_SECRET, is_client=True, alpns=[ALPN, "other/1"], expected_peer=OTHER_ID)
    assert config.is_client
    assert config.alpn_protocols == ["irohpy/test/0", "other/1"]
    assert config.server_name == server_name(OTHER_ID)
    assert config.verify_mode == ssl.CERT_NONE
    assert config.idle_timeout == 30.0
    assert config.max_datagram_frame_size == 65535
    assert config.max_stream_data == 1_250_000
    assert config.max_data == (1 << 62) - 1
    assert config.congestion_control_algorithm == "cubic"
    assert config.connection_id_length == 8
    assert config.certificate.public_bytes(Encoding.DER) == encode_spki(SERVER_ID)
    assert isinstance(config.private_key, Ed25519PrivateKey)
    server = quic_configuration(Ed25519PrivateKey.from_private_bytes(SERVER_SECRET), is_client=False, alpns=[])
    assert server.server_name is None and server.alpn_protocols == []


def test_configuration_overrides_win() -> None:
    config = quic_configuration(
        SERVER_SECRET, is_client=True, alpns=[ALPN], expected_peer=OTHER_ID, idle_timeout=5.0, max_data=1000
    )
    assert config.idle_timeout == 5.0 and config.max_data == 1000
    IrohQuicConnection(configuration=config, expected_peer=OTHER_ID)  # cubic is available


@pytest.mark.parametrize("alpn", [b"caf\xc3\xa9", "café", b"", b"x" * 256])
def test_configuration_rejects_unusable_alpns(alpn: bytes | str) -> None:
    with pytest.raises(TlsError):
        quic_configuration(SERVER_SECRET, is_client=False, alpns=[alpn])


def test_configuration_rejects_bad_input() -> None:
    with pytest.raises(TlsError):
        quic_configuration(SERVER_SECRET, is_client=True, alpns=[ALPN])  # no expected peer
    with pytest.raises(TlsError):
        quic_configuration(bytes(31), is_client=False, alpns=[ALPN])
    with pytest.raises(TlsError):
        quic_configuration(SERVER_SECRET, is_client=False, alpns=ALPN)  # type: ignore[arg-type]


def test_connection_rejects_bad_input() -> None:
    config = quic_configuration(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID)
    with pytest.raises(TlsError):
        IrohQuicConnection(configuration=config)
    with pytest.raises(TlsError):
        IrohQuicConnection(configuration=config, expected_peer=SERVER_ID[:31])
    with pytest.raises(TlsError):
        IrohQuicConnection(configuration=dataclasses.replace(config, alpn_protocols=[]), expected_peer=SERVER_ID)
    ecdsa = dataclasses.replace(config, private_key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(TlsError):
        IrohQuicConnection(configuration=ecdsa, expected_peer=SERVER_ID)
    server = quic_configuration(SERVER_SECRET, is_client=False, alpns=[ALPN])
    with pytest.raises(TlsError):
        IrohQuicConnection(
            configuration=dataclasses.replace(server, alpn_protocols=None),
            original_destination_connection_id=bytes(8),
        )


# -- handshakes ---------------------------------------------------------------------


def test_handshake_learns_both_ids() -> None:
    link = Link(iroh_client(), iroh_server())
    assert isinstance(link.client, IrohQuicConnection) and link.client.peer_id is None
    link.run()
    assert isinstance(link.server, IrohQuicConnection)
    done_c, done_s = handshake(link.client_events), handshake(link.server_events)
    assert done_c is not None and done_s is not None
    assert done_c.alpn_protocol == done_s.alpn_protocol == ALPN.decode()
    assert not done_c.session_resumed
    assert link.client.peer_id == SERVER_ID
    assert link.server.peer_id == CLIENT_ID
    assert first(link.client_events, events.ConnectionTerminated) is None


def test_pinning_replaces_x509_verification_whatever_the_verify_mode() -> None:
    config = quic_configuration(
        CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, verify_mode=ssl.CERT_REQUIRED
    )
    link = Link(IrohQuicConnection(configuration=config, expected_peer=SERVER_ID), iroh_server())
    link.run()
    assert handshake(link.client_events) is not None
    assert isinstance(link.client, IrohQuicConnection) and link.client.peer_id == SERVER_ID


def test_handshake_carries_stream_data() -> None:
    link = Link(iroh_client(), iroh_server())
    link.run(0.5)
    link.client.send_stream_data(0, b"hello", end_stream=True)
    link.run(0.5)
    received = [e for e in link.server_events if isinstance(e, events.StreamDataReceived)]
    assert b"".join(e.data for e in received) == b"hello" and received[-1].end_stream


def test_wrong_expected_peer_fails_with_bad_certificate() -> None:
    link = Link(iroh_client(peer=OTHER_ID), iroh_server())
    link.run()
    closed = termination(link.client_events)
    assert closed.error_code == BAD_CERTIFICATE == 0x12A
    assert "does not match expected id" in closed.reason_phrase
    assert termination(link.server_events).error_code == BAD_CERTIFICATE
    assert handshake(link.client_events) is None
    assert isinstance(link.client, IrohQuicConnection) and link.client.peer_id is None


def test_server_may_pin_the_client() -> None:
    link = Link(iroh_client(), iroh_server(expected_peer=OTHER_ID))
    link.run()
    assert termination(link.server_events).error_code == BAD_CERTIFICATE
    link = Link(iroh_client(), iroh_server(expected_peer=CLIENT_ID))
    link.run()
    assert isinstance(link.server, IrohQuicConnection) and link.server.peer_id == CLIENT_ID


def x509_configuration(is_client: bool) -> QuicConfiguration:
    """A plain aioquic configuration with a self-signed X.509 certificate (no raw public keys)."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x509.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN.decode()],
        certificate=cert,
        private_key=key,
        verify_mode=ssl.CERT_NONE,
        server_name=None if not is_client else "x509.test",
    )


def test_plain_x509_client_rejected_by_our_server() -> None:
    link = Link(QuicConnection(configuration=x509_configuration(is_client=True)), iroh_server())
    link.run()
    closed = termination(link.client_events)
    assert closed.error_code == HANDSHAKE_FAILURE
    assert "does not offer raw public keys" in closed.reason_phrase
    assert handshake(link.server_events) is None


def test_our_client_rejects_plain_x509_server() -> None:
    def plain_server(odcid: bytes) -> QuicConnection:
        config = x509_configuration(is_client=False)
        return QuicConnection(configuration=config, original_destination_connection_id=odcid)

    link = Link(iroh_client(), plain_server)
    link.run()
    closed = termination(link.client_events)
    assert closed.error_code == HANDSHAKE_FAILURE
    assert "did not select raw public keys" in closed.reason_phrase
    assert termination(link.server_events).error_code == HANDSHAKE_FAILURE


class ChainServer(IrohQuicConnection):
    """Presents its raw public key followed by a second entry, like an X.509 chain."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls.certificate_chain = [SpkiCertificate(OTHER_ID)]


class X509AfterRpkServer(IrohQuicConnection):
    """Negotiates raw public keys, then sends an X.509 certificate anyway."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        x509_config = x509_configuration(is_client=False)
        self.tls.certificate = x509_config.certificate
        self.tls.certificate_private_key = x509_config.private_key


@pytest.mark.parametrize(
    ("cls", "reason"), [(ChainServer, "exactly one"), (X509AfterRpkServer, "SubjectPublicKeyInfo")]
)
def test_server_certificate_must_be_one_raw_public_key(cls: type[IrohQuicConnection], reason: str) -> None:
    link = Link(iroh_client(), iroh_server(cls=cls))
    link.run()
    closed = termination(link.client_events)
    assert closed.error_code == BAD_CERTIFICATE
    assert reason in closed.reason_phrase


class CertlessClient(IrohQuicConnection):
    """Offers raw public keys but answers the CertificateRequest with an empty Certificate."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls.certificate = None


def test_empty_client_certificate_rejected() -> None:
    link = Link(iroh_client(cls=CertlessClient), iroh_server())
    link.run()
    closed = termination(link.server_events)
    assert closed.error_code == CERTIFICATE_REQUIRED
    assert "client certificate required" in closed.reason_phrase
    assert termination(link.client_events).error_code == CERTIFICATE_REQUIRED
    assert handshake(link.server_events) is None


def test_alpn_mismatch_fails() -> None:
    link = Link(iroh_client(alpns=[b"wanted/1"]), iroh_server(alpns=[b"offered/1"]))
    link.run()
    assert termination(link.client_events).error_code == NO_APPLICATION_PROTOCOL == 0x178
    link = Link(iroh_client(), iroh_server(alpns=[]))  # a server that accepts no ALPN refuses all
    link.run()
    assert termination(link.client_events).error_code == NO_APPLICATION_PROTOCOL


def test_alpn_negotiates_the_shared_one() -> None:
    link = Link(iroh_client(alpns=[b"b/1", b"a/1"]), iroh_server(alpns=[b"a/1", b"c/1"]))
    link.run()
    done = handshake(link.client_events)
    assert done is not None and done.alpn_protocol == "a/1"


# -- what goes on the wire ------------------------------------------------------------


class RecordingContext(IrohTlsContext):
    """Keeps the ClientHello this server receives."""

    hellos: list[tls.ClientHello] = []

    def _server_handle_hello(self, input_buf: Buffer, initial_buf: Buffer, handshake_buf: Buffer) -> None:
        message = input_buf.data_slice(0, input_buf.capacity)
        RecordingContext.hellos.append(tls.pull_client_hello(Buffer(data=message)))
        super()._server_handle_hello(input_buf, initial_buf, handshake_buf)


class RecordingServer(IrohQuicConnection):
    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls.__class__ = RecordingContext


def test_wire_offers_only_ed25519_and_raw_public_keys() -> None:
    RecordingContext.hellos.clear()
    link = Link(iroh_client(), iroh_server(cls=RecordingServer))
    link.run()
    assert link.server is not None and handshake(link.server_events) is not None
    (hello,) = RecordingContext.hellos
    assert hello.signature_algorithms == [tls.SignatureAlgorithm.ED25519]
    assert (19, b"\x01\x02") in hello.other_extensions
    assert (20, b"\x01\x02") in hello.other_extensions
    assert hello.server_name == server_name(SERVER_ID)
    assert hello.alpn_protocols == [ALPN.decode()]
    assert hello.supported_groups is not None and hello.supported_groups[0] == tls.Group.X25519
    # The server's side of the wire, as the client parsed it.
    assert isinstance(link.client, IrohQuicConnection)
    client_tls = link.client.tls
    assert (19, b"\x02") in (client_tls.received_extensions or [])
    assert (20, b"\x02") in (client_tls.received_extensions or [])
    assert client_tls._certificate_request is not None
    assert client_tls._certificate_request.signature_algorithms == [tls.SignatureAlgorithm.ED25519]


class EcdsaOnlyClient(IrohQuicConnection):
    """Offers raw public keys but no ed25519 signature scheme."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._signature_algorithms = [tls.SignatureAlgorithm.ECDSA_SECP256R1_SHA256]


def test_client_without_ed25519_rejected() -> None:
    link = Link(iroh_client(cls=EcdsaOnlyClient), iroh_server())
    link.run()
    assert termination(link.client_events).error_code == HANDSHAKE_FAILURE
    assert handshake(link.server_events) is None


# -- resumption and 0-RTT -----------------------------------------------------------------


def test_tickets_record_the_peer() -> None:
    store = TicketStore()
    ticket = connected_with_ticket(store)
    assert ticket.peer_id == SERVER_ID
    assert ticket.server_name == server_name(SERVER_ID)
    (server_ticket,) = store.server.values()
    assert isinstance(server_ticket, IrohSessionTicket) and server_ticket.peer_id == CLIENT_ID


def test_resumption_keeps_peer_ids() -> None:
    store = TicketStore()
    ticket = connected_with_ticket(store)
    link = Link(
        iroh_client(session_ticket=ticket, session_ticket_handler=store.client.append),
        iroh_server(session_ticket_fetcher=store.fetch, session_ticket_handler=store.keep_server),
    )
    link.run()
    done_c, done_s = handshake(link.client_events), handshake(link.server_events)
    assert done_c is not None and done_s is not None
    assert done_c.session_resumed and done_s.session_resumed
    assert isinstance(link.client, IrohQuicConnection) and isinstance(link.server, IrohQuicConnection)
    assert link.client.peer_id == SERVER_ID
    assert link.server.peer_id == CLIENT_ID
    assert first(link.server_events, events.ConnectionTerminated) is None
    # The resumed session issues tickets too, still naming the right peers.
    assert store.client[-1] is not ticket and store.client[-1].peer_id == SERVER_ID  # type: ignore[attr-defined]
    assert all(t.peer_id == CLIENT_ID for t in store.server.values())  # type: ignore[attr-defined]


@pytest.mark.parametrize("forge_name", [False, True])
def test_ticket_for_one_peer_is_not_used_for_another(forge_name: bool) -> None:
    store = TicketStore()
    ticket = connected_with_ticket(store)
    if forge_name:  # get past aioquic's own server-name check: only the recorded peer id is left
        ticket = dataclasses.replace(ticket, server_name=server_name(OTHER_ID))
    client = iroh_client(peer=OTHER_ID, session_ticket=ticket)
    link = Link(client, iroh_server(secret=OTHER_SECRET, session_ticket_fetcher=store.fetch))
    assert client.tls.session_ticket is None
    link.run()
    done = handshake(link.client_events)
    assert done is not None and not done.session_resumed
    assert client.peer_id == OTHER_ID
    assert store.server, "the server was never asked for the ticket"


def test_ticket_without_peer_is_not_used() -> None:
    store = TicketStore()
    ticket = connected_with_ticket(store)
    plain = tls.SessionTicket(**{f.name: getattr(ticket, f.name) for f in dataclasses.fields(tls.SessionTicket)})
    client = iroh_client(session_ticket=plain)
    assert client._configuration.session_ticket is None


def test_server_ignores_ticket_without_peer() -> None:
    store = TicketStore()
    ticket = connected_with_ticket(store)
    store.server = {
        label: tls.SessionTicket(**{f.name: getattr(t, f.name) for f in dataclasses.fields(tls.SessionTicket)})
        for label, t in store.server.items()
    }
    link = Link(iroh_client(session_ticket=ticket), iroh_server(session_ticket_fetcher=store.fetch))
    link.run()
    done = handshake(link.server_events)
    assert done is not None and not done.session_resumed
    assert isinstance(link.server, IrohQuicConnection) and link.server.peer_id == CLIENT_ID


def test_zero_rtt_data_arrives_in_first_flight() -> None:
    store = TicketStore()
    ticket = connected_with_ticket(store)
    assert ticket.max_early_data_size is not None
    link = Link(
        iroh_client(session_ticket=ticket),
        iroh_server(session_ticket_fetcher=store.fetch, session_ticket_handler=store.keep_server),
    )
    link.client.send_stream_data(0, b"early bird", end_stream=True)
    link.to_server(link.client.datagrams_to_send(now=link.now))  # the first flight only
    received = [e for e in link.server_events if isinstance(e, events.StreamDataReceived)]
    assert b"".join(e.data for e in received) == b"early bird"
    assert handshake(link.server_events) is None  # the handshake is not even finished yet
    link.run()
    done = handshake(link.client_events)
    assert done is not None and done.early_data_accepted and done.session_resumed
    assert isinstance(link.server, IrohQuicConnection) and link.server.peer_id == CLIENT_ID


# -- the aioquic internals we rely on ----------------------------------------------------------


def test_aioquic_is_the_pinned_version() -> None:
    assert aioquic.__version__ == "1.7.2"


OVERRIDES: list[tuple[type, str, list[str]]] = [
    (tls.Context, "_client_handle_hello", ["self", "input_buf", "output_buf"]),
    (tls.Context, "_client_handle_encrypted_extensions", ["self", "input_buf"]),
    (tls.Context, "_server_handle_hello", ["self", "input_buf", "initial_buf", "handshake_buf"]),
    (tls.Context, "_server_handle_certificate", ["self", "input_buf"]),
    (tls.Context, "_set_peer_certificate", ["self", "certificate"]),
    (tls.Context, "_build_session_ticket", ["self", "new_session_ticket", "other_extensions"]),
    (QuicConnection, "_initialize", ["self", "peer_cid"]),
]


@pytest.mark.parametrize(("owner", "name", "params"), OVERRIDES, ids=[o[1] for o in OVERRIDES])
def test_overridden_aioquic_methods_exist(owner: type, name: str, params: list[str]) -> None:
    assert list(inspect.signature(getattr(owner, name)).parameters) == params


def test_every_context_override_targets_an_aioquic_method() -> None:
    ours = {n for n, v in vars(IrohTlsContext).items() if callable(v) and n.startswith("_") and n[1] != "_"}
    helpers = {"_setup", "_ticket_fetcher", "_require_client_offers_raw_public_keys"}
    assert {n for n in ours - helpers if not hasattr(tls.Context, n)} == set()
    assert {o[1] for o in OVERRIDES if o[0] is tls.Context} == ours - helpers


def test_aioquic_context_state_we_rely_on() -> None:
    """Attributes and helpers of aioquic's Context that the overrides read or set."""
    ctx = tls.Context(is_client=False)
    for attr in (
        "_request_client_certificate",
        "_signature_algorithms",
        "_supported_groups",
        "_verify_mode",
        "_peer_certificate",
        "_peer_certificate_chain",
        "_session_resumed",
        "_is_client",
        "handshake_extensions",
        "received_extensions",
        "alpn_cb",
        "get_session_ticket_cb",
        "session_ticket",
        "certificate",
        "certificate_chain",
        "certificate_private_key",
        "state",
    ):
        assert hasattr(ctx, attr), attr
    assert ctx._request_client_certificate is False
    assert list(inspect.signature(tls.Context._server_expect_finished).parameters) == ["self"]
    assert tls.State.SERVER_EXPECT_CERTIFICATE in tls.State
    assert inspect.signature(QuicConnection.__init__).parameters["session_ticket_fetcher"]
    conn = IrohQuicConnection(
        configuration=quic_configuration(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
        expected_peer=SERVER_ID,
    )
    assert conn._handshake_complete is False
    conn.connect(SERVER_ADDR, now=0.0)
    assert isinstance(conn.tls, IrohTlsContext)  # _initialize ran and created the context


def test_aioquic_calls_alpn_cb_after_storing_client_extensions() -> None:
    """The server-side checks run inside alpn_cb; they need the ClientHello's extensions by then."""
    source = inspect.getsource(tls.Context._server_handle_hello)
    assert source.index("self.received_extensions = peer_hello.other_extensions") < source.index("self.alpn_cb(")
    assert source.index("self.alpn_cb(") < source.index("push_encrypted_extensions(")


def test_aioquic_still_needs_the_resumption_repair() -> None:
    """aioquic waits for a client certificate after a resumed hello; the override repairs that."""
    source = inspect.getsource(tls.Context._server_handle_hello)
    assert "self._set_state(State.SERVER_EXPECT_CERTIFICATE)" in source
