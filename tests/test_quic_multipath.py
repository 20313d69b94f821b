"""Multipath (draft-ietf-quic-multipath as noq negotiates it) between two sans-IO connections.

Two routes (an IPv4-like and an IPv6-like address pair) in simulated time: negotiation, per-path
IDs and packet numbers, opening and validating a path, scheduling over available and backup
paths, abandoning a path mid-transfer, per-path idle and keep-alive, the path and ID limits,
and frames that must not move a path.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irohpy.errors import IrohError, PathError, QuicDecryptError, QuicError
from irohpy.quic import connection as qc
from irohpy.quic import frames as F
from irohpy.quic.packet import (
    build_short_header,
    open_one_rtt,
    packet_number_length,
    seal_packet,
    split_datagram,
    unprotect_headers,
)
from irohpy.quic.handshake import iroh_handshake
from irohpy.quic.recovery import APPLICATION
from tests.quic_conn_sim import ALPN, CLIENT_SECRET, SERVER_ID, SERVER_SECRET
from tests.quic_mp_sim import MpNet, Route, Side, mp_pair, two_routes


def pattern(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(251)) * (size // 251) + bytes(size % 251)


def open_second(client: Side, server: Side, net: MpNet, *, available: bool = True) -> int:
    pid = client.conn.open_path(net.routes[1].server_addr, net.now, available=available)
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathEstablished) and server.of(qc.PathEstablished)))
    return pid


def transfer(sender: Side, size: int, seed: int = 0) -> tuple[int, bytes]:
    sid = sender.conn.open_stream()
    data = pattern(size, seed)
    sender.conn.send_stream_data(sid, data, end_stream=True)
    return sid, data


# -- negotiation -------------------------------------------------------------------


@pytest.mark.parametrize(("client_max", "server_max", "on"), [(7, 7, True), (7, None, False), (None, 7, False)])
def test_multipath_is_on_only_when_both_sides_offer_it(client_max: int | None, server_max: int | None, on: bool) -> None:
    client, server, net = mp_pair(two_routes(), client_max=client_max, server_max=server_max)
    assert client.conn.multipath is on and server.conn.multipath is on
    theirs = client.conn.peer_transport_parameters
    assert theirs is not None and theirs.initial_max_path_id == server_max
    if not on:
        with pytest.raises(PathError) as err:
            client.conn.open_path(net.routes[1].server_addr, net.now)
        assert err.value.kind == "not-negotiated"
        # Without multipath every ID is path 0's: the single-path set.
        assert len(client.conn.host_cids) == len(client.conn._local_cids.cids())


def test_zero_length_connection_ids_with_multipath_are_a_protocol_violation() -> None:
    routes = two_routes()
    c = qc.QuicConnection(
        qc.QuicConfig(is_client=True, max_path_id=7),
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
    )
    c.connect(routes[0].server_addr, 0.0)
    s = qc.QuicConnection(
        qc.QuicConfig(is_client=False, max_path_id=7, cid_length=0),
        iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]),
    )
    client = Side(c)
    net = MpNet(client, Side(s), routes)
    net.run(5.0, lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated.error_code == QuicError.PROTOCOL_VIOLATION
    assert b"zero-length" in client.terminated.reason


def test_every_path_the_limits_allow_gets_its_own_connection_ids() -> None:
    client, server, net = mp_pair(two_routes())
    for side in (client, server):
        conn = side.conn
        # Paths 0..7, four IDs each (our cap), all distinct.
        assert sorted(conn._local_path_cids) == list(range(8))
        assert len(set(conn.host_cids)) == 8 * 4
        assert sorted(conn._peer_path_cids) == list(range(8))
    # What one side issued for a path is what the other uses for that path.
    for pid in range(1, 8):
        assert set(client.conn._peer_path_cids[pid].active[s][0] for s in client.conn._peer_path_cids[pid].active) == set(
            server.conn._local_path_cids[pid].cids()
        )


# -- opening, validation, scheduling ----------------------------------------------


def test_a_new_path_is_validated_with_padded_challenges_then_carries_data() -> None:
    client, server, net = mp_pair(two_routes())
    routes = net.routes
    pid = client.conn.open_path(routes[1].server_addr, net.now)
    assert pid == 1
    # Not validated yet: nothing but the challenge goes on it, in a full-size datagram.
    out = dict(client.conn.transmit(net.now))
    [probe] = out[routes[1].server_addr]
    assert len(probe) >= 1200
    assert client.conn.sendable_paths() == [0]
    net._carry(0, routes[1], probe)
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathEstablished) and server.of(qc.PathEstablished)))
    assert client.of(qc.PathEstablished) == [qc.PathEstablished(1)] == server.of(qc.PathEstablished)
    assert client.conn.sendable_paths() == [0, 1]
    # The server answered its own challenge too: both datagrams of its first flight were full.
    assert routes[1].bytes[1] >= 1200
    # Path 0 becomes backup: the bulk goes over the second route.
    client.conn.set_path_status(0, False)
    before = [r.bytes[0] for r in routes]
    sid, data = transfer(client, 1_000_000)
    net.run(net.now + 30.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data
    moved = [r.bytes[0] - b for r, b in zip(routes, before)]
    assert moved[1] > 1_000_000 and moved[0] < 20_000
    assert server.conn.path_status(0) == (True, False)


def test_each_path_numbers_its_packets_and_puts_its_id_in_the_nonce() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    client.conn.set_path_status(0, False)
    transfer(client, 50_000)
    out = dict(client.conn.transmit(net.now))
    datagram = out[net.routes[1].server_addr][0]
    p0 = client.conn.paths[0].recovery.spaces[APPLICATION].next_pn
    p1 = client.conn.paths[1].recovery.spaces[APPLICATION].next_pn
    assert 0 < p1 and p1 != p0
    keys = server.conn._one_rtt
    assert keys is not None
    [packet] = split_datagram(datagram, 8)
    unprotect_headers([packet], keys.recv_hp, server.conn.paths[1].ack.largest)
    with pytest.raises(QuicDecryptError):
        open_one_rtt(keys, packet, 0)
    assert open_one_rtt(keys, packet, 1)


def test_a_backup_path_only_keeps_alive_until_the_available_one_goes() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net, available=False)
    server.conn.set_path_status(1, False)
    routes = net.routes
    sid, data = transfer(client, 500_000)
    net.run(net.now + 30.0, lambda: sid in server.finished)
    assert routes[1].bytes[0] < 10_000 and routes[0].bytes[0] > 500_000
    # The available path dies and is abandoned: data switches to the backup path.
    routes[0].up = False
    client.conn.close_path(0, net.now)
    sid2, data2 = transfer(client, 500_000, 1)
    net.run(net.now + 30.0, lambda: sid2 in server.finished)
    assert bytes(server.streams[sid2]) == data2
    assert routes[1].bytes[0] > 500_000
    assert client.conn.peer_address == routes[1].server_addr


def test_abandoning_a_path_mid_transfer_loses_no_data() -> None:
    client, server, net = mp_pair(two_routes(), seed=3)
    open_second(client, server, net)
    routes = net.routes
    up, up_data = transfer(client, 3_000_000, 1)
    down, down_data = transfer(server, 3_000_000, 2)
    net.run(net.now + 30.0, lambda: len(server.streams.get(up, b"")) > 1_000_000)
    assert routes[0].bytes[0] > 300_000 and routes[1].bytes[0] > 300_000  # both paths carried data
    # Path 0 breaks with packets in flight; the client abandons it.
    path0_ids = [set(side.conn._local_path_cids[0].cids()) for side in (client, server)]
    routes[0].up = False
    client.conn.close_path(0, net.now)
    net.run(net.now + 60.0, lambda: up in server.finished and down in client.finished)
    assert bytes(server.streams[up]) == up_data and bytes(client.streams[down]) == down_data
    [ours] = client.of(qc.PathAbandoned)
    assert ours == qc.PathAbandoned(0, qc.APPLICATION_ABANDON_PATH, False, True)
    net.run(net.now + 5.0, lambda: bool(server.of(qc.PathAbandoned)))
    assert server.of(qc.PathAbandoned)[0].remote
    # After 3 PTO the path's state and IDs are gone, and each side allows one more path.
    net.advance(5.0)
    for side, ids in zip((client, server), path0_ids):
        assert 0 not in side.conn.paths
        assert not set(side.conn.host_cids) & ids
        assert {ev.cid for ev in side.of(qc.ConnectionIdRetired)} >= ids
    assert client.conn._remote_max_path_id == 8 and server.conn._local_max_path_id == 8
    assert client.terminated is None and server.terminated is None


def test_transfers_survive_loss_on_both_paths() -> None:
    client, server, net = mp_pair(two_routes(loss=0.03), seed=5)
    net.routes[0].loss = 0.03
    open_second(client, server, net)
    up, up_data = transfer(client, 2_000_000, 3)
    down, down_data = transfer(server, 2_000_000, 4)
    net.run(net.now + 120.0, lambda: up in server.finished and down in client.finished)
    assert bytes(server.streams[up]) == up_data and bytes(client.streams[down]) == down_data
    assert client.conn.lost_packets > 0


# -- timers ----------------------------------------------------------------------------


def test_a_dead_path_is_abandoned_after_the_path_idle_timeout() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    net.routes[1].up = False
    dead_at = net.now
    net.run(net.now + 30.0, lambda: bool(client.of(qc.PathAbandoned) or server.of(qc.PathAbandoned)))
    # Whichever side heard last on the path times it out first; the other learns it.
    [first] = client.of(qc.PathAbandoned) or server.of(qc.PathAbandoned)
    assert first.path_id == 1 and first.error_code == qc.PATH_UNSTABLE_OR_POOR and not first.remote
    assert 15.0 <= net.now - dead_at < 17.0
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathAbandoned) and server.of(qc.PathAbandoned)))
    sid, data = transfer(client, 100_000)
    net.run(net.now + 10.0, lambda: sid in server.finished)
    assert client.terminated is None and server.terminated is None


def test_a_relay_path_gets_thirty_seconds() -> None:
    client, server, net = mp_pair(two_routes())
    client.conn.open_path(net.routes[1].server_addr, net.now, relay=True)
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathEstablished) and server.of(qc.PathEstablished)))
    # The server's driver knows the path's address is a relay's.
    server.conn.set_path_idle_timeout(1, qc.RELAY_PATH_IDLE_TIMEOUT)
    net.routes[1].up = False
    dead_at = net.now
    net.advance(20.0)
    assert not client.of(qc.PathAbandoned) and not server.of(qc.PathAbandoned)
    net.run(net.now + 15.0, lambda: bool(client.of(qc.PathAbandoned)))
    assert 30.0 <= net.now - dead_at < 32.0


def test_keep_alives_hold_idle_paths_open() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    before = [r.datagrams[0] for r in net.routes]
    net.advance(60.0)
    assert not client.of(qc.PathAbandoned) and not server.of(qc.PathAbandoned)
    assert client.terminated is None and server.terminated is None
    # A PING on each path about every 5 s.
    for route, b in zip(net.routes, before):
        assert 8 <= route.datagrams[0] - b <= 40


def test_an_idle_path_is_pinged_by_one_side_and_answered_at_once() -> None:
    """Of two peers keeping a path alive, the one that pinged last keeps pinging and the
    other acknowledges at once: a server with many idle connections then wakes once per
    keep-alive, not for its own PINGs and again for delayed ACKs."""
    client, server, net = mp_pair([Route(("10.0.0.1", 1000), ("10.0.0.2", 2000))])
    net.advance(12.0)
    sides = {side: side.conn._paths[0] for side in (client, server)}
    pinger = max(sides, key=lambda side: sides[side].last_eliciting)
    other = server if pinger is client else client
    pinged, answered = sides[pinger].last_eliciting, sides[other].last_eliciting
    before = net.routes[0].datagrams[:]
    net.advance(60.0)
    assert sides[other].last_eliciting == answered  # nothing ack-eliciting from the other side
    assert sides[pinger].last_eliciting >= pinged + 55.0
    assert [n - b for n, b in zip(net.routes[0].datagrams, before)] == [12, 12]
    # The ACK comes back after the route's round trip (20 ms), not after max_ack_delay too.
    assert sides[pinger].recovery.rtt.latest < 0.021
    # The pinger stops: the other side takes over before the path's idle timeout.
    pinger.conn.set_path_keep_alive(0, 0.0)
    net.advance(60.0)
    assert sides[other].last_eliciting > answered + 50.0
    assert not client.of(qc.PathAbandoned) and not server.of(qc.PathAbandoned)
    assert client.terminated is None and server.terminated is None


def test_validation_failure_ends_in_an_abandoned_unvalidated_path() -> None:
    client, server, net = mp_pair(two_routes(up=False))
    pid = client.conn.open_path(net.routes[1].server_addr, net.now)
    net.run(net.now + 30.0, lambda: bool(client.of(qc.PathAbandoned)))
    assert client.of(qc.PathAbandoned) == [qc.PathAbandoned(pid, qc.PATH_UNSTABLE_OR_POOR, False, False)]
    assert not client.of(qc.PathEstablished)


@pytest.mark.parametrize("replace", [False, True])
def test_losing_the_last_path_closes_unless_a_new_one_comes(replace: bool) -> None:
    client, server, net = mp_pair(two_routes())
    # The peer abandons our only path (a client may, noq allows it remotely).
    server.conn.receive_datagram(inject(client.conn, F.encode_frames([F.PathAbandon(0, 0)])), net.routes[0].client_addr, net.now)
    server.drain_events()
    assert server.of(qc.PathAbandoned) == [qc.PathAbandoned(0, 0, True, True)]
    net.run(net.now + 2.0, lambda: bool(client.of(qc.PathAbandoned)))
    if replace:
        client.conn.open_path(net.routes[1].server_addr, net.now)
        net.run(net.now + 5.0, lambda: bool(server.of(qc.PathEstablished)))
        sid, data = transfer(client, 100_000)
        net.run(net.now + 10.0, lambda: sid in server.finished)
        net.advance(10.0)
        assert client.terminated is None and server.terminated is None
    else:
        net.run(net.now + 10.0, lambda: client.terminated is not None and server.terminated is not None)
        assert {client.terminated.error_code, server.terminated.error_code} == {QuicError.NO_VIABLE_PATH}  # type: ignore[union-attr]


def test_a_path_abandon_lost_after_its_path_drained_still_reaches_the_peer() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    routes = net.routes
    # The abandon goes out on path 0, whose route loses everything for a while (a relay
    # reconnecting); path 1's own state drains 3 PTO later, long before that loss shows.
    routes[0].up = False
    client.conn.close_path(1, net.now)
    net.advance(1.0)
    assert 1 not in client.conn.paths
    routes[0].up = True
    net.run(net.now + 5.0, lambda: bool(server.of(qc.PathAbandoned)))
    # The peer heard it from us, not from its 15 s path idle timeout.
    assert server.of(qc.PathAbandoned) == [qc.PathAbandoned(1, qc.APPLICATION_ABANDON_PATH, True, True)]


def test_probes_carry_the_oldest_frames_when_no_ack_comes_back() -> None:
    client, server, net = mp_pair(two_routes())
    route = net.routes[0]
    # The packet with the data is lost, and from then on so is everything the server sends (as
    # when the peer acknowledges down a path that died): no ACK will ever show the loss.
    route.up = False
    sid, data = transfer(client, 500)
    net.flush(0)
    route.up = True
    route.drop_from = 1
    net.run(net.now + 10.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data


# -- network change --------------------------------------------------------------------


def test_a_network_change_replaces_the_path_that_lost_its_local_address() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    routes = net.routes
    # The client's host is renumbered: what it sends on route 1 now comes from a new address,
    # and the server's answers to the old one go nowhere.
    routes[1].client_addr = ("fd00::99", 1000)
    client.conn.paths[0].recovery.pto_count = 3
    client.conn.handle_network_change([1], net.now)
    client.drain_events()
    assert client.of(qc.PathAbandoned) == [qc.PathAbandoned(1, qc.PATH_UNSTABLE_OR_POOR, False, True)]
    replacement = client.conn.paths[2]
    assert replacement.addr == routes[1].server_addr and not replacement.validated
    # The path that stays is probed at once, its backoff forgotten.
    kept = client.conn.paths[0]
    assert kept.recovery.pto_count == 0 and kept.ping_pending
    net.run(net.now + 5.0, lambda: qc.PathEstablished(2) in client.of(qc.PathEstablished)
            and qc.PathEstablished(2) in server.of(qc.PathEstablished))
    assert server.conn.paths[2].addr == routes[1].client_addr
    client.conn.set_path_status(0, False)
    before = routes[1].bytes[0]
    sid, data = transfer(client, 300_000)
    net.run(net.now + 10.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data and routes[1].bytes[0] - before > 300_000
    assert client.terminated is None and server.terminated is None


def test_a_network_change_on_the_only_path_opens_its_replacement_first() -> None:
    client, server, net = mp_pair(two_routes())
    routes = net.routes
    routes[0].client_addr = ("10.0.0.99", 1000)
    client.conn.handle_network_change([0], net.now)
    client.drain_events()
    assert client.of(qc.PathAbandoned) == [qc.PathAbandoned(0, qc.PATH_UNSTABLE_OR_POOR, False, True)]
    # Same 4-tuple as the old path, but from a new local address: it proves itself again.
    assert client.conn.paths[1].addr == routes[0].server_addr and not client.conn.paths[1].validated
    net.run(net.now + 5.0, lambda: qc.PathEstablished(1) in server.of(qc.PathEstablished)
            and qc.PathEstablished(1) in client.of(qc.PathEstablished))
    sid, data = transfer(client, 100_000)
    net.run(net.now + 10.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data
    assert client.terminated is None and server.terminated is None


def test_a_server_abandons_a_lost_path_but_never_its_last() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    server.conn.handle_network_change([1], net.now)
    server.drain_events()
    assert server.of(qc.PathAbandoned) == [qc.PathAbandoned(1, qc.PATH_UNSTABLE_OR_POOR, False, True)]
    assert [pid for pid, p in server.conn.paths.items() if not p.abandoned] == [0]
    server.conn.handle_network_change([0], net.now)
    assert not server.conn.paths[0].abandoned and server.conn.paths[0].ping_pending
    net.advance(5.0)
    assert client.terminated is None and server.terminated is None


def test_without_multipath_a_network_change_pings_the_path() -> None:
    client, server, net = mp_pair(two_routes(), server_max=None)
    home = client.conn.paths[0]
    home.recovery.pto_count = 2
    client.conn.handle_network_change([0], net.now)
    assert home.recovery.pto_count == 0 and home.ping_pending and not home.abandoned
    before = net.routes[0].datagrams[0]
    net.flush(0)
    assert net.routes[0].datagrams[0] == before + 1


# -- limits --------------------------------------------------------------------------


def test_the_peers_path_limit_blocks_and_is_reported() -> None:
    client, server, net = mp_pair(two_routes(), server_max=1)
    open_second(client, server, net)
    with pytest.raises(PathError) as err:
        client.conn.open_path(("fd00::2", 2001), net.now)
    assert err.value.kind == "paths-blocked"
    net.run(net.now + 2.0, lambda: server.conn.paths_blocked_received > 0)
    assert server.terminated is None


def test_missing_path_ids_block_and_are_reported() -> None:
    # The client completes its handshake a round trip before the server sends path IDs.
    routes = two_routes()
    c = qc.QuicConnection(
        qc.QuicConfig(is_client=True, max_path_id=7),
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
    )
    c.connect(routes[0].server_addr, 0.0)
    s = qc.QuicConnection(
        qc.QuicConfig(is_client=False, max_path_id=7), iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN])
    )
    net = MpNet(Side(c), Side(s), routes)
    net.run(5.0, lambda: c.handshake_complete)
    assert c.multipath
    with pytest.raises(PathError) as err:
        c.open_path(routes[1].server_addr, net.now)
    assert err.value.kind == "cids-blocked"
    net.run(net.now + 2.0, lambda: s.path_cids_blocked_received > 0 and len(c._peer_path_cids) > 1)
    assert c.open_path(routes[1].server_addr, net.now) == 1


def test_only_the_client_opens_paths_and_the_last_path_stays() -> None:
    client, server, net = mp_pair(two_routes())
    with pytest.raises(PathError) as err:
        server.conn.open_path(net.routes[1].client_addr, net.now)
    assert err.value.kind == "server"
    with pytest.raises(PathError) as err:
        client.conn.close_path(0, net.now)
    assert err.value.kind == "last-path"
    with pytest.raises(PathError) as err:
        client.conn.set_path_status(3, False)
    assert err.value.kind == "closed-path"


def test_path_status_reaches_the_peer_in_order() -> None:
    client, server, net = mp_pair(two_routes())
    open_second(client, server, net)
    client.conn.set_path_status(1, False)
    net.run(net.now + 2.0, lambda: bool(server.of(qc.PathStatusReceived)))
    client.conn.set_path_status(1, True)
    net.run(net.now + 2.0, lambda: len(server.of(qc.PathStatusReceived)) == 2)
    assert server.of(qc.PathStatusReceived) == [qc.PathStatusReceived(1, False), qc.PathStatusReceived(1, True)]
    assert server.conn.path_status(1) == (True, True)


# -- attacks ----------------------------------------------------------------------------


def test_a_path_response_from_elsewhere_validates_nothing() -> None:
    client, server, net = mp_pair(two_routes())
    routes = net.routes
    client.conn.open_path(routes[1].server_addr, net.now)
    [probe] = dict(client.conn.transmit(net.now))[routes[1].server_addr]
    server.conn.receive_datagram(probe, routes[1].client_addr, net.now)
    answers = dict(server.conn.transmit(net.now))[routes[1].client_addr]
    for data in answers:  # the genuine answer, relayed by someone at another address
        client.conn.receive_datagram(data, ("192.0.2.66", 4444), net.now)
    client.drain_events()
    assert not client.of(qc.PathEstablished) and not client.conn.paths[1].validated
    # The client challenges again; the answer that comes the path's way validates it.
    net.run(net.now + 5.0, lambda: bool(client.of(qc.PathEstablished)))
    assert client.of(qc.PathEstablished) == [qc.PathEstablished(1)]


def inject(sender: qc.QuicConnection, payload: bytes) -> bytes:
    """A genuine path-0 packet of ``sender`` carrying ``payload`` (frames as they are)."""
    keys = sender._one_rtt
    assert keys is not None
    space = sender.paths[0].recovery.spaces[APPLICATION]
    pn = space.next_pn
    space.next_pn = pn + 1
    payload = payload + bytes(max(0, 4 - len(payload)))
    header = build_short_header(sender._peer_path_cids[0].cid(), pn, packet_number_length(pn, space.largest_acked), keys.key_phase)
    return bytes(seal_packet(keys.send, keys.send_hp, header, payload, pn))


PATH_ID = st.one_of(st.integers(0, 10), st.integers(0, (1 << 32) - 1))
VARINT = st.one_of(st.integers(0, 64), st.integers(0, (1 << 62) - 1))


@st.composite
def path_acks(draw: st.DrawFn) -> F.Ack:
    largest = draw(st.integers(0, 300))
    first = draw(st.integers(0, largest))
    ecn = draw(st.none() | st.tuples(VARINT, VARINT, VARINT))
    return F.Ack([(largest - first, largest + 1)], draw(st.integers(0, 1000)), ecn, draw(PATH_ID))


@st.composite
def path_cids(draw: st.DrawFn) -> F.NewConnectionId:
    seq = draw(st.integers(0, 12))
    return F.NewConnectionId(
        seq, draw(st.integers(0, seq)), draw(st.binary(min_size=1, max_size=20)), draw(st.binary(min_size=16, max_size=16)), draw(PATH_ID)
    )


MP_FRAMES = st.one_of(
    path_acks(),
    path_cids(),
    st.builds(F.RetireConnectionId, st.integers(0, 12), PATH_ID),
    st.builds(F.PathAbandon, PATH_ID, VARINT),
    st.builds(F.PathStatus, PATH_ID, VARINT, st.booleans()),
    st.builds(F.MaxPathId, PATH_ID),
    st.builds(F.PathsBlocked, PATH_ID),
    st.builds(F.PathCidsBlocked, PATH_ID, VARINT),
    st.builds(F.PathChallenge, st.binary(min_size=8, max_size=8)),
    st.builds(F.PathResponse, st.binary(min_size=8, max_size=8)),
    st.just(F.Ping()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(MP_FRAMES, min_size=1, max_size=5), to_client=st.booleans(), multipath=st.booleans())
def test_random_multipath_frames_never_crash_and_never_move_a_path(
    frames: list[F.Frame], to_client: bool, multipath: bool
) -> None:
    limit = 7 if multipath else None
    client, server, net = mp_pair(two_routes(), client_max=limit, server_max=limit)
    sender, receiver = (server, client) if to_client else (client, server)
    try:
        payload = F.encode_frames(frames)
    except IrohError:
        return
    datagram = inject(sender.conn, payload)
    source = net.routes[0].server_addr if to_client else net.routes[0].client_addr
    receiver.conn.receive_datagram(datagram, source, net.now)
    receiver.conn.transmit(net.now)
    receiver.drain_events()
    if not multipath:
        # Every multipath frame (PING, PATH_CHALLENGE and PATH_RESPONSE aside) is refused.
        refused = any(not isinstance(f, (F.Ping, F.PathChallenge, F.PathResponse)) and _is_mp(f) for f in frames)
        if refused:
            assert receiver.terminated is not None and receiver.terminated.error_code == QuicError.PROTOCOL_VIOLATION
    # Nothing here validates or opens a path: only PATH_CHALLENGE/RESPONSE on a path do that.
    assert not receiver.of(qc.PathEstablished)
    assert all(p.path_id == 0 or not p.validated for p in receiver.conn.paths.values())
    try:
        net.run(net.now + 3.0, lambda: client.conn.is_closed and server.conn.is_closed)
    except TimeoutError:
        assert not client.conn.is_closed or not server.conn.is_closed


def _is_mp(frame: F.Frame) -> bool:
    if isinstance(frame, (F.Ack, F.NewConnectionId, F.RetireConnectionId)):
        return frame.path_id is not None
    return isinstance(frame, (F.PathAbandon, F.PathStatus, F.MaxPathId, F.PathsBlocked, F.PathCidsBlocked))
