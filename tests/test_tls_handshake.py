"""irohpy.tls.handshake: iroh's TLS 1.3 subset, against itself and against IrohTlsContext (aioquic).

Every handshake runs message by message in memory through :func:`tls_peers.pump`; both ends
must install the same secrets. Interop with Rust (rustls) comes with the QUIC engine, which is
what carries these messages to a real iroh peer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import QuicError, TlsDecodeError, TlsError
from irohpy.quic.crypto import AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256
from irohpy.tls import messages as m
from irohpy.tls.handshake import ClientHandshake, ServerHandshake
from irohpy.tls.resumption import TicketStore
from tests.tls_peers import aioquic_client, aioquic_server, ours_client, ours_server, pump

CLIENT_SECRET = bytes([1]) * 32
SERVER_SECRET = bytes([2]) * 32
OTHER_SECRET = bytes([3]) * 32

BAD_CERTIFICATE = 0x100 + 42
CERTIFICATE_REQUIRED = 0x100 + 116
NO_APPLICATION_PROTOCOL = 0x100 + 120
HANDSHAKE_FAILURE = 0x100 + 40
DECRYPT_ERROR = 0x100 + 51


def public(secret: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


CLIENT_ID = public(CLIENT_SECRET)
SERVER_ID = public(SERVER_SECRET)
OTHER_ID = public(OTHER_SECRET)

CLIENTS: dict[str, Callable[..., Any]] = {"ours": ours_client, "aioquic": aioquic_client}
SERVERS: dict[str, Callable[..., Any]] = {"ours": ours_server, "aioquic": aioquic_server}
PAIRS = [("ours", "ours"), ("ours", "aioquic"), ("aioquic", "ours")]


def secrets_match(client_keys: list[Any], server_keys: list[Any]) -> dict[tuple[int, bool], bytes]:
    """Each client key equals the server key of the same epoch and opposite direction."""
    client = {(epoch, send): (suite, secret) for epoch, send, suite, secret in client_keys}
    server = {(epoch, not send): (suite, secret) for epoch, send, suite, secret in server_keys}
    assert client == server
    return {key: secret for key, (_, secret) in client.items()}


def store_for(kind: str) -> Any:
    return TicketStore() if kind == "ours" else {}


def server(kind: str, store: Any, **kwargs: Any) -> Any:
    return ours_server(SERVER_SECRET, tickets=store, **kwargs) if kind == "ours" else aioquic_server(
        SERVER_SECRET, ticket_store=store, **kwargs
    )


def client_tickets(client: Any) -> list[Any]:
    return client.take_tickets() if isinstance(client, ClientHandshake) else client.tickets


# -- full handshakes -------------------------------------------------------------------


@pytest.mark.parametrize(("client_kind", "server_kind"), PAIRS)
def test_full_handshake_authenticates_both_and_agrees_on_secrets(client_kind: str, server_kind: str) -> None:
    client = CLIENTS[client_kind](CLIENT_SECRET, SERVER_ID)
    srv = server(server_kind, store_for(server_kind))
    client_keys, server_keys = pump(client, srv)
    assert client.complete and srv.complete
    assert client.peer_id == SERVER_ID and srv.peer_id == CLIENT_ID
    assert client.alpn == srv.alpn == b"irohpy/test/0"
    assert client.peer_transport_parameters == b"server-tp"
    assert srv.peer_transport_parameters == b"client-tp"
    secrets = secrets_match(client_keys, server_keys)
    assert set(secrets) == {(2, True), (2, False), (3, True), (3, False)}


@pytest.mark.parametrize(("client_kind", "server_kind"), PAIRS)
def test_client_rejects_a_server_that_is_not_the_pinned_key(client_kind: str, server_kind: str) -> None:
    client = CLIENTS[client_kind](CLIENT_SECRET, OTHER_ID)
    with pytest.raises(QuicError) as info:
        pump(client, server(server_kind, store_for(server_kind)))
    assert info.value.error_code == BAD_CERTIFICATE
    assert not client.complete


@pytest.mark.parametrize("client_kind", ["ours", "aioquic"])
def test_server_with_expected_peer_rejects_another_client(client_kind: str) -> None:
    client = CLIENTS[client_kind](OTHER_SECRET, SERVER_ID)
    srv = ours_server(SERVER_SECRET, expected_peer=CLIENT_ID)
    with pytest.raises(QuicError) as info:
        pump(client, srv)
    assert info.value.error_code == BAD_CERTIFICATE
    assert srv.peer_id is None


def test_server_requires_a_client_certificate() -> None:
    client = aioquic_client(CLIENT_SECRET, SERVER_ID, send_certificate=False)
    srv = ours_server(SERVER_SECRET)
    with pytest.raises(QuicError) as info:
        pump(client, srv)
    assert info.value.error_code == CERTIFICATE_REQUIRED
    assert not srv.complete


@pytest.mark.parametrize(("client_kind", "server_kind"), PAIRS)
def test_alpn_mismatch_is_no_application_protocol(client_kind: str, server_kind: str) -> None:
    client = CLIENTS[client_kind](CLIENT_SECRET, SERVER_ID, alpns=[b"one"])
    srv = SERVERS[server_kind](SERVER_SECRET, alpns=[b"two"])
    with pytest.raises(QuicError) as info:
        pump(client, srv)
    assert info.value.error_code == NO_APPLICATION_PROTOCOL


def test_server_picks_its_preferred_alpn_among_the_clients() -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID, alpns=[b"a", b"b", b"c"])
    srv = ours_server(SERVER_SECRET, alpns=[b"c", b"b"])
    pump(client, srv)
    assert client.alpn == srv.alpn == b"c"


@pytest.mark.parametrize("suite", [AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256])
@pytest.mark.parametrize(("client_kind", "server_kind"), [("ours", "ours"), ("ours", "aioquic")])
def test_every_cipher_suite(suite: int, client_kind: str, server_kind: str) -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID, cipher_suites=[suite])
    client_keys, server_keys = pump(client, server(server_kind, store_for(server_kind)))
    assert client.complete and client.cipher_suite == suite
    assert {k[2] for k in client_keys} == {suite}
    secrets_match(client_keys, server_keys)


def test_hello_retry_request_when_the_client_sends_no_usable_share() -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID, send_key_share=False)
    srv = ours_server(SERVER_SECRET)
    client_keys, server_keys = pump(client, srv)
    assert client.complete and srv.complete and srv.peer_id == CLIENT_ID
    secrets_match(client_keys, server_keys)


def test_client_refuses_a_retry_for_the_group_it_already_sent() -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    client.start()
    retry = m.encode_server_hello(
        random=m.HRR_RANDOM, session_id=b"", cipher_suite=0x1301, group=m.X25519, key_share=b"", psk_identity=None
    )
    with pytest.raises(QuicError) as info:
        client.receive(0, retry)
    assert info.value.error_code == 0x100 + 47


def test_server_without_common_group_fails_cleanly() -> None:
    hello = m.encode_client_hello(
        random=bytes(32), cipher_suites=[0x1301], key_shares=[(23, b"\x04" + bytes(64))],
        alpns=[b"irohpy/test/0"], transport_parameters=b"tp",
    ).replace(m.X25519.to_bytes(2, "big") + b"\x00\x33", (23).to_bytes(2, "big") + b"\x00\x33")
    srv = ours_server(SERVER_SECRET)
    with pytest.raises(QuicError) as info:
        srv.receive(0, hello)
    assert info.value.error_code == HANDSHAKE_FAILURE
    assert not srv.take_output()


# -- resumption and 0-RTT ---------------------------------------------------------------


@pytest.mark.parametrize(("client_kind", "server_kind"), PAIRS)
def test_resumption_and_early_data_with_a_ticket_from_the_other_implementation(
    client_kind: str, server_kind: str
) -> None:
    store = store_for(server_kind)
    first = CLIENTS[client_kind](CLIENT_SECRET, SERVER_ID)
    pump(first, server(server_kind, store))
    tickets = client_tickets(first)
    assert len(tickets) == 1

    client = CLIENTS[client_kind](CLIENT_SECRET, SERVER_ID, ticket=tickets[0])
    srv = server(server_kind, store)
    client_keys, server_keys = pump(client, srv)
    assert client.complete and srv.complete
    assert client.session_resumed and srv.session_resumed
    assert client.early_data_accepted and srv.early_data_accepted
    assert client.peer_id == SERVER_ID and srv.peer_id == CLIENT_ID
    assert srv.peer_transport_parameters == b"client-tp"
    secrets = secrets_match(client_keys, server_keys)
    assert (1, True) in secrets  # the 0-RTT key, installed on both ends


def test_a_ticket_is_single_use() -> None:
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    second = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket)
    pump(second, ours_server(SERVER_SECRET, tickets=store))
    assert second.session_resumed
    replay = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket)
    srv = ours_server(SERVER_SECRET, tickets=store)
    pump(replay, srv)
    assert replay.complete and not replay.session_resumed and not srv.early_data_accepted
    assert srv.peer_id == CLIENT_ID


def test_a_ticket_for_another_peer_is_not_offered() -> None:
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, OTHER_ID, ticket=ticket)
    with pytest.raises(QuicError) as info:
        pump(client, ours_server(SERVER_SECRET, tickets=store))
    assert info.value.error_code == BAD_CERTIFICATE
    assert len(store) == 1  # the ticket was never presented, so never consumed


def test_server_with_expected_peer_ignores_another_clients_ticket() -> None:
    store = TicketStore()
    first = ours_client(OTHER_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(OTHER_SECRET, SERVER_ID, ticket=ticket)
    with pytest.raises(QuicError) as info:
        pump(client, ours_server(SERVER_SECRET, tickets=store, expected_peer=CLIENT_ID))
    assert info.value.error_code == BAD_CERTIFICATE


def test_resumption_after_hello_retry_request_drops_early_data() -> None:
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket, send_key_share=False)
    srv = ours_server(SERVER_SECRET, tickets=store)
    client_keys, server_keys = pump(client, srv)
    assert client.session_resumed and srv.session_resumed
    assert not client.early_data_accepted and not srv.early_data_accepted
    assert srv.peer_id == CLIENT_ID
    secrets_match([k for k in client_keys if k[0] != 1], server_keys)


def test_ticket_of_another_suite_is_not_resumed_after_hello_retry_request() -> None:
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID, cipher_suites=[CHACHA20_POLY1305_SHA256])
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket, send_key_share=False)
    srv = ours_server(SERVER_SECRET, tickets=store)
    client_keys, server_keys = pump(client, srv)
    assert client.complete and not client.session_resumed and srv.peer_id == CLIENT_ID
    assert client.cipher_suite == srv.cipher_suite != CHACHA20_POLY1305_SHA256
    secrets_match([k for k in client_keys if k[0] != 1], server_keys)


def test_forged_binder_is_decrypt_error() -> None:
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket)
    client.start()
    ((_, hello),) = client.take_output()
    forged = hello[:-1] + bytes([hello[-1] ^ 1])
    with pytest.raises(QuicError) as info:
        ours_server(SERVER_SECRET, tickets=store).receive(0, forged)
    assert info.value.error_code == DECRYPT_ERROR


def test_early_data_not_accepted_when_the_server_disables_it() -> None:
    store = TicketStore()
    first = ours_client(CLIENT_SECRET, SERVER_ID)
    pump(first, ours_server(SERVER_SECRET, tickets=store))
    (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket)
    srv = ours_server(SERVER_SECRET, tickets=store, early_data=False)
    pump(client, srv)
    assert client.session_resumed and not client.early_data_accepted and not srv.early_data_accepted


def test_ticket_store_is_bounded() -> None:
    store = TicketStore(capacity=2)
    for _ in range(3):
        pump(ours_client(CLIENT_SECRET, SERVER_ID), ours_server(SERVER_SECRET, tickets=store))
    assert len(store) == 2


# -- delivery, misuse, secrets ------------------------------------------------------------


def test_crypto_bytes_may_arrive_one_at_a_time() -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    srv = ours_server(SERVER_SECRET)
    client.start()
    for _ in range(4):
        for src, dst in ((client, srv), (srv, client)):
            for epoch, data in src.take_output():
                for i in range(len(data)):
                    dst.receive(epoch, data[i : i + 1])
    assert client.complete and srv.complete


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=20), st.booleans())
def test_any_chunking_of_crypto_data_completes(chunks: list[int], resume: bool) -> None:
    store = TicketStore()
    ticket = None
    if resume:
        first = ours_client(CLIENT_SECRET, SERVER_ID)
        pump(first, ours_server(SERVER_SECRET, tickets=store))
        (ticket,) = first.take_tickets()
    client = ours_client(CLIENT_SECRET, SERVER_ID, ticket=ticket)
    srv = ours_server(SERVER_SECRET, tickets=store)
    client.start()
    sizes = itertools.cycle(chunks)
    for _ in range(4):
        for src, dst in ((client, srv), (srv, client)):
            for epoch, data in src.take_output():
                while data:
                    size = next(sizes)
                    dst.receive(epoch, data[:size])
                    data = data[size:]
    assert client.complete and srv.complete and client.session_resumed == resume


def test_data_in_the_wrong_epoch_is_unexpected_message() -> None:
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    client.start()
    ((_, hello),) = client.take_output()
    srv = ours_server(SERVER_SECRET)
    with pytest.raises(QuicError) as info:
        srv.receive(2, hello)
    assert info.value.error_code == 0x100 + 10


def test_an_oversized_message_is_refused_before_it_is_buffered() -> None:
    srv = ours_server(SERVER_SECRET)
    with pytest.raises(TlsDecodeError):
        srv.receive(0, b"\x01\xff\xff\xff")


def test_a_failed_handshake_stays_failed() -> None:
    srv = ours_server(SERVER_SECRET)
    with pytest.raises(QuicError) as first:
        srv.receive(0, b"\x01\x00\x00\x01\x00")
    with pytest.raises(QuicError) as again:
        srv.receive(0, b"")
    assert again.value is first.value


def test_configuration_errors_are_tls_errors() -> None:
    with pytest.raises(TlsError):
        ClientHandshake(CLIENT_SECRET, alpns=[], transport_parameters=b"", expected_peer=SERVER_ID)
    with pytest.raises(TlsError):
        ClientHandshake(CLIENT_SECRET, alpns=b"one", transport_parameters=b"", expected_peer=SERVER_ID)
    with pytest.raises(TlsError):
        ServerHandshake(SERVER_SECRET, alpns=[b""], transport_parameters=b"")
    with pytest.raises(TlsError):
        ClientHandshake(CLIENT_SECRET, alpns=[b"a"], transport_parameters=b"", expected_peer=b"short")
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    client.start()
    with pytest.raises(TlsError):
        client.start()


def test_secrets_stay_out_of_reprs() -> None:
    store = TicketStore()
    client = ours_client(CLIENT_SECRET, SERVER_ID)
    srv = ours_server(SERVER_SECRET, tickets=store)
    client_keys, _ = pump(client, srv)
    (ticket,) = client.take_tickets()
    texts = [repr(client), repr(srv), repr(ticket), repr(client._schedule), repr(list(store._sessions.values()))]
    secrets = [k[3] for k in client_keys] + [ticket.resumption_secret, ticket.ticket]
    for text in texts:
        for secret in secrets:
            assert secret.hex() not in text and repr(secret) not in text
