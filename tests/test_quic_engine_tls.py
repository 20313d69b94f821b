"""The QUIC connection core on irohpy's own TLS 1.3: handshakes, resumption and 0-RTT.

Both ends are ``irohpy.quic`` connections with :func:`~irohpy.quic.handshake.iroh_handshake`,
joined by the seeded simulated link of ``tests/quic_conn_sim.py`` (10 ms each way), so every
time below is simulated and every run is the same. The rest of the connection tests
(key update, loss, streams, Retry...) run on the same handshake through ``our_client`` and
``our_server``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irohpy.errors import IrohError, TlsError
from irohpy.quic import connection as qc
from irohpy.quic import frames as F
from irohpy.quic.handshake import Handshake, IrohHandshake, iroh_handshake
from irohpy.quic.packet import PACKET_ZERO_RTT, build_long_header, seal_packet
from irohpy.quic.recovery import APPLICATION, HANDSHAKE, INITIAL
from irohpy.tls.resumption import TicketCache, TicketStore
from tests.quic_conn_sim import (
    ALPN,
    CLIENT_ID,
    CLIENT_SECRET,
    SERVER_ID,
    SERVER_SECRET,
    Link,
    Net,
    Ours,
    our_client,
    our_server,
)
from tests.test_quic_connection import pattern
from tests.test_quic_connection_fuzz import FRAMES, feed, seal_long, settle

ONE_WAY = Link().delay


def connect(
    cache: TicketCache,
    store: TicketStore,
    *,
    link: Link | None = None,
    seed: int = 1,
    early_data: bool = True,
    server_config: qc.QuicConfig | None = None,
) -> tuple[Ours, Ours, Net]:
    client = our_client(ticket_cache=cache)
    server = our_server(server_config, ticket_store=store, early_data=early_data)
    return client, server, Net(client, server, link or Link(), seed)


def first_session(cache: TicketCache, store: TicketStore) -> None:
    """A full handshake that leaves the client a ticket."""
    client, server, net = connect(cache, store)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done and len(cache) == 1)
    assert not client.session_resumed and not server.session_resumed


# -- full handshakes ---------------------------------------------------------------


def test_full_handshake_authenticates_both_raw_public_keys() -> None:
    client, server = our_client(), our_server()
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert client.peer_id == SERVER_ID and server.peer_id == CLIENT_ID
    assert client.alpn == server.alpn == ALPN
    assert isinstance(client.conn._handshake, IrohHandshake)
    assert not client.session_resumed and not client.early_data_accepted
    assert client.conn.early_data_state == server.conn.early_data_state == qc.EARLY_DATA_NONE
    # Client Initial, server Initial + Handshake, client Finished: three one-way trips.
    assert net.now < 3.5 * ONE_WAY


def test_wrong_expected_peer_closes_with_bad_certificate() -> None:
    client, server = our_client(expected=CLIENT_ID), our_server()
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.terminated is not None and server.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == 0x100 + 42
    assert server.terminated is not None and server.terminated[0] == 0x100 + 42
    assert server.terminated[2] == qc.CAUSE_PEER and not server.handshake_done


def test_alpn_mismatch_closes_with_no_application_protocol() -> None:
    client, server = our_client(), our_server(alpns=[b"other/0"])
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.terminated is not None and server.terminated is not None)
    assert server.terminated is not None and server.terminated[0] == 0x100 + 120
    assert server.terminated[2] == qc.CAUSE_LOCAL
    assert client.terminated is not None and client.terminated[0] == 0x100 + 120


def test_hello_retry_request_costs_one_round_trip_and_completes() -> None:
    handshake = IrohHandshake(
        CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, send_key_share=False
    )
    client, server = our_client(handshake=handshake), our_server()
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert client.peer_id == SERVER_ID and server.peer_id == CLIENT_ID
    assert 4.5 * ONE_WAY < net.now < 5.5 * ONE_WAY


def test_iroh_handshake_checks_its_arguments() -> None:
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[], expected_peer=SERVER_ID)
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN])
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=ALPN, expected_peer=SERVER_ID)
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, ticket_store=TicketStore())
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=False, alpns=[ALPN], ticket_cache=TicketCache())
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=False, alpns=[b"x" * 256])
    with pytest.raises(TlsError):
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID[:31])


def test_the_engine_loads_no_aioquic() -> None:
    code = (
        "import sys, irohpy.quic.connection, irohpy.quic.handshake, irohpy.tls.handshake;"
        "assert 'aioquic' not in sys.modules, sorted(m for m in sys.modules if 'aioquic' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- resumption and 0-RTT -------------------------------------------------------------


def test_zero_rtt_is_accepted_and_answered_before_the_handshake_completes() -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    client, server, net = connect(cache, store)
    request = pattern(3000, 1)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, request, end_stream=True)
    client.conn.send_datagram(b"early datagram")
    assert client.conn.early_data_state == qc.EARLY_DATA_ATTEMPTED
    net.run(10.0, lambda: sid in server.finished)
    # The request arrived in 0-RTT packets, before the client's Finished.
    assert bytes(server.streams[sid]) == request and not server.handshake_done
    assert server.datagrams == [b"early datagram"]
    assert server.conn.early_data_accepted
    server.conn.send_stream_data(sid, b"answer", end_stream=True)  # 0.5-RTT
    net.run(10.0, lambda: sid in client.finished)
    assert bytes(client.streams[sid]) == b"answer"
    # Request and answer took one round trip, as a resumed connection promises.
    assert net.now < 2.5 * ONE_WAY
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    for end in (client, server):
        assert end.early_data_accepted and end.session_resumed
        assert end.conn.early_data_accepted and end.conn.session_resumed
    assert client.peer_id == SERVER_ID and server.peer_id == CLIENT_ID
    # The resumed connection issued a fresh ticket; the used one is gone from both sides.
    net.run(10.0, lambda: len(cache) == 1)
    assert len(store) == 1


def test_a_replayed_ticket_rejects_zero_rtt_and_the_data_goes_again_as_one_rtt() -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    ticket = cache.take(SERVER_ID, [ALPN], time.time())
    assert ticket is not None
    cache.put(ticket)
    client, server, net = connect(cache, store, seed=2)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert client.early_data_accepted  # the ticket's first use
    cache.put(ticket)  # an attacker's (or a careless client's) second use
    client, server, net = connect(cache, store, seed=3)
    data = pattern(50_000, 2)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, data, end_stream=True)
    net.run(10.0, lambda: sid in server.finished and client.handshake_done)
    assert bytes(server.streams[sid]) == data
    assert client.conn.early_data_state == qc.EARLY_DATA_REJECTED and not client.early_data_accepted
    assert not server.conn.early_data_accepted
    # The single-use store found no session: a full handshake authenticated the client again.
    assert not client.session_resumed and server.peer_id == CLIENT_ID


def test_a_server_without_early_data_resumes_but_rejects_zero_rtt() -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    client, server, net = connect(cache, store, early_data=False)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, b"early", end_stream=True)
    net.run(10.0, lambda: sid in server.finished and client.handshake_done and server.handshake_done)
    assert bytes(server.streams[sid]) == b"early"
    assert client.session_resumed and server.session_resumed
    assert client.conn.early_data_state == qc.EARLY_DATA_REJECTED
    assert server.peer_id == CLIENT_ID


def test_a_server_whose_limits_shrank_rejects_zero_rtt() -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    client, server, net = connect(cache, store, server_config=qc.QuicConfig(is_client=False, conn_window=1 << 20))
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, b"early", end_stream=True)
    net.run(10.0, lambda: sid in server.finished and client.handshake_done)
    assert client.session_resumed and client.conn.early_data_state == qc.EARLY_DATA_REJECTED
    assert bytes(server.streams[sid]) == b"early"


class AcceptsAnyway:
    """A server handshake that accepts 0-RTT whatever its limits: breaks RFC 9000 §7.4.1.

    It wraps an IrohHandshake rather than subclassing it: the compiled build's classes take
    no Python subclasses.
    """

    def __init__(self, inner: IrohHandshake) -> None:
        self._inner = inner

    def start(self, transport_parameters: bytes) -> None:
        self._inner.start(transport_parameters)
        assert self._inner._tls is not None
        self._inner._tls._early_data_check = None  # type: ignore[union-attr]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_server_that_lowers_its_limits_after_accepting_zero_rtt_is_refused() -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    client = our_client(ticket_cache=cache)
    handshake = AcceptsAnyway(
        IrohHandshake(SERVER_SECRET, is_client=False, alpns=[ALPN], expected_peer=None, ticket_store=store)
    )
    server = Ours(qc.QuicConnection(qc.QuicConfig(is_client=False, conn_window=1 << 20), cast(Handshake, handshake)))
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == 0x0A  # PROTOCOL_VIOLATION


@pytest.mark.parametrize("loss", [0.05, 0.20])
def test_zero_rtt_over_a_lossy_link_delivers_intact(loss: float) -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    link = Link(loss=loss, reorder=loss, duplicate=loss)
    client, server, net = connect(cache, store, link=link, seed=int(loss * 100))
    data = pattern(200_000, 4)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, data, end_stream=True)
    net.run(300.0, lambda: sid in server.finished and client.handshake_done)
    assert bytes(server.streams[sid]) == data
    assert client.early_data_accepted and client.session_resumed


def test_ticket_cache_is_keyed_by_server_and_alpn_and_single_use() -> None:
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    now = time.time()
    assert cache.take(CLIENT_ID, [ALPN], now) is None
    assert cache.take(SERVER_ID, [b"other/0"], now) is None
    ticket = cache.take(SERVER_ID, [b"other/0", ALPN], now)
    assert ticket is not None and ticket.peer_id == SERVER_ID and ticket.alpn == ALPN
    assert cache.take(SERVER_ID, [ALPN], now) is None
    cache.put(ticket)
    assert cache.take(SERVER_ID, [ALPN], ticket.issued_at + ticket.lifetime) is None  # expired


# -- handshake messages in random pieces ---------------------------------------------


def crypto_bytes(end: Ours, space: int) -> bytes:
    """What ``end`` has queued on ``space``'s CRYPTO stream and not yet sent."""
    stream = end.conn._spaces[space].crypto_send
    assert stream.sent == 0
    return b"".join(bytes(b) for b in stream._bufs)


def crypto_packet(sender: Ours, space: int, offset: int, data: bytes) -> bytes:
    """One CRYPTO frame in a packet of ``sender``'s, padded so that a datagram is 1200 bytes."""
    payload = F.encode_frames([F.Crypto(offset, data)])
    return seal_long(sender, space, payload + bytes(max(0, 1160 - len(payload))))


def pieces(draw: st.DrawFn, data: bytes) -> list[tuple[int, bytes]]:
    """``data`` cut at random offsets, in a random order, some pieces twice."""
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=8))))
    bounds = [0, *cuts, len(data)]
    out = [(a, data[a:b]) for a, b in itertools.pairwise(bounds)]
    out += draw(st.lists(st.sampled_from(out), max_size=3))
    return draw(st.permutations(out))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), corrupt=st.booleans())
def test_handshake_messages_in_random_pieces_complete_or_close_typed(data: st.DataObject, corrupt: bool) -> None:
    """ClientHello and the server's flight cut and shuffled into CRYPTO frames: the handshake
    still completes, and a flipped byte closes with a typed error code; nothing escapes."""
    client, server = our_client(), our_server()
    hello = crypto_bytes(client, INITIAL)
    if corrupt:
        at = data.draw(st.integers(0, len(hello) - 1))
        hello = hello[:at] + bytes([hello[at] ^ data.draw(st.integers(1, 255))]) + hello[at + 1 :]
    for offset, piece in data.draw(st.composite(lambda draw: pieces(draw, hello))()):
        server.receive(crypto_packet(client, INITIAL, offset, piece), 0.01)
        if server.terminated is not None:
            break
    if server.terminated is None and server.conn._spaces[HANDSHAKE].send is not None:
        flight = crypto_bytes(server, HANDSHAKE)
        client.receive(crypto_packet(server, INITIAL, 0, crypto_bytes(server, INITIAL)), 0.02)
        for offset, piece in data.draw(st.composite(lambda draw: pieces(draw, flight))()):
            client.receive(crypto_packet(server, HANDSHAKE, offset, piece), 0.02)
    if not corrupt:
        # Both flights arrived in pieces: the server waits for the client's Finished only.
        assert client.handshake_done and server.conn._half_rtt is not None
    net = Net(client, server, Link(), 1)
    net.now = 0.02
    if not corrupt:
        net.run(10.0, lambda: client.handshake_done and server.handshake_done)
        assert client.peer_id == SERVER_ID and server.peer_id == CLIENT_ID
        return
    # A changed ClientHello changes the transcript: the server refuses it (a typed TLS or
    # transport error) or derives keys the client cannot use, and both ends give up.
    net.run(120.0, lambda: client.terminated is not None and server.terminated is not None)
    assert not (client.handshake_done and server.handshake_done)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(FRAMES, min_size=1, max_size=6))
def test_random_frames_in_genuine_zero_rtt_packets_drop_or_close_typed(frames: list[F.Frame]) -> None:
    """A server that accepted 0-RTT takes any frames in 0-RTT packets without raising."""
    try:
        payload = F.encode_frames(frames)
    except IrohError:
        return
    cache, store = TicketCache(), TicketStore()
    first_session(cache, store)
    client, server, net = connect(cache, store)
    for datagram in client.send(0.0):
        server.receive(datagram, 0.01)
    assert server.conn.early_data_accepted
    zero = client.conn._zero_rtt
    assert zero is not None
    sent = client.conn.recovery.spaces[APPLICATION]
    pn = sent.next_pn
    sent.next_pn = pn + 1
    payload += bytes(max(0, 4 - len(payload)))
    header = build_long_header(
        PACKET_ZERO_RTT, client.conn._peer_cids.cid(), client.conn.host_cids[0], pn, 2, len(payload)
    )
    feed(server, bytes(seal_packet(zero.key, zero.hp, header, payload, pn)), 0.011)
    server._events()
    net.now = 0.011
    settle(client, server, net)
