"""The sans-IO QUIC endpoint: routing, stateless answers and limits, two or more endpoints
wired in memory (tests/quic_endpoint_sim.py) with real TLS and real packet protection."""

from __future__ import annotations

import hashlib
import os

import pytest

from irohpy.quic import connection as qc
from irohpy.quic.connection import QuicConfig
from irohpy.errors import QuicError
from irohpy.quic.endpoint import (
    OFFER_DATAGRAMS,
    EndpointConfig,
    Offer,
    QuicEndpoint,
    Transmit,
    _runs,
    always_retry,
    retry_under_load,
)
from irohpy.quic.packet import (
    PACKET_RETRY,
    PACKET_VERSION_NEGOTIATION,
    build_long_header,
    build_version_negotiation,
    parse_packet,
    split_datagram,
)
from irohpy.tls.keys import private_key, public_key_bytes
from tests.quic_endpoint_sim import ALPN, Link, Sim

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)
C = ("10.0.0.3", 3000)
SECRET_A = bytes(range(32))
SECRET_B = bytes(range(32, 64))
ID_A = public_key_bytes(private_key(SECRET_A))
ID_B = public_key_bytes(private_key(SECRET_B))


def pattern(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def server_config(**kw: object) -> EndpointConfig:
    return EndpointConfig(alpns=[ALPN], **kw)  # type: ignore[arg-type]  # keyword overrides


def pair(
    link: Link | None = None, seed: int = 1, server: EndpointConfig | None = None
) -> tuple[Sim, QuicEndpoint, QuicEndpoint, qc.QuicConnection]:
    sim = Sim(link, seed)
    client_ep = sim.add(A, SECRET_A)
    server_ep = sim.add(B, SECRET_B, server or server_config())
    conn = client_ep.connect(B, ID_B, [ALPN], sim.now)
    return sim, client_ep, server_ep, conn


def handshaken(
    link: Link | None = None, seed: int = 1, server: EndpointConfig | None = None
) -> tuple[Sim, QuicEndpoint, QuicEndpoint, qc.QuicConnection, qc.QuicConnection]:
    sim, client_ep, server_ep, conn = pair(link, seed, server)
    sim.run(30.0, lambda: bool(sim.accepted[B]) and sim.seen_of(sim.accepted[B][0]).handshake is not None
            and sim.seen_of(conn).handshake is not None)
    return sim, client_ep, server_ep, conn, sim.accepted[B][0]


def test_handshake_through_endpoints_authenticates_both_sides() -> None:
    sim, client_ep, server_ep, client, server = handshaken()
    hs_c = sim.seen_of(client).handshake
    hs_s = sim.seen_of(server).handshake
    assert hs_c is not None and hs_c.peer_id == ID_B and hs_c.alpn == ALPN
    assert hs_s is not None and hs_s.peer_id == ID_A
    assert server_ep.handshakes_under_way == 0
    # The client's first DCID stops routing once the handshake is done; the issued IDs route.
    assert set(server_ep.routes()) == set(server.host_cids)
    assert set(client_ep.routes()) == set(client.host_cids)
    assert server_ep.stats.connections == 1


def test_a_late_copy_of_the_first_flight_starts_no_second_handshake() -> None:
    """A dial fans out over every path, and the relay's copy of the client's Initial can come
    after the handshake is done: it must not become a second connection (or an offer that an
    application would accept in place of the next real dial)."""
    sim, client_ep, server_ep, client, server = handshaken()
    first = next(d for src, _, d in sim.sent if src == A)
    start = sim.now
    sim.inject("the relay's path", B, first)
    sim.run(start + 1.0, lambda: not sim.heap and sim.now > start)
    assert server_ep.stats.connections == 1
    assert sim.accepted[B] == [server]


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.2])
def test_transfer_over_a_lossy_reordering_duplicating_link_is_intact(loss: float) -> None:
    link = Link(loss=loss, reorder=0.1, duplicate=0.05)
    sim, client_ep, server_ep, client, server = handshaken(link, seed=7)
    size = 300_000
    up = pattern(size, 1)
    down = pattern(size, 2)
    sid = client.open_stream()
    client.send_stream_data(sid, up, end_stream=True)
    client_ep.wake(client)
    sim.run(300.0, lambda: sid in sim.seen_of(server).finished)
    server.send_stream_data(sid, down, end_stream=True)
    server_ep.wake(server)
    sim.run(600.0, lambda: sid in sim.seen_of(client).finished)
    assert bytes(sim.seen_of(server).streams[sid]) == up
    assert bytes(sim.seen_of(client).streams[sid]) == down
    # Each side's counters agree with what the link carried from it; losses are counted.
    for ep, conn, addr in ((client_ep, client, A), (server_ep, server, B)):
        carried = [d for src, _, d in sim.sent if src == addr]
        assert ep.sent(conn) == (len(carried), sum(map(len, carried)))
        assert ep.received(conn)[0] > 0
        if loss >= 0.2:
            assert conn.lost_packets > 0 and conn.lost_bytes > conn.lost_packets


def test_transmits_are_gso_runs() -> None:
    out: list[Transmit] = []
    _runs(A, [b"x" * 1200] * 3 + [b"y" * 700, b"z" * 1200, b"w" * 1300], out)
    assert [(t.segment_size, [len(d) for d in t.datagrams]) for t in out] == [
        (1200, [1200, 1200, 1200, 700]),
        (1200, [1200]),
        (1300, [1300]),
    ]
    out.clear()
    _runs(A, [b"x" * 1000] * 100, out)
    assert [len(t.datagrams) for t in out] == [64, 36]


def test_bulk_sending_comes_out_in_runs_of_full_datagrams() -> None:
    sim, client_ep, server_ep, client, server = handshaken()
    sid = client.open_stream()
    client.send_stream_data(sid, pattern(200_000), end_stream=True)
    client_ep.wake(client)
    transmits = client_ep.transmits(sim.now)
    assert transmits and max(len(t.datagrams) for t in transmits) > 1
    sim._send(A, transmits)
    sim.run(60.0, lambda: sid in sim.seen_of(server).finished)


def test_two_clients_one_server_are_routed_apart() -> None:
    sim = Sim(seed=3)
    a = sim.add(A, SECRET_A)
    c = sim.add(C, os.urandom(32))
    server_ep = sim.add(B, SECRET_B, server_config())
    ca = a.connect(B, ID_B, [ALPN], 0.0)
    cc = c.connect(B, ID_B, [ALPN], 0.0)
    sim.run(30.0, lambda: sim.seen_of(ca).handshake is not None and sim.seen_of(cc).handshake is not None)
    for conn, ep, payload in ((ca, a, b"from a"), (cc, c, b"from c")):
        sid = conn.open_stream()
        conn.send_stream_data(sid, payload, end_stream=True)
        ep.wake(conn)
    sim.run(30.0, lambda: all(0 in sim.seen_of(s).finished for s in sim.accepted[B]))
    got = {bytes(sim.seen_of(s).streams[0]) for s in sim.accepted[B]}
    assert got == {b"from a", b"from c"}
    assert len(server_ep.connections) == 2


def test_connection_id_rotation_keeps_routing() -> None:
    sim, client_ep, server_ep, client, server = handshaken()
    old = set(server.host_cids)
    server.rotate_connection_ids()
    server_ep.wake(server)
    client.rotate_connection_ids()
    client_ep.wake(client)
    sid = client.open_stream()
    client.send_stream_data(sid, b"after rotation", end_stream=True)
    client_ep.wake(client)
    sim.run(30.0, lambda: sid in sim.seen_of(server).finished)

    # The client retires the old IDs; the server stops routing them and routes the new ones.
    def retired() -> bool:
        return not (old & set(server.host_cids))

    sim.run(30.0, retired)
    sim.flush_all()
    assert set(server_ep.routes()) == set(server.host_cids)
    assert not old & set(server_ep.routes())
    sid2 = server.open_stream()
    server.send_stream_data(sid2, b"reply", end_stream=True)
    server_ep.wake(server)
    sim.run(30.0, lambda: sid2 in sim.seen_of(client).finished)
    assert bytes(sim.seen_of(client).streams[sid2]) == b"reply"


def test_every_paths_connection_ids_route_and_retired_ones_stop() -> None:
    """With multipath, IDs are issued per path; the endpoint routes each as it is issued and
    drops each as it is retired, not only path 0's."""
    sim = Sim(seed=5)
    client_ep = sim.add(A, SECRET_A, EndpointConfig(transport=QuicConfig(is_client=True, max_path_id=3)))
    server_ep = sim.add(B, SECRET_B, server_config(transport=QuicConfig(is_client=False, max_path_id=3)))
    client = client_ep.connect(B, ID_B, [ALPN], sim.now)
    sim.run(30.0, lambda: bool(sim.accepted[B]) and sim.seen_of(sim.accepted[B][0]).handshake is not None)
    server = sim.accepted[B][0]
    sim.run(30.0, lambda: len(server.host_cids) > 4 and set(server_ep.routes()) == set(server.host_cids))
    sim.flush_all()
    assert server._mp
    assert set(client_ep.routes()) == set(client.host_cids)
    old = set(server._local_path_cids[0].cids())  # rotation renews path 0's IDs
    server.rotate_connection_ids()
    server_ep.wake(server)
    sim.run(30.0, lambda: not (old & set(server.host_cids)))
    sim.flush_all()
    assert set(server_ep.routes()) == set(server.host_cids)
    assert not old & set(server_ep.routes())


def test_close_removes_routes_after_the_closing_period() -> None:
    sim, client_ep, server_ep, client, server = handshaken()
    client.close(7, b"bye")
    client_ep.wake(client)
    sim.run(30.0, lambda: not client_ep.connections and not server_ep.connections)
    term = sim.seen_of(server).terminated
    assert term is not None and term.error_code == 7 and term.reason == b"bye" and term.application
    assert client_ep.routes() == {} and server_ep.routes() == {}
    assert client_ep.deadline() is None and server_ep.deadline() is None


def test_idle_timeout_removes_the_connection() -> None:
    cfg = QuicConfig(is_client=True, idle_timeout=2.0)
    sim = Sim()
    client_ep = sim.add(A, SECRET_A, EndpointConfig(transport=cfg))
    server_ep = sim.add(B, SECRET_B, server_config(transport=cfg))
    client = client_ep.connect(B, ID_B, [ALPN], 0.0)
    sim.run(30.0, lambda: sim.seen_of(client).handshake is not None)
    sim.run(30.0, lambda: not client_ep.connections and not server_ep.connections)
    term = sim.seen_of(client).terminated
    assert term is not None and term.cause == qc.CAUSE_IDLE
    assert 2.0 <= sim.now < 4.0


# -- what is answered without a connection -------------------------------------------------


def junk_initial(dcid: bytes, payload: bytes, size: int = 1200, version: int = 1, token: bytes = b"") -> bytes:
    """A well-formed Initial header around bytes that are no valid protected payload."""
    body_len = size - 64
    header = build_long_header(0, dcid, b"\x01" * 8, 0, 4, body_len - 4 - 16, token=token, version=version)
    body = (payload * (body_len // max(1, len(payload)) + 1))[:body_len]
    return (header + body).ljust(size, b"\x00")


def test_junk_initials_allocate_no_connection() -> None:
    ep = QuicEndpoint(SECRET_B, server_config())
    batch = [(junk_initial(os.urandom(8), os.urandom(32)), A) for _ in range(50)]
    batch += [(os.urandom(1300), A) for _ in range(50)]
    batch += [(b"\xc0" + os.urandom(50), A), (b"", A), (b"\x40", A)]
    created = ep.receive(batch, 1.0)
    assert created == [] and ep.connections == [] and ep.routes() == {}
    assert ep.handshakes_under_way == 0 and ep.deadline() is None
    assert ep.stats.connections == 0
    assert ep.stats.initials_rejected >= 50
    # Junk gets at most Version Negotiation (random long headers) or a stateless reset (random
    # short headers), both rate limited and no larger than what provoked them.
    out = [d for t in ep.transmits(1.0) for d in t.datagrams]
    assert len(out) <= 50
    for d in out:
        assert (d[0] & 0x80 and d[1:5] == bytes(4)) or (d[0] & 0xC0 == 0x40 and len(d) <= 64)


def test_initial_smaller_than_1200_is_dropped() -> None:
    sim, client_ep, server_ep, conn = pair()
    first = client_ep.transmits(0.0)[0].datagrams[0]
    assert server_ep.receive([(first.rstrip(b"\x00")[:1100], A)], 0.0) == []
    assert server_ep.connections == []


def test_unknown_version_gets_version_negotiation() -> None:
    ep = QuicEndpoint(SECRET_B, server_config())
    dcid, scid = b"\xaa" * 8, b"\x01" * 8
    ep.receive([(junk_initial(dcid, b"x", version=0x1A2A3A4A), A)], 0.0)
    out = ep.transmits(0.0)
    assert len(out) == 1 and out[0].addr == A
    vn = parse_packet(out[0].datagrams[0], 0, 8)
    assert vn.packet_type == PACKET_VERSION_NEGOTIATION
    assert vn.dcid == scid and vn.scid == dcid and vn.supported_versions == [1]
    assert ep.connections == []
    # Too small to be a client's first datagram: no answer.
    ep.receive([(junk_initial(dcid, b"x", version=0x1A2A3A4A)[:600], A)], 0.0)
    assert ep.transmits(0.0) == []


def test_version_negotiation_is_rate_limited() -> None:
    ep = QuicEndpoint(SECRET_B, server_config(stateless_rate=10.0, stateless_burst=5))
    ep.receive([(junk_initial(os.urandom(8), b"x", version=7), A) for _ in range(100)], 0.0)
    assert sum(len(t.datagrams) for t in ep.transmits(0.0)) == 5
    ep.receive([(junk_initial(os.urandom(8), b"x", version=7), A) for _ in range(100)], 1.0)
    assert sum(len(t.datagrams) for t in ep.transmits(1.0)) == 5
    assert ep.stats.stateless_limited == 190


def test_client_endpoint_ends_its_attempt_on_version_negotiation() -> None:
    sim = Sim()
    client_ep = sim.add(A, SECRET_A)
    conn = client_ep.connect(B, ID_B, [ALPN], 0.0)
    first = client_ep.transmits(0.0)[0].datagrams[0]
    initial = split_datagram(first, 8)[0]
    client_ep.receive([(build_version_negotiation(initial.scid, initial.dcid, (0x0A0A0A0A,)), B)], 0.1)
    client_ep.transmits(0.1)
    term = conn.next_event()
    assert isinstance(term, qc.ConnectionTerminated) and term.cause == qc.CAUSE_PEER
    assert client_ep.connections == []


def test_retry_validates_the_client_address() -> None:
    sim, client_ep, server_ep, client, server = handshaken(server=server_config(retry_policy=always_retry))
    assert server_ep.stats.retries == 1
    kinds = [split_datagram(d, 8)[0].packet_type for src, _, d in sim.sent if src == B and d[0] & 0x80]
    assert kinds[0] == PACKET_RETRY
    assert server.original_dcid != b"" and server.path.recovery.address_validated
    sid = client.open_stream()
    client.send_stream_data(sid, b"validated", end_stream=True)
    client_ep.wake(client)
    sim.run(30.0, lambda: sid in sim.seen_of(server).finished)


def test_retry_under_load_policy() -> None:
    policy = retry_under_load(1)
    assert not policy(A, 0) and policy(A, 1)
    sim = Sim(seed=5)
    a = sim.add(A, SECRET_A)
    c = sim.add(C, os.urandom(32))
    server_ep = sim.add(B, SECRET_B, server_config(retry_policy=policy))
    ca = a.connect(B, ID_B, [ALPN], 0.0)
    sim.flush(A)
    cc = c.connect(B, ID_B, [ALPN], 0.0)
    sim.run(30.0, lambda: sim.seen_of(ca).handshake is not None and sim.seen_of(cc).handshake is not None)
    assert server_ep.stats.retries == 1


def _retried_initial(
    server_ep: QuicEndpoint, client_ep: QuicEndpoint
) -> tuple[bytes, bytes]:
    """The client's first Initial and its second one (with the Retry token)."""
    first = client_ep.transmits(0.0)[0].datagrams[0]
    server_ep.receive([(first, A)], 0.0)
    retry = server_ep.transmits(0.0)[0].datagrams[0]
    client_ep.receive([(retry, B)], 0.01)
    second = client_ep.transmits(0.01)[0].datagrams[0]
    return first, second


def test_retry_token_is_bound_to_address_and_expires() -> None:
    cfg = server_config(retry_policy=always_retry, retry_token_lifetime=5.0)
    for addr, at, accepted in ((C, 0.02, False), (A, 6.0, False), (A, 0.02, True)):
        sim = Sim()
        client_ep = sim.add(A, SECRET_A)
        server_ep = sim.add(B, SECRET_B, cfg)
        client_ep.connect(B, ID_B, [ALPN], 0.0)
        _, second = _retried_initial(server_ep, client_ep)
        created = server_ep.receive([(second, addr)], at)
        assert bool(created) == accepted, (addr, at)
        assert server_ep.stats.retry_tokens_rejected == (0 if accepted else 1)


def test_forged_retry_token_is_refused() -> None:
    sim = Sim()
    client_ep = sim.add(A, SECRET_A)
    server_ep = sim.add(B, SECRET_B, server_config(retry_policy=always_retry))
    other = QuicEndpoint(SECRET_B, server_config(retry_policy=always_retry))
    client_ep.connect(B, ID_B, [ALPN], 0.0)
    first = client_ep.transmits(0.0)[0].datagrams[0]
    other.receive([(first, A)], 0.0)  # a Retry from an endpoint with another static key
    retry = other.transmits(0.0)[0].datagrams[0]
    client_ep.receive([(retry, B)], 0.01)
    second = client_ep.transmits(0.01)[0].datagrams[0]
    assert server_ep.receive([(second, A)], 0.02) == []
    assert server_ep.stats.retry_tokens_rejected == 1 and server_ep.connections == []


def test_accept_limit_bounds_concurrent_handshakes() -> None:
    server_ep = QuicEndpoint(SECRET_B, server_config(max_handshakes=3))
    firsts = []
    for i in range(6):
        ep = QuicEndpoint(os.urandom(32))
        ep.connect(B, ID_B, [ALPN], 0.0)
        firsts.append((ep.transmits(0.0)[0].datagrams[0], ("10.1.0.%d" % i, 1)))
    created = server_ep.receive(firsts, 0.0)
    assert len(created) == 3 and server_ep.handshakes_under_way == 3
    assert server_ep.stats.initials_over_limit == 3 and server_ep.stats.initials_rejected == 0
    # A retransmitted Initial of an accepted client routes to its connection, not a new one.
    assert server_ep.receive([firsts[0]], 0.1) == []
    assert len(server_ep.connections) == 3


# -- stateless reset ------------------------------------------------------------------------


def test_restarted_server_resets_the_old_connection() -> None:
    key = os.urandom(32)
    sim, client_ep, server_ep, client, server = handshaken(server=server_config(static_key=key))
    # The server restarts: same address, same static key, no connection state.
    fresh = QuicEndpoint(SECRET_B, server_config(static_key=key))
    sim.replace(B, fresh)
    sid = client.open_stream()
    client.send_stream_data(sid, pattern(5000), end_stream=True)
    client_ep.wake(client)
    sim.run(30.0, lambda: sim.seen_of(client).terminated is not None)
    term = sim.seen_of(client).terminated
    assert term is not None and term.cause == qc.CAUSE_RESET
    assert fresh.stats.resets_sent >= 1
    sim.flush_all()
    assert client_ep.connections == [] and client_ep.routes() == {}


def test_restart_with_another_key_is_not_a_reset() -> None:
    sim, client_ep, server_ep, client, server = handshaken(server=server_config(static_key=os.urandom(32)))
    fresh = QuicEndpoint(SECRET_B, server_config(static_key=os.urandom(32)))
    sim.replace(B, fresh)
    sid = client.open_stream()
    client.send_stream_data(sid, pattern(5000), end_stream=True)
    client_ep.wake(client)
    with pytest.raises(TimeoutError):
        sim.run(sim.now + 1.0, lambda: sim.seen_of(client).terminated is not None)
    assert fresh.stats.resets_sent >= 1
    assert client.state != qc.STATE_CLOSED


def test_restarted_client_resets_the_server_side() -> None:
    key = os.urandom(32)
    sim = Sim()
    client_ep = sim.add(A, SECRET_A, EndpointConfig(static_key=key))
    server_ep = sim.add(B, SECRET_B, server_config())
    client = client_ep.connect(B, ID_B, [ALPN], 0.0)
    sim.run(30.0, lambda: bool(sim.accepted[B]) and sim.seen_of(sim.accepted[B][0]).handshake is not None)
    server = sim.accepted[B][0]
    # A client's first ID has no reset token (RFC 9000 §10.3): move the server onto issued ones.
    first = client.host_cids[0]
    client.rotate_connection_ids()
    client_ep.wake(client)
    sim.run(30.0, lambda: first not in client.host_cids)
    sim.replace(A, QuicEndpoint(SECRET_A, EndpointConfig(static_key=key)))
    sid = server.open_stream()
    server.send_stream_data(sid, pattern(5000), end_stream=True)
    server_ep.wake(server)
    sim.run(30.0, lambda: sim.seen_of(server).terminated is not None)
    term = sim.seen_of(server).terminated
    assert term is not None and term.cause == qc.CAUSE_RESET


def test_resets_are_small_rate_limited_and_never_answer_reset_sized_packets() -> None:
    ep = QuicEndpoint(SECRET_B, EndpointConfig(stateless_rate=10.0, stateless_burst=3))
    short = [(bytes([0x40]) + os.urandom(n - 1), A) for n in (21, 40, 64)]
    ep.receive(short, 0.0)
    assert ep.transmits(0.0) == []
    big = [(bytes([0x40]) + os.urandom(99), A) for _ in range(10)]
    ep.receive(big, 0.0)
    out = [d for t in ep.transmits(0.0) for d in t.datagrams]
    assert len(out) == 3 and all(21 <= len(d) < 100 for d in out)
    assert ep.stats.stateless_limited == 7
    # The token is the HMAC of the DCID it answers, the same on every endpoint with the key.
    key = os.urandom(32)
    e1 = QuicEndpoint(SECRET_B, EndpointConfig(static_key=key))
    e2 = QuicEndpoint(SECRET_A, EndpointConfig(static_key=key))
    packet = bytes([0x40]) + b"\x07" * 8 + os.urandom(91)
    e1.receive([(packet, A)], 0.0)
    e2.receive([(packet, A)], 0.0)
    r1 = e1.transmits(0.0)[0].datagrams[0]
    r2 = e2.transmits(0.0)[0].datagrams[0]
    assert r1[-16:] == r2[-16:]


def test_coalesced_handshake_datagrams_reach_their_connection() -> None:
    sim, client_ep, server_ep, client, server = handshaken()
    coalesced = [d for src, _, d in sim.sent if src == B and len(split_datagram(d, 8)) > 1]
    assert coalesced, "the server's first flight coalesces Initial and Handshake packets"


def test_timer_heap_stays_bounded_under_traffic() -> None:
    sim, client_ep, server_ep, client, server = handshaken()
    sid = client.open_stream()
    client.send_stream_data(sid, pattern(2_000_000), end_stream=True)
    client_ep.wake(client)
    sim.run(60.0, lambda: sid in sim.seen_of(server).finished)
    for ep in (client_ep, server_ep):
        assert len(ep._timers) <= 2 * len(ep.connections) + 64


# -- offers: the driver decides before any handshake -------------------------------------------


def offered(sim: Sim, server_ep: QuicEndpoint) -> list[Offer]:
    got: list[Offer] = []

    def done() -> bool:
        got.extend(server_ep.offers())
        return bool(got)

    sim.run(5.0, done)
    return got


def test_an_accepted_offer_completes_the_handshake_and_counts_as_one_handshake() -> None:
    sim, _, server_ep, client = pair(server=server_config(offer_initials=True))
    (offer,) = offered(sim, server_ep)
    assert offer.addr == A and not offer.validated
    assert server_ep.connections == [] and server_ep.handshakes_under_way == 1
    server = server_ep.accept(offer, sim.now)
    assert server_ep.handshakes_under_way == 1
    sim.flush(B)
    sim.run(5.0, lambda: sim.seen_of(client).handshake is not None and sim.seen_of(server).handshake is not None)
    assert server_ep.handshakes_under_way == 0 and server_ep.offers() == []
    with pytest.raises(QuicError):
        server_ep.accept(offer, sim.now)


def test_a_refused_offer_closes_the_dial_without_a_handshake_and_stays_refused() -> None:
    sim, _, server_ep, client = pair(server=server_config(offer_initials=True))
    (offer,) = offered(sim, server_ep)
    first = offer.datagrams[0]
    server_ep.refuse(offer, sim.now)
    assert server_ep.handshakes_under_way == 0
    sim.flush(B)
    sim.run(5.0, lambda: sim.seen_of(client).terminated is not None)
    term = sim.seen_of(client).terminated
    assert term is not None and term.error_code == QuicError.CONNECTION_REFUSED and not term.application
    assert server_ep.connections == [] and server_ep.stats.connections == 0
    server_ep.receive([(first, A)], sim.now)  # a late retransmission
    assert server_ep.offers() == [] and server_ep.handshakes_under_way == 0


def test_an_ignored_offer_gets_no_answer_and_its_retransmissions_no_new_offer() -> None:
    sim, _, server_ep, client = pair(server=server_config(offer_initials=True))
    (offer,) = offered(sim, server_ep)
    first = offer.datagrams[0]
    server_ep.ignore(offer, sim.now)
    assert server_ep.receive([(first, A)], sim.now + 1.0) == []
    assert server_ep.offers() == [] and server_ep.handshakes_under_way == 0
    assert server_ep.transmits(sim.now + 1.0) == []
    # Once the DCID is forgotten, the same Initial is a new offer.
    server_ep.receive([(first, A)], sim.now + 11.0)
    assert len(server_ep.offers()) == 1


def test_offers_count_against_the_handshake_limit_and_keep_a_few_datagrams() -> None:
    server_ep = QuicEndpoint(SECRET_B, server_config(max_handshakes=2, offer_initials=True))
    firsts = []
    for i in range(4):
        ep = QuicEndpoint(os.urandom(32))
        ep.connect(B, ID_B, [ALPN], 0.0)
        firsts.append((ep.transmits(0.0)[0].datagrams[0], ("10.1.0.%d" % i, 1)))
    assert server_ep.receive(firsts, 0.0) == []
    offers = server_ep.offers()
    assert len(offers) == 2 and server_ep.stats.initials_over_limit == 2
    # Retransmissions join their offer, from its address only and only so many.
    data, addr = firsts[0]
    server_ep.receive([(data, addr)] * 20 + [(data, ("10.9.9.9", 9))], 0.1)
    assert len(offers[0].datagrams) == OFFER_DATAGRAMS and server_ep.offers() == []
