"""The sans-IO QUIC endpoint: routing, stateless answers and limits, two or more endpoints
wired in memory (tests/quic_endpoint_sim.py) with real TLS and real packet protection."""

from __future__ import annotations

import hashlib
import os

import pytest

from irohpy.quic import connection as qc
from irohpy.quic.connection import QuicConfig
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint, Transmit, _runs, always_retry, retry_under_load
from irohpy.quic.packet import (
    PACKET_RETRY,
    PACKET_VERSION_NEGOTIATION,
    build_long_header,
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
    return EndpointConfig(alpns=[ALPN], **kw)  # type: ignore[arg-type]


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
