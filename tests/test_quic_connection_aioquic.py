"""irohpy's QUIC connection against aioquic's, in memory and in simulated time, both ways round.

aioquic is the independent second implementation. Both ends speak iroh's TLS (raw Ed25519
keys, mutual auth): aioquic through irohpy's IrohQuicConnection (aioquic's TLS), ours through
irohpy's own TLS, so every test is also TLS interop; that includes resumption and 0-RTT. One
test runs plain X.509 instead, with aioquic's TLS behind our Handshake protocol.
"""

from __future__ import annotations

import ssl
from typing import cast

import pytest
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioConnection

from irohpy.quic import connection as qc
from irohpy.quic.handshake import iroh_handshake
from irohpy.tls import quic_configuration
from irohpy.tls.connection import IrohQuicConnection
from irohpy.tls.resumption import TicketCache, TicketStore
from tests.aioquic_handshake import TlsHandshake
from tests.quic_conn_sim import (
    ALPN,
    CLIENT_ID,
    CLIENT_SECRET,
    SERVER_ID,
    SERVER_SECRET,
    End,
    Link,
    Net,
    Ours,
    Theirs,
    aioquic_client,
    aioquic_server,
    our_client,
    our_server,
)
from tests.test_quic_aioquic_wire import _certificate
from tests.test_quic_connection import EcnMarking, pattern, retry_for

PAIRS = ["ours-to-aioquic", "aioquic-to-ours"]


def pair(kind: str, link: Link, seed: int = 1) -> tuple[End, End, Net]:
    if kind == "ours-to-aioquic":
        client: End = our_client()
        server: End = aioquic_server()
    else:
        client = aioquic_client()
        server = our_server()
    net = Net(client, server, link, seed)
    net.run(30.0, lambda: client.handshake_done and server.handshake_done)
    return client, server, net


def open_stream(end: End, uni: bool = False) -> int:
    if isinstance(end, Ours):
        return end.conn.open_stream(uni)
    return cast(Theirs, end).conn.get_next_available_stream_id(is_unidirectional=uni)


def send(end: End, sid: int, data: bytes, fin: bool = True) -> None:
    if isinstance(end, Ours):
        end.conn.send_stream_data(sid, data, fin)
    else:
        cast(Theirs, end).conn.send_stream_data(sid, data, fin)


def datagram(end: End, data: bytes) -> None:
    if isinstance(end, Ours):
        end.conn.send_datagram(data)
    else:
        cast(Theirs, end).conn.send_datagram_frame(data)


def close(end: End, code: int, reason: bytes) -> None:
    if isinstance(end, Ours):
        end.conn.close(code, reason)
    else:
        cast(Theirs, end).conn.close(error_code=code, reason_phrase=reason.decode())


@pytest.mark.parametrize("kind", PAIRS)
def test_handshake_authenticates_both_ends(kind: str) -> None:
    client, server, _ = pair(kind, Link())
    assert client.alpn == server.alpn == b"irohpy/test/0"
    ours, theirs = (client, server) if isinstance(client, Ours) else (server, client)
    assert isinstance(ours, Ours) and isinstance(theirs, Theirs)
    assert ours.peer_id == (SERVER_ID if ours is client else CLIENT_ID)
    assert cast(IrohQuicConnection, theirs.conn).peer_id == (CLIENT_ID if ours is client else SERVER_ID)


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_streams_and_datagrams_both_ways(kind: str, loss: float) -> None:
    client, server, net = pair(kind, Link(loss=loss, reorder=loss), seed=7)
    up = pattern(1_500_000, 1)
    down = pattern(700_000, 2)
    sid = open_stream(client)
    send(client, sid, up)
    uni = open_stream(server, uni=True)
    send(server, uni, down)
    many = []
    for i in range(50):
        s = open_stream(client)
        send(client, s, pattern(3000, 100 + i))
        many.append(s)
    for i in range(10):
        datagram(client, b"up %d" % i)
        datagram(server, b"down %d" % i)
    net.run(
        300.0, lambda: sid in server.finished and uni in client.finished and all(s in server.finished for s in many)
    )
    assert bytes(server.streams[sid]) == up
    assert bytes(client.streams[uni]) == down
    for i, s in enumerate(many):
        assert bytes(server.streams[s]) == pattern(3000, 100 + i)
    send(server, sid, b"reply")
    net.run(60.0, lambda: sid in client.finished)
    assert bytes(client.streams[sid]) == b"reply"
    assert set(server.datagrams) <= {b"up %d" % i for i in range(10)}
    assert set(client.datagrams) <= {b"down %d" % i for i in range(10)}
    if loss == 0.0:
        assert len(server.datagrams) == 10 and len(client.datagrams) == 10


@pytest.mark.parametrize("kind", PAIRS)
def test_application_close_codes_cross(kind: str) -> None:
    client, server, net = pair(kind, Link())
    close(client, 0x33, b"done")
    net.run(10.0, lambda: server.terminated is not None)
    assert server.terminated is not None and server.terminated[0] == 0x33
    assert server.terminated[1] == b"done"


@pytest.mark.parametrize("kind", PAIRS)
def test_key_updates_cross(kind: str) -> None:
    client, server, net = pair(kind, Link())
    net.run(2.0, lambda: False if isinstance(client, Ours) and not client.conn._confirmed else True)
    data = pattern(1_000_000, 9)
    sid = open_stream(client)
    send(client, sid, data)
    net.run(10.0, lambda: len(server.streams.get(sid, b"")) > 100_000)
    ours = client if isinstance(client, Ours) else server
    theirs = server if ours is client else client
    assert isinstance(ours, Ours) and isinstance(theirs, Theirs)
    ours.conn.request_key_update()
    net.run(10.0, lambda: ours.conn._key_update_allowed)
    net.run(10.0, lambda: len(server.streams[sid]) > 500_000)
    net.run(60.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data
    theirs.conn.request_key_update()
    more = open_stream(client)
    send(client, more, pattern(300_000, 10))
    net.run(60.0, lambda: more in server.finished)
    send(server, more, b"ok")
    net.run(60.0, lambda: more in client.finished)
    assert bytes(server.streams[more]) == pattern(300_000, 10)
    assert ours.conn.key_phase == 0  # two updates: one from each side


def test_our_client_rejects_an_aioquic_server_with_another_key() -> None:
    client = our_client(expected=CLIENT_ID)
    server = aioquic_server()
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.terminated is not None and server.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == 0x100 + 42
    assert server.terminated is not None and server.terminated[0] == 0x100 + 42


def test_idle_timeout_against_aioquic() -> None:
    client = our_client(qc.QuicConfig(is_client=True, idle_timeout=3.0))
    server = aioquic_server()
    net = Net(client, server, Link(), 1)
    net.run(60.0, lambda: client.terminated is not None and server.terminated is not None)
    assert client.terminated is not None and client.terminated[2] == qc.CAUSE_IDLE


def test_aioquic_client_follows_our_retry_to_our_server() -> None:
    client = aioquic_client()
    [first] = client.send(0.0)
    retry, original, retry_scid = retry_for(first)
    client.receive(retry, 0.01)
    server = Ours(
        qc.QuicConnection(
            qc.QuicConfig(is_client=False),
            iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]),
            original_dcid=original,
            retry_scid=retry_scid,
        )
    )
    net = Net(client, server, Link(), 1)
    net.now = 0.01
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    sid = open_stream(client)
    send(client, sid, b"after retry")
    net.run(10.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == b"after retry"


def test_our_client_follows_a_retry_to_an_aioquic_server() -> None:
    client = our_client()
    [first] = client.send(0.0)
    retry, original, retry_scid = retry_for(first)
    client.receive(retry, 0.01)
    config = quic_configuration(SERVER_SECRET, is_client=False, alpns=[ALPN])
    server = Theirs(
        lambda dcid: IrohQuicConnection(
            configuration=config,
            original_destination_connection_id=original,
            retry_source_connection_id=retry_scid,
        ),
        ("127.0.0.1", 1111),
    )
    net = Net(client, server, Link(), 1)
    net.now = 0.01
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert client.terminated is None and server.terminated is None


def test_plain_x509_tls_context_behind_the_same_interface() -> None:
    """The Handshake adapter is not tied to iroh's TLS: aioquic's X.509 context runs too."""
    cert, key = _certificate()
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["x509"])
    server_config.certificate = cert
    server_config.private_key = key
    server = Theirs(
        lambda dcid: AioConnection(configuration=server_config, original_destination_connection_id=dcid),
        ("127.0.0.1", 1111),
    )
    context = tls.Context(is_client=True, alpn_protocols=["x509"], verify_mode=ssl.CERT_NONE, server_name="localhost")
    conn = qc.QuicConnection(qc.QuicConfig(is_client=True), TlsHandshake(context))
    conn.connect(("127.0.0.1", 2222), 0.0)
    client = Ours(conn)
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert client.alpn == b"x509" and client.peer_id is None
    sid = conn.open_stream()
    conn.send_stream_data(sid, b"over x509", end_stream=True)
    net.run(10.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == b"over x509"


def test_aioquic_reads_our_ack_ecn_frames() -> None:
    client = aioquic_client()
    server = EcnMarking(our_server().conn)
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    sid = open_stream(client)
    send(client, sid, pattern(500_000, 3))
    net.run(30.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == pattern(500_000, 3)
    assert server.conn.path.ack.ect0 > 0 and client.terminated is None


def test_aioquic_client_resumes_with_zero_rtt_against_our_server() -> None:
    store = TicketStore()
    tickets: list[tls.SessionTicket] = []

    def aio_client(ticket: tls.SessionTicket | None) -> Theirs:
        config = quic_configuration(
            CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, session_ticket=ticket
        )
        conn = IrohQuicConnection(configuration=config, expected_peer=SERVER_ID, session_ticket_handler=tickets.append)
        conn.connect(("127.0.0.1", 2222), now=0.0)
        return Theirs(conn, ("127.0.0.1", 2222))

    client, server = aio_client(None), our_server(ticket_store=store)
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done and bool(tickets))
    client, server = aio_client(tickets[-1]), our_server(ticket_store=store)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_stream_data(sid, b"early from aioquic", end_stream=True)
    net = Net(client, server, Link(), 2)
    net.run(10.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == b"early from aioquic" and not server.handshake_done
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert server.early_data_accepted and server.session_resumed and server.peer_id == CLIENT_ID
    assert client.early_data_accepted and client.session_resumed


def test_our_client_resumes_with_zero_rtt_against_an_aioquic_server() -> None:
    issued: dict[bytes, tls.SessionTicket] = {}
    config = quic_configuration(SERVER_SECRET, is_client=False, alpns=[ALPN])

    def aio_server() -> Theirs:
        return Theirs(
            lambda dcid: IrohQuicConnection(
                configuration=config,
                original_destination_connection_id=dcid,
                session_ticket_fetcher=issued.pop,
                session_ticket_handler=lambda t: issued.__setitem__(t.ticket, t),
            ),
            ("127.0.0.1", 1111),
        )

    cache = TicketCache()
    client, server = our_client(ticket_cache=cache), aio_server()
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done and len(cache) > 0)
    client, server = our_client(ticket_cache=cache), aio_server()
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, b"early from irohpy", end_stream=True)
    assert client.conn.early_data_state == qc.EARLY_DATA_ATTEMPTED
    net = Net(client, server, Link(), 2)
    net.run(10.0, lambda: sid in server.finished and client.handshake_done and server.handshake_done)
    assert bytes(server.streams[sid]) == b"early from irohpy"
    assert client.early_data_accepted and client.session_resumed and client.peer_id == SERVER_ID
    assert server.early_data_accepted and server.session_resumed
