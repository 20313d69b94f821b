"""n0 NAT traversal driven by the QUIC connection, sans-IO, in the two-route simulator.

The client sits at 10.0.0.1 and fd00::1, the server at 10.0.0.2 and fd00::2; the handshake
runs over the IPv4 route. The server announces both its addresses, the client runs a round,
probes cross both ways, and the client opens a backup path on the IPv6 4-tuple. An attacker
who forges responses or frames, or floods addresses, moves nothing.
"""

from __future__ import annotations

import ipaddress

import pytest

from irohpy.errors import NatTraversalError, QuicError
from irohpy.quic import connection as qc
from irohpy.quic import frames as F
from irohpy.quic.buffer import Writer
from irohpy.quic.handshake import iroh_handshake
from irohpy.quic.nat_traversal import DEFAULT_MAX_ADDRESSES
from tests.quic_conn_sim import ALPN, CLIENT_SECRET, SERVER_ID, SERVER_SECRET
from tests.quic_mp_sim import MpNet, Side, mp_pair, two_routes
from tests.test_quic_multipath import inject

NAT = DEFAULT_MAX_ADDRESSES


def frame_bytes(*frames: object) -> bytes:
    w = Writer(1200)
    for frame in frames:
        frame.encode(w)  # type: ignore[attr-defined]
    return w.getvalue()


def announced(client: Side, server: Side, net: MpNet) -> None:
    """The server announces both its addresses and the client has them."""
    server.conn.set_local_addresses([r.server_addr for r in net.routes])
    net.flush(1)
    net.run(net.now + 5.0, lambda: len(client.conn.remote_candidates()) == 2)


def run_round(client: Side, net: MpNet) -> list[tuple[str, int]]:
    client.conn.set_local_addresses([r.client_addr for r in net.routes])
    probed = client.conn.initiate_nat_traversal_round(net.now)
    net.flush(0)
    return probed


def pair(**kw: object) -> tuple[Side, Side, MpNet]:
    return mp_pair(two_routes(), nat_traversal_addresses=NAT, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("client_nat", "server_nat", "client_mp", "on"), [
    (NAT, NAT, 7, True), (NAT, None, 7, False), (None, NAT, 7, False), (NAT, NAT, None, False),
])
def test_traversal_is_on_only_with_both_parameters_and_multipath(
    client_nat: int | None, server_nat: int | None, client_mp: int | None, on: bool
) -> None:
    cc = qc.QuicConnection(
        qc.QuicConfig(is_client=True, max_path_id=client_mp, nat_traversal_addresses=client_nat),
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
    )
    routes = two_routes()
    cc.connect(routes[0].server_addr, 0.0)
    sc = qc.QuicConnection(
        qc.QuicConfig(is_client=False, max_path_id=7, nat_traversal_addresses=server_nat),
        iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]),
    )
    net = MpNet(Side(cc), Side(sc), routes)
    net.run(10.0, lambda: cc.handshake_complete and sc.handshake_complete)
    assert cc.nat_traversal is on and sc.nat_traversal is on
    sent = sc.peer_transport_parameters
    assert sent is not None and sent.max_remote_nat_traversal_addresses == client_nat


def test_server_announces_client_probes_and_opens_a_backup_path() -> None:
    client, server, net = pair()
    assert client.conn.nat_traversal and server.conn.nat_traversal
    announced(client, server, net)
    changed = client.of(qc.RemoteCandidatesChanged)
    assert changed and sorted(changed[-1].addresses) == sorted(r.server_addr for r in net.routes)
    probed = run_round(client, net)
    assert sorted(probed) == sorted(r.server_addr for r in net.routes)
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathEstablished)) and bool(server.of(qc.PathEstablished)))
    # The home 4-tuple already has a path; only the IPv6 one gets a new (backup) path.
    assert client.of(qc.TraversalPathOpened) == [qc.TraversalPathOpened(1, net.routes[1].server_addr)]
    assert client.conn.paths[1].addr == net.routes[1].server_addr
    assert client.conn.path_status(1) == (False, True)
    assert client.of(qc.PathEstablished) == [qc.PathEstablished(1)]
    # The server probed the client's IPv6 candidate too (REACH_OUT reached it).
    assert net.routes[1].datagrams[1] > 0
    assert not client.terminated and not server.terminated


def test_probes_go_unpadded_and_are_answered_padded_where_they_came_from() -> None:
    client, server, net = pair()
    announced(client, server, net)
    routes = net.routes
    client.conn.set_local_addresses([r.client_addr for r in routes])
    client.conn.initiate_nat_traversal_round(net.now)
    [probe] = [d for addr, batch in client.conn.transmit(net.now) if addr == routes[1].server_addr for d in batch]
    assert len(probe) < 100
    server.conn.receive_datagram(probe, routes[1].client_addr, net.now)
    [answer] = [d for addr, batch in server.conn.transmit(net.now) if addr == routes[1].client_addr for d in batch]
    assert len(answer) >= 1200
    # The server's paths never moved: the probe used path 0's IDs and was answered outside it.
    assert list(server.conn.paths) == [0] and server.conn.peer_address == routes[0].client_addr
    client.conn.receive_datagram(answer, routes[1].server_addr, net.now)
    client.drain_events()
    assert client.of(qc.TraversalPathOpened) == [qc.TraversalPathOpened(1, routes[1].server_addr)]


def test_a_lost_challenge_on_a_traversed_path_goes_again_within_a_few_probe_round_trips() -> None:
    """The probe's round trip seeds the new path's RTT: without it, the 333 ms default would
    hold the path's first PATH_CHALLENGE retry back ~1 s (seen in the lab at 5% loss). The
    peer's max ack delay is no part of the wait: a PATH_RESPONSE goes at once (noq's
    on_path_challenge_pto); with it, a lost challenge or response cost the lab's 2 ms links
    some 28 ms."""
    client, server, net = pair()
    announced(client, server, net)
    routes = net.routes
    client.conn.set_local_addresses([r.client_addr for r in routes])
    client.conn.initiate_nat_traversal_round(net.now)
    sent_at = net.now
    [probe] = [d for addr, batch in client.conn.transmit(net.now) if addr == routes[1].server_addr for d in batch]
    rtt = 0.004
    server.conn.receive_datagram(probe, routes[1].client_addr, sent_at + rtt / 2)
    [answer] = [d for addr, batch in server.conn.transmit(sent_at + rtt / 2) if addr == routes[1].client_addr
                for d in batch]
    now = sent_at + rtt
    client.conn.receive_datagram(answer, routes[1].server_addr, now)
    client.drain_events()
    assert client.of(qc.TraversalPathOpened) == [qc.TraversalPathOpened(1, routes[1].server_addr)]
    lost = [d for addr, batch in client.conn.transmit(now) if addr == routes[1].server_addr for d in batch]
    assert lost, "the new path's PATH_CHALLENGE went out (and is lost)"
    assert not client.conn.paths[1].validated
    # The retry is due after the path's PTO base: 3 probe round trips, no ack delay.
    assert client.conn.paths[1].recovery.max_ack_delay >= 0.02
    due = client.conn.paths[1].challenge_at
    assert due - now <= 3 * rtt + 1e-9, due - now
    client.conn.handle_timer(due)
    again = [d for addr, batch in client.conn.transmit(due) if addr == routes[1].server_addr for d in batch]
    assert again and len(again[0]) >= 1200, "a padded PATH_CHALLENGE went again"
    for datagram in again:
        server.conn.receive_datagram(datagram, routes[1].client_addr, due + rtt / 2)
    net.now = due + rtt / 2
    net.run(net.now + 1.0, lambda: bool(client.of(qc.PathEstablished)))
    assert net.now - now < 0.1


def test_lost_announcements_are_sent_again() -> None:
    client, server, net = pair()
    server.conn.set_local_addresses([r.server_addr for r in net.routes])
    server.conn.transmit(net.now)  # the ADD_ADDRESS packet is lost
    net.run(net.now + 10.0, lambda: len(client.conn.remote_candidates()) == 2)
    assert not client.terminated


def test_probes_are_retried_until_the_route_comes_up() -> None:
    client, server, net = pair()
    announced(client, server, net)
    net.routes[1].up = False
    run_round(client, net)
    net.advance(0.1)
    assert not client.of(qc.TraversalPathOpened)
    net.routes[1].up = True
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathEstablished)))
    assert [ev.addr for ev in client.of(qc.TraversalPathOpened)] == [net.routes[1].server_addr]


def test_a_round_needs_negotiation_the_client_and_local_candidates() -> None:
    client, server, net = mp_pair(two_routes())
    with pytest.raises(NatTraversalError):
        client.conn.initiate_nat_traversal_round(net.now)
    client, server, net = pair()
    with pytest.raises(NatTraversalError) as info:
        client.conn.initiate_nat_traversal_round(net.now)
    assert info.value.transient
    with pytest.raises(NatTraversalError):
        server.conn.initiate_nat_traversal_round(net.now)


# -- attackers ----------------------------------------------------------------------


def test_forged_path_responses_move_nothing() -> None:
    client, server, net = pair()
    announced(client, server, net)
    net.routes[1].up = False
    run_round(client, net)
    nat = client.conn._nat
    assert nat is not None
    token = next(iter(nat._sent))
    footprint = nat.footprint()
    # A token never sent, from the probed address; a real token from elsewhere.
    client.conn.receive_datagram(inject(server.conn, frame_bytes(F.PathResponse(b"\x00" * 8))), net.routes[1].server_addr, net.now)
    client.conn.receive_datagram(inject(server.conn, frame_bytes(F.PathResponse(token))), ("192.0.2.66", 4444), net.now)
    client.drain_events()
    assert nat.footprint() == footprint
    assert not client.of(qc.TraversalPathOpened) and list(client.conn.paths) == [0]
    assert not client.terminated


@pytest.mark.parametrize(("to_server", "frame"), [
    (True, F.AddAddress(0, bytes([192, 0, 2, 1]), 1)),
    (True, F.RemoveAddress(0)),
    (False, F.ReachOut(1, bytes([192, 0, 2, 1]), 1)),
])
def test_frames_from_the_wrong_side_close_with_protocol_violation(to_server: bool, frame: object) -> None:
    client, server, net = pair()
    sender, receiver = (client, server) if to_server else (server, client)
    receiver.conn.receive_datagram(inject(sender.conn, frame_bytes(frame)), net.routes[0].server_addr if to_server else net.routes[0].client_addr, net.now)
    receiver.drain_events()
    assert receiver.terminated is not None and receiver.terminated.error_code == QuicError.PROTOCOL_VIOLATION


def test_frames_without_the_extension_close_with_protocol_violation() -> None:
    client, server, net = mp_pair(two_routes())
    frame = F.AddAddress(0, bytes([192, 0, 2, 1]), 1)
    client.conn.receive_datagram(inject(server.conn, frame_bytes(frame)), net.routes[0].server_addr, net.now)
    client.drain_events()
    assert client.terminated is not None and client.terminated.error_code == QuicError.PROTOCOL_VIOLATION
    assert client.terminated.frame_type == F.FRAME_ADD_ADDRESS_V4


def test_too_many_addresses_are_bounded() -> None:
    client, server, net = pair()
    flood = [F.AddAddress(i, ipaddress.IPv4Address(0x0A010000 + i).packed, 1000) for i in range(NAT + 20)]
    for i in range(0, len(flood), 20):
        client.conn.receive_datagram(inject(server.conn, frame_bytes(*flood[i : i + 20])), net.routes[0].server_addr, net.now)
    client.drain_events()
    assert not client.terminated and len(client.conn.remote_candidates()) == NAT
    # A REACH_OUT round naming more addresses than the server takes ends the connection.
    reach = [F.ReachOut(1, ipaddress.IPv4Address(0x0A020000 + i).packed, 1000) for i in range(NAT + 1)]
    for i in range(0, len(reach), 20):
        server.conn.receive_datagram(inject(client.conn, frame_bytes(*reach[i : i + 20])), net.routes[0].client_addr, net.now)
    server.drain_events()
    assert server.terminated is not None and server.terminated.error_code == QuicError.PROTOCOL_VIOLATION


def test_a_blocked_open_waits_for_max_path_id_and_new_ids() -> None:
    client, server, net = pair(server_max=1)
    announced(client, server, net)
    # Path 1 (a second path on the home 4-tuple) uses up the server's limit.
    assert client.conn.open_path(net.routes[0].server_addr, net.now) == 1
    run_round(client, net)
    net.advance(1.0)
    assert not client.of(qc.TraversalPathOpened) and sorted(client.conn.paths) == [0, 1]
    assert client.conn._nat is not None and client.conn._nat._to_open  # kept for later
    # The server raises its limit (as it does when a path drains): MAX_PATH_ID, then IDs.
    s = server.conn
    s._local_max_path_id += 1
    s._pending_max_path_id = True
    s._issue_first_path_cids()
    net.flush(1)
    net.run(net.now + 5.0, lambda: any(ev.path_id == 2 for ev in client.of(qc.PathEstablished)))
    assert client.of(qc.TraversalPathOpened) == [qc.TraversalPathOpened(2, net.routes[1].server_addr)]
