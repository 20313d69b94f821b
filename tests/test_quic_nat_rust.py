"""n0 NAT traversal against Rust iroh 1.x (the official `iroh` package, noq) over real UDP on
loopback, in a loopback-only namespace, driving our QuicEndpoint/EngineConnection directly.

Our engine offers multipath (7) and NAT traversal (32 addresses) as iroh does, behind
127.0.0.1, ::1 and a second 127.0.0.1 port; IPv4 always leaves from the first. The QUIC client
runs the rounds, so Rust does when it dials us and we do when we dial it. What Rust did is
recorded in docs/wire/nat-traversal.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from irohpy.quic import connection as qc
from irohpy.quic.connection import QuicConfig
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint
from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.socket.udp import UdpSocket
from tests.refpeer import bulk_ref, ref_v4_port, ref_v6_port
from tests.test_quic_multipath_rust import ALPN, PY_SECRET, T, DualStack, rust_dials

pytestmark = pytest.mark.refpeer


class NatStack(DualStack):
    """DualStack offering NAT traversal, plus a second IPv4 socket to announce."""

    def __init__(self, secret: bytes) -> None:
        config = EndpointConfig(
            alpns=[ALPN], transport=QuicConfig(is_client=True, max_path_id=7, nat_traversal_addresses=32)
        )
        self.socks: dict[Any, UdpSocket] = {}
        self.engine = QuicEngine(QuicEndpoint(secret, config), self._send)
        #: Datagrams each of our sockets received, by the sender's address.
        self.received_on: dict[Any, dict[Any, int]] = {}
        #: Set when the second IPv4 socket receives anything.
        self.second_hit = asyncio.Event()
        for key, host in ((False, "127.0.0.1"), (True, "::1"), ("second", "127.0.0.1")):
            self.socks[key] = UdpSocket.bind(host, 0, self._counter(key))

    def _counter(self, key: Any) -> Any:
        counts = self.received_on.setdefault(key, {})

        def receive(batch: Any, sock: object = None) -> None:
            for _, addr in batch:
                counts[addr[:2]] = counts.get(addr[:2], 0) + 1
            if key == "second":
                self.second_hit.set()
            self.engine.receive(batch, sock)

        return receive

    def second_addr(self) -> tuple[str, int]:
        host, port = self.socks["second"].local_addr[:2]
        return host, port


@pytest.fixture
async def ours() -> AsyncIterator[NatStack]:
    stack = NatStack(PY_SECRET)
    try:
        yield stack
    finally:
        await stack.close()


@pytest.fixture
async def ref(iroh_loop: Any) -> AsyncIterator[Any]:
    async with bulk_ref(iroh_loop, [ALPN], T) as ep:
        yield ep


class Watched:
    """Makes the engine's connections and records each one's path outcomes with the path's
    address (still known when the event comes), through the connection's event hook."""

    def __init__(self) -> None:
        self.outcomes: dict[EngineConnection, list[tuple[Any, qc.PathEstablished | qc.PathAbandoned]]] = {}

    def __call__(self, engine: QuicEngine, quic: qc.QuicConnection) -> EngineConnection:
        conn = EngineConnection(engine, quic)
        outcomes = self.outcomes[conn] = []

        def on_event(ev: qc.Event) -> None:
            if isinstance(ev, (qc.PathEstablished, qc.PathAbandoned)) and ev.path_id in quic.paths:
                outcomes.append((quic.paths[ev.path_id].addr[:2], ev))

        conn.on_event = on_event
        return conn


async def test_rust_reaches_out_and_opens_a_path_where_our_probe_came_from(
    iroh_loop: Any, ours: NatStack, ref: Any
) -> None:
    # Rust knows only our 127.0.0.1 and we announce nothing. Its REACH_OUTs name its sockets;
    # we probe its ::1 from our ::1; it answers with a PATH_CHALLENGE of its own (noq's
    # piggyback), ours answers that, and Rust opens a path on that 4-tuple.
    watched = Watched()
    ours.engine.connection_type = watched
    theirs, conn = await rust_dials(iroh_loop, ours, ref)
    outcomes = watched.outcomes[conn]
    quic = conn.quic
    assert quic.multipath and quic.nat_traversal
    tp = quic.peer_transport_parameters
    assert tp is not None and tp.max_remote_nat_traversal_addresses == 32 and tp.initial_max_path_id == 7
    nat = quic._nat
    assert nat is not None
    rust_v6 = ("::1", ref_v6_port(ref))
    # Whether the path validates, or Rust abandons it first (APPLICATION_ABANDON_PATH: its
    # selector closes every IP path but the selected one), is a race inside Rust.
    while not any(addr == rust_v6 for addr, _ in outcomes):
        conn._check_open()
        await asyncio.wait_for(conn._paths_changed.wait(), T)
    v6 = [ev for addr, ev in outcomes if addr == rust_v6]
    assert all(ev.path_id >= 1 for ev in v6)
    assert all(isinstance(ev, qc.PathEstablished) or ev.error_code == 0x3E for ev in v6)
    print("rust paths from its ::1:", v6)
    assert nat.round >= 1 and rust_v6 in nat._round_remotes
    assert ("127.0.0.1", ref_v4_port(ref)) in nat._round_remotes
    assert nat.local_addresses() == [] and not nat.remote_addresses()
    assert ours.received_on[True].get(rust_v6, 0) > 0
    assert conn.terminated is None
    theirs.close(0, b"bye")
    await asyncio.wait_for(conn.closed(), T)


async def test_rust_probes_a_second_port_we_announce(iroh_loop: Any, ours: NatStack, ref: Any) -> None:
    # Rust reaches out to a second IPv4 port it learns only from ADD_ADDRESS. (No path opens
    # there: our engine names paths by the remote address, so answers leave from the first
    # socket; docs/wire/nat-traversal.md.)
    theirs, conn = await rust_dials(iroh_loop, ours, ref)
    assert conn.quic.nat_traversal
    conn.set_local_addresses([ours.addr(False), ours.second_addr()])
    await asyncio.wait_for(ours.second_hit.wait(), T)
    assert ("127.0.0.1", ref_v4_port(ref)) in ours.received_on["second"]
    assert conn.terminated is None
    theirs.close(0, b"bye")
    await asyncio.wait_for(conn.closed(), T)


async def test_we_dial_rust_run_a_round_and_open_a_backup_path(iroh_loop: Any, ours: NatStack, ref: Any) -> None:
    # Rust as the server announces its sockets (ADD_ADDRESS); our round probes them, and the
    # ::1 answer opens a backup path there, which validates.
    async def serve() -> None:
        inc = await ref.accept_next()
        theirs = await (await inc.accept()).connect()
        await theirs.closed()

    server = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    changed = asyncio.Event()
    conn = await ours.engine.connect(("127.0.0.1", ref_v4_port(ref)), ref.id().to_bytes(), ALPN, timeout=T)
    conn.on_remote_candidates = lambda ev: changed.set()
    rust_v6 = ("::1", ref_v6_port(ref))
    rust_v4 = ("127.0.0.1", ref_v4_port(ref))
    assert conn.quic.nat_traversal
    conn.set_local_addresses([ours.addr(False), ours.addr(True)])
    while sorted(conn.quic.remote_candidates()) != sorted([rust_v4, rust_v6]):
        await asyncio.wait_for(changed.wait(), T)
        changed.clear()
    assert sorted(conn.initiate_nat_traversal_round()) == sorted([rust_v4, rust_v6])
    opened = await asyncio.wait_for(conn.traversal_path(), T)
    assert opened.addr == rust_v6
    assert await asyncio.wait_for(conn.path_outcome(opened.path_id), T)
    assert conn.quic.path_status(opened.path_id)[0] is False  # ours: backup
    assert conn.terminated is None
    conn.close(0, b"bye")
    await server
