"""irohpy.tls.messages and key_schedule: RFC 8448 known answers, round trips, and fuzzing.

Nothing but typed errors (TlsDecodeError from decoders, QuicError from a handshake) may come
out of garbage, and a ClientHello that does not parse leaves a server with no state beyond it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import QuicError, TlsDecodeError
from irohpy.quic.crypto import AES_128_GCM_SHA256, hkdf_expand_label
from irohpy.tls import messages as m
from irohpy.tls.key_schedule import KeySchedule, Transcript
from irohpy.tls.resumption import TicketStore
from tests.test_tls_handshake import CLIENT_SECRET, SERVER_ID, SERVER_SECRET
from tests.tls_peers import ours_client, ours_server, pump

H = bytes.fromhex

# RFC 8448 §3 "Simple 1-RTT Handshake" (SHA-256).
ECDHE = H("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d")
EARLY = H("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a")
DERIVED_EARLY = H("6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba")
HANDSHAKE = H("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac")
HELLO_HASH = H("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
C_HS = H("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21")
S_HS = H("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
DERIVED_HANDSHAKE = H("43de77e0c77713859a944db9db2590b53190a65b3ee2e4f12dd7a0bb7ce254b4")
MASTER = H("18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919")
SERVER_FINISHED_HASH = H("9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")
C_AP = H("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
S_AP = H("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
CLIENT_FINISHED_HASH = H("209145a96ee8e2a122ff810047cc952684658d6049e86429426db87c54ad143d")
RES_MASTER = H("7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c")
SERVER_HS_KEY = H("3fce516009c21727d0f2e4e86ee403bc")
SERVER_HS_IV = H("5d313eb2671276ee13000b30")


def test_key_schedule_matches_rfc8448_simple_handshake() -> None:
    schedule = KeySchedule(AES_128_GCM_SHA256)
    assert schedule._secret == EARLY
    assert schedule.derive(b"derived", schedule.empty_hash()) == DERIVED_EARLY
    schedule.advance(ECDHE)
    assert schedule._secret == HANDSHAKE
    assert schedule.derive(b"c hs traffic", HELLO_HASH) == C_HS
    assert schedule.derive(b"s hs traffic", HELLO_HASH) == S_HS
    assert schedule.derive(b"derived", schedule.empty_hash()) == DERIVED_HANDSHAKE
    schedule.advance(None)
    assert schedule._secret == MASTER
    assert schedule.derive(b"c ap traffic", SERVER_FINISHED_HASH) == C_AP
    assert schedule.derive(b"s ap traffic", SERVER_FINISHED_HASH) == S_AP
    assert schedule.derive(b"res master", CLIENT_FINISHED_HASH) == RES_MASTER


def test_hkdf_expand_label_matches_rfc8448_record_keys() -> None:
    assert hkdf_expand_label(S_HS, b"key", b"", 16) == SERVER_HS_KEY
    assert hkdf_expand_label(S_HS, b"iv", b"", 12) == SERVER_HS_IV


def test_transcript_restart_for_retry_is_message_hash() -> None:
    import hashlib

    transcript = Transcript("sha256")
    transcript.add(b"client hello one")
    transcript.restart_for_retry("sha256")
    inner = hashlib.sha256(b"client hello one").digest()
    assert transcript.digest() == hashlib.sha256(bytes((254, 0, 0, 32)) + inner).digest()


# -- round trips -----------------------------------------------------------------------


def test_client_hello_round_trip() -> None:
    hello = m.encode_client_hello(
        random=bytes(range(32)),
        cipher_suites=[0x1301, 0x1302],
        key_shares=[(m.X25519, b"k" * 32)],
        alpns=[b"a", b"bc"],
        transport_parameters=b"tp",
        psk_identity=(b"ticket", 1234),
        binder_length=32,
        early_data=True,
    )
    decoded = m.decode_client_hello(hello)
    assert decoded.random == bytes(range(32)) and decoded.cipher_suites == [0x1301, 0x1302]
    assert decoded.key_shares == [(m.X25519, b"k" * 32)] and decoded.groups == [m.X25519]
    assert decoded.alpns == [b"a", b"bc"] and decoded.transport_parameters == b"tp"
    assert decoded.client_cert_types == decoded.server_cert_types == [m.RAW_PUBLIC_KEY]
    assert decoded.signature_schemes == [m.ED25519] and decoded.versions == [m.TLS13]
    assert decoded.early_data and decoded.psk_modes == [m.PSK_DHE_KE]
    assert decoded.psk_identities == [(b"ticket", 1234)] and decoded.psk_binders == [bytes(32)]
    assert decoded.binders_offset == m.binders_offset(hello, 32)


def test_server_hello_and_retry_round_trip() -> None:
    hello = m.decode_server_hello(
        m.encode_server_hello(
            random=b"r" * 32, session_id=b"", cipher_suite=0x1303, group=m.X25519, key_share=b"s" * 32, psk_identity=0
        )
    )
    assert (hello.cipher_suite, hello.group, hello.key_share, hello.psk_identity) == (0x1303, m.X25519, b"s" * 32, 0)
    assert not hello.is_retry and hello.version == m.TLS13
    retry = m.decode_server_hello(
        m.encode_server_hello(
            random=m.HRR_RANDOM, session_id=b"", cipher_suite=0x1301, group=m.X25519, key_share=b"", psk_identity=None
        )
    )
    assert retry.is_retry and retry.group == m.X25519 and retry.key_share == b""


def test_other_messages_round_trip() -> None:
    ee = m.decode_encrypted_extensions(m.encode_encrypted_extensions(alpn=b"x", early_data=True, transport_parameters=b"t"))
    assert (ee.alpn, ee.early_data, ee.transport_parameters) == (b"x", True, b"t")
    assert ee.client_cert_type == ee.server_cert_type == m.RAW_PUBLIC_KEY
    assert m.decode_certificate_request(m.encode_certificate_request()) == (b"", [m.ED25519])
    assert m.decode_certificate(m.encode_certificate(b"spki")) == (b"", [b"spki"])
    assert m.decode_certificate_verify(m.encode_certificate_verify(b"sig")) == (m.ED25519, b"sig")
    nst = m.NewSessionTicket(lifetime=5, age_add=7, nonce=b"n", ticket=b"t", max_early_data_size=0xFFFFFFFF)
    assert m.decode_new_session_ticket(m.encode_new_session_ticket(nst)) == nst


def test_duplicate_extension_is_illegal_parameter() -> None:
    hello = m.encode_encrypted_extensions(alpn=b"x", early_data=False, transport_parameters=b"t")
    body = hello[6:]  # the extensions, after type, length and the extensions' own length
    doubled = body + body[-(4 + 1) :]  # repeat the last extension (transport parameters, 1 byte)
    message = m.frame(m.ENCRYPTED_EXTENSIONS, len(doubled).to_bytes(2, "big") + doubled)
    with pytest.raises(TlsDecodeError) as info:
        m.decode_encrypted_extensions(message)
    assert info.value.error_code == 0x100 + 47


# -- fuzzing ---------------------------------------------------------------------------

DECODERS: list[Callable[[bytes], object]] = [
    m.decode_client_hello,
    m.decode_server_hello,
    m.decode_encrypted_extensions,
    m.decode_certificate_request,
    m.decode_certificate,
    m.decode_certificate_verify,
    m.decode_new_session_ticket,
    lambda data: m.decode_finished(data, 32),
]
MESSAGE_TYPES = [m.CLIENT_HELLO, m.SERVER_HELLO, m.ENCRYPTED_EXTENSIONS, m.CERTIFICATE_REQUEST, m.CERTIFICATE,
                 m.CERTIFICATE_VERIFY, m.NEW_SESSION_TICKET, m.FINISHED]


def _framed(draw_type: int, body: bytes) -> bytes:
    return m.frame(draw_type, body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(DECODERS))), st.binary(max_size=300), st.booleans())
def test_decoders_raise_only_decode_errors(index: int, body: bytes, framed: bool) -> None:
    data = _framed(MESSAGE_TYPES[index], body) if framed else body
    try:
        DECODERS[index](data)
    except TlsDecodeError:
        pass


def _real_flights() -> tuple[bytes, list[tuple[int, bytes]]]:
    """A ClientHello with a PSK and the server's answer to it."""
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket)
    client.start()
    ((_, hello),) = client.take_output()
    server = ours_server(SERVER_SECRET)
    server.receive(0, hello)
    return hello, server.take_output()


HELLO, SERVER_FLIGHT = _real_flights()


def _mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
    position %= len(data)
    mutated = data[:position] + bytes([value]) + data[position + 1 :]
    return mutated[: len(mutated) - cut] if cut else mutated


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 8))
def test_mutated_client_hello_yields_a_typed_error_and_no_state(position: int, value: int, cut: int) -> None:
    hello = _mutate(HELLO, position, value, cut)
    server = ours_server(SERVER_SECRET, tickets=TicketStore())
    try:
        m.decode_client_hello(hello)
        parses = True
    except TlsDecodeError:
        parses = False
    try:
        server.receive(0, hello)
    except QuicError:
        pass
    if not parses:
        assert server._schedule is None and server._transcript is None and not server.take_output()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_server_fed_garbage_raises_only_quic_errors(data: bytes) -> None:
    server = ours_server(SERVER_SECRET, tickets=TicketStore())
    try:
        server.receive(0, data)
    except QuicError:
        pass
    assert server._schedule is None or server._transcript is not None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 8))
def test_client_fed_a_mutated_server_flight_raises_only_quic_errors(
    which: int, position: int, value: int, cut: int
) -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    client.start()
    client.take_output()
    flight = list(SERVER_FLIGHT)
    index = which % len(flight)
    epoch, data = flight[index]
    flight[index] = (epoch, _mutate(data, position, value, cut))
    try:
        for epoch, data in flight:
            client.receive(epoch, data)
    except QuicError:
        pass
    assert not client.complete  # this flight belongs to another client's hello


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_client_fed_garbage_raises_only_quic_errors(data: bytes) -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    client.start()
    try:
        client.receive(0, data)
    except QuicError:
        pass
