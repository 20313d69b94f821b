"""irohpy's sans-IO QUIC connection, two of them wired in memory in simulated time.

No sockets: tests/quic_conn_sim.py moves datagrams over a seeded link. Real TLS (iroh's raw
public keys, mutual auth), real packet protection, real recovery and congestion control.
"""

from __future__ import annotations

import hashlib

import pytest

from irohpy.errors import DatagramError, QuicError, StreamError
from irohpy.quic import connection as qc
from irohpy.quic.ack import ECN_CE, ECN_ECT0
from irohpy.quic import frames as F
from irohpy.quic.buffer import Writer
from irohpy.quic.crypto import AES_128_GCM_SHA256
from irohpy.quic.handshake import iroh_handshake
from irohpy.quic.packet import build_retry, build_stateless_reset, build_version_negotiation, split_datagram
from irohpy.quic.recovery import APPLICATION, HANDSHAKE, INITIAL
from tests.quic_conn_sim import (
    ALPN,
    CLIENT_ID,
    CLIENT_SECRET,
    SERVER_ADDR,
    SERVER_ID,
    SERVER_SECRET,
    Link,
    Net,
    Ours,
    our_client,
    our_server,
)


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating test data."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def established(
    client_config: qc.QuicConfig | None = None,
    server_config: qc.QuicConfig | None = None,
    link: Link | None = None,
    seed: int = 1,
) -> tuple[Ours, Ours, Net]:
    client = our_client(client_config)
    server = our_server(server_config)
    net = Net(client, server, link or Link(), seed)
    net.run(30.0, lambda: client.handshake_done and server.handshake_done)
    return client, server, net


# -- handshake ---------------------------------------------------------------------


def test_handshake_authenticates_both_ends_and_drops_handshake_keys() -> None:
    client, server, net = established()
    assert client.alpn == server.alpn == b"irohpy/test/0"
    assert client.peer_id == SERVER_ID and server.peer_id == CLIENT_ID
    # Three flights: client Initial, server Initial+Handshake, client Handshake (Finished).
    assert net.now < 0.05
    # Let HANDSHAKE_DONE arrive, then both sides have dropped Initial and Handshake keys.
    net.run(1.0, lambda: client.conn._confirmed)
    for end in (client, server):
        conn = end.conn
        assert conn.state == qc.STATE_ESTABLISHED
        assert conn._spaces[INITIAL].discarded and conn._spaces[HANDSHAKE].discarded
        assert conn.recovery.spaces[INITIAL].discarded and conn.recovery.spaces[HANDSHAKE].discarded
        params = conn.peer_transport_parameters
        assert params is not None and params.initial_max_streams_bidi == 100
    client_tp = client.conn.peer_transport_parameters
    assert client_tp is not None and client_tp.original_destination_connection_id == client.conn.original_dcid


def test_client_datagrams_with_initial_are_padded_to_1200() -> None:
    client = our_client()
    first = client.send(0.0)
    assert len(first) == 1 and len(first[0]) == 1200


def test_wrong_server_key_fails_with_bad_certificate() -> None:
    client = our_client(expected=CLIENT_ID)  # not the server's key
    server = our_server()
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.terminated is not None and server.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == 0x100 + 42  # bad_certificate
    assert client.terminated[2] == qc.CAUSE_LOCAL
    assert server.terminated is not None and server.terminated[0] == 0x100 + 42
    assert server.terminated[2] == qc.CAUSE_PEER
    assert not client.handshake_done and not server.handshake_done


def test_alpn_mismatch_is_a_tls_alert() -> None:
    client = our_client()
    server = our_server(alpns=[b"other"])
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == 0x100 + 120  # no_application_protocol


def test_a_refused_client_hello_is_answered_in_the_first_flight() -> None:
    """The refused Initial's bytes count toward the amplification budget: the alert goes back at
    once, not only after the client's retransmission a PTO later."""
    client = our_client()
    server = our_server(alpns=[b"other"])
    for d in client.send(0.0):
        server.receive(d, 0.0)
    answer = server.send(0.0)
    assert answer
    for d in answer:
        client.receive(d, 0.001)
    assert client.terminated is not None and client.terminated[0] == 0x100 + 120


def test_server_sends_at_most_three_times_what_it_received_before_validation() -> None:
    client = our_client()
    server = our_server()
    net = Net(client, server, Link(), 1)
    sent = {0: 0, 1: 0}
    first_client = True

    def drop(src: int, data: bytes) -> bool:
        nonlocal first_client
        sent[src] += len(data)
        if src == 0:
            keep = first_client
            first_client = False
            return not keep  # only the client's first datagram reaches the server
        return False

    net.drop = drop
    with pytest.raises(TimeoutError):
        net.run(3.0, lambda: False)
    assert 0 < sent[1] <= 3 * 1200
    assert not server.conn._rec.address_validated


def test_handshake_survives_heavy_loss() -> None:
    lost = 0
    for seed in range(6):
        client, server, net = established(link=Link(loss=0.3), seed=seed)
        assert client.handshake_done and server.handshake_done
        lost += net.stats.lost
    assert lost > 0


def test_handshake_recovers_when_each_first_flight_is_lost() -> None:
    client = our_client()
    server = our_server()
    net = Net(client, server, Link(), 1)
    seen = [0, 0]

    def drop(src: int, data: bytes) -> bool:
        seen[src] += 1
        return seen[src] == 1  # the client's first Initial and the server's first flight

    net.drop = drop
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    assert net.stats.lost == 2
    # Both losses were repaired by PTO probes: about 1 s for the client's lost Initial (the
    # initial RTT of 333 ms, times 3), then the server's, from its first RTT sample.
    assert 0.9 < net.now < 3.0


def test_pacing_spreads_a_window_into_full_size_datagrams() -> None:
    client, server, net = established(link=Link(rate=1e9))
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, bytes(5_000_000), end_stream=True)
    net.run(30.0, lambda: sid in server.finished)
    conn = client.conn
    assert conn.recovery.cc.window > 100 * 1200  # CUBIC opened the window
    more = conn.open_stream()
    conn.send_stream_data(more, bytes(1_000_000), end_stream=True)
    burst = conn.datagrams_to_send(net.now)
    # The window would take a thousand datagrams; the pacer lets one burst go, what the window
    # allows in 2 ms (srtt is 20 ms here), and schedules the next for when it has refilled.
    # Each is full-size, a run a driver can hand to GSO.
    window, srtt = conn.recovery.cc.window, conn.recovery.rtt.smoothed
    assert window > 1000 * 1452 and 0.015 < srtt < 0.03
    assert len(burst) == pytest.approx(window * 0.002 / srtt / 1452, abs=2)
    assert all(len(d) == 1452 for d in burst)  # PMTU discovery found the link's 1452 bytes
    timer = conn.get_timer()
    assert timer is not None and net.now + 0.001 < timer < net.now + 0.002
    net.run(30.0, lambda: more in server.finished)


def test_pmtu_discovery_finds_the_link_mtu_and_survives_a_black_hole() -> None:
    link = Link(mtu=1400)
    client, server, net = established(link=link)
    sid = client.conn.open_stream()
    data = pattern(3_000_000, 11)
    client.conn.send_stream_data(sid, data, end_stream=True)
    net.run(30.0, lambda: len(server.streams.get(sid, b"")) > 1_000_000)
    mtu = client.conn.path.max_datagram_size
    assert 1400 - 20 <= mtu <= 1400  # binary search down to its granularity
    assert net.stats.too_big > 0 and net.stats.largest <= 1400
    # The route changes: nothing above 1250 bytes gets through any more.
    link.mtu = 1250
    net.run(60.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data
    assert client.conn._pmtud.black_holes == 1
    assert client.conn.path.max_datagram_size <= 1250


def test_pmtu_discovery_off_at_1200() -> None:
    cfg = qc.QuicConfig(is_client=True, max_datagram_size=1200)
    client, server, net = established(client_config=cfg)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, bytes(500_000), end_stream=True)
    net.run(30.0, lambda: sid in server.finished)
    assert client.conn.path.max_datagram_size == 1200
    params = server.conn.peer_transport_parameters
    assert params is not None and params.max_udp_payload_size == 1200


# -- streams -------------------------------------------------------------------------


def test_large_transfers_both_ways_arrive_intact() -> None:
    client, server, net = established()
    up = pattern(3_000_000, 1)
    down = pattern(2_000_000, 2)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, up, end_stream=True)
    net.run(60.0, lambda: sid in server.streams)
    server.conn.send_stream_data(sid, down, end_stream=True)
    uni = server.conn.open_stream(uni=True)
    server.conn.send_stream_data(uni, down[:100_000], end_stream=True)
    net.run(60.0, lambda: sid in server.finished and sid in client.finished and uni in client.finished)
    assert bytes(server.streams[sid]) == up
    assert bytes(client.streams[sid]) == down
    assert bytes(client.streams[uni]) == down[:100_000]
    assert uni & 3 == 3  # server-initiated unidirectional


def test_thousand_concurrent_streams() -> None:
    cfg = qc.QuicConfig(is_client=False, max_streams_bidi=1000)
    client, server, net = established(server_config=cfg)
    sids = []
    for i in range(1000):
        sid = client.conn.open_stream()
        client.conn.send_stream_data(sid, pattern(1000 + i, i), end_stream=True)
        sids.append(sid)
    net.run(60.0, lambda: len(server.finished) == 1000)
    for i, sid in enumerate(sids):
        assert bytes(server.streams[sid]) == pattern(1000 + i, i)
    # Every stream is finished on the server and forgotten once both halves are done.
    for sid in sids:
        server.conn.send_stream_data(sid, b"", end_stream=True)
    net.run(60.0, lambda: len(client.finished) == 1000)
    net.run(60.0, lambda: not server.conn.streams.recv and not server.conn.streams.send)


def test_a_fin_and_the_ack_that_finish_a_stream_in_one_burst_still_reach_the_app() -> None:
    """The peer's FIN (no data) and its ACK of our FIN in one receive burst: the stream is done
    on both halves before events go out, and must not be forgotten before its FIN does."""
    client, server, net = established()
    c, s = client.conn, server.conn
    now = net.now + 1.0
    sid = c.open_stream()
    c.send_stream_data(sid, b"hi")
    for d in c.datagrams_to_send(now):
        server.receive(d, now)
    s.send_stream_data(sid, b"reply")
    for d in s.datagrams_to_send(now):
        client.receive(d, now)
    assert bytes(client.streams[sid]) == b"reply" and sid not in client.finished
    c.send_stream_data(sid, b"", end_stream=True)
    our_fin = c.datagrams_to_send(now)
    s.send_stream_data(sid, b"", end_stream=True)
    their_fin = s.datagrams_to_send(now)  # sent before our FIN arrived: it acknowledges nothing new
    for d in our_fin:
        server.receive(d, now)
    now += 0.1  # past the ACK delay
    their_ack = s.datagrams_to_send(now)
    assert their_fin and their_ack
    c.receive_datagrams(their_fin + their_ack, SERVER_ADDR, now)
    client._events()
    assert sid in client.finished
    assert sid not in c.streams.recv and sid not in c.streams.send


def test_stream_limit_blocks_then_max_streams_credit_returns() -> None:
    cfg = qc.QuicConfig(is_client=False, max_streams_bidi=8, max_streams_uni=8)
    client, server, net = established(server_config=cfg)
    opened: list[int] = []
    for _ in range(8):
        sid = client.conn.open_stream()
        client.conn.send_stream_data(sid, b"x", end_stream=True)
        opened.append(sid)
    with pytest.raises(StreamError):
        client.conn.open_stream()
    assert client.conn._pending_streams_blocked[0] == 8  # STREAMS_BLOCKED(8) queued...
    net.flush(0)
    assert client.conn._pending_streams_blocked[0] == -1  # ...and sent
    net.run(10.0, lambda: len(server.finished) == 8)
    for sid in opened:
        server.conn.send_stream_data(sid, b"y", end_stream=True)
    # Finished peer streams return MAX_STREAMS credit; 40 more streams go through 8 at a time.
    total = 8
    while total < 48:
        net.run(10.0, lambda: client.conn.streams.local_limit[0] > total)
        while total < 48:
            try:
                sid = client.conn.open_stream()
            except StreamError:
                break
            client.conn.send_stream_data(sid, b"z", end_stream=True)
            total += 1
        net.run(10.0, lambda: len(server.finished) == total)
        for sid in list(server.finished):
            if sid in server.conn.streams.send:
                server.conn.send_stream_data(sid, b"", end_stream=True)
    assert len(server.finished) == 48


def test_small_flow_control_windows_still_deliver_everything() -> None:
    small = dict(stream_window=16_384, stream_max_window=65_536, conn_window=32_768, conn_max_window=131_072)
    client, server, net = established(
        qc.QuicConfig(is_client=True, **small), qc.QuicConfig(is_client=False, **small)
    )
    data = [pattern(500_000, i) for i in range(3)]
    sids = []
    for chunk in data:
        sid = client.conn.open_stream()
        client.conn.send_stream_data(sid, chunk, end_stream=True)
        sids.append(sid)
    net.run(120.0, lambda: all(s in server.finished for s in sids))
    for sid, chunk in zip(sids, data, strict=True):
        assert bytes(server.streams[sid]) == chunk
    # The sender ran into the connection limit and said so with DATA_BLOCKED.
    assert client.conn.streams.conn_send.blocked_reported > 0
    # The receive windows grew past their start but never beyond their maximum.
    conn_recv = server.conn.streams.conn_recv
    assert 32_768 < conn_recv.window <= 131_072


def test_reset_and_stop_sending_carry_their_codes() -> None:
    client, server, net = established()
    a = client.conn.open_stream()
    client.conn.send_stream_data(a, b"partial")
    net.run(5.0, lambda: a in server.streams)
    client.conn.reset_stream(a, 7)
    net.run(5.0, lambda: a in server.resets)
    assert server.resets[a] == 7
    b = client.conn.open_stream()
    client.conn.send_stream_data(b, b"hello")
    net.run(5.0, lambda: b in server.streams)
    server.conn.stop_stream(b, 9)
    net.run(5.0, lambda: b in client.stops and b in server.resets)
    assert client.stops[b] == 9 and server.resets[b] == 9  # answered with RESET_STREAM(9)
    with pytest.raises(StreamError):
        client.conn.send_stream_data(b, b"more")


# -- datagrams, close, idle -------------------------------------------------------------


def test_datagrams_both_ways() -> None:
    client, server, net = established()
    for i in range(20):
        client.conn.send_datagram(b"up %d" % i)
        server.conn.send_datagram(b"down %d" % i)
    net.run(5.0, lambda: len(server.datagrams) == 20 and len(client.datagrams) == 20)
    assert server.datagrams == [b"up %d" % i for i in range(20)]
    assert client.datagrams == [b"down %d" % i for i in range(20)]
    with pytest.raises(DatagramError):
        client.conn.send_datagram(bytes(1300))


def test_datagrams_refused_when_not_offered() -> None:
    client, server, net = established(server_config=qc.QuicConfig(is_client=False, max_datagram_frame_size=0))
    with pytest.raises(DatagramError):
        client.conn.send_datagram(b"x")


def test_application_close_reaches_the_peer_and_both_finish() -> None:
    client, server, net = established()
    client.conn.close(42, b"bye")
    net.run(10.0, lambda: client.conn.is_closed and server.conn.is_closed)
    assert client.terminated == (42, b"bye", qc.CAUSE_LOCAL)
    assert server.terminated == (42, b"bye", qc.CAUSE_PEER)
    assert client.conn.datagrams_to_send(net.now) == []


def test_application_close_during_the_handshake_is_an_application_error() -> None:
    client = our_client()
    server = our_server()
    net = Net(client, server, Link(), 1)
    net.flush(0)  # the ClientHello is on its way; the client gives up before any answer
    client.conn.close(99, b"changed my mind")
    net.run(10.0, lambda: server.terminated is not None)
    # Before 1-RTT the application's code must not leak: the peer sees APPLICATION_ERROR.
    assert server.terminated is not None and server.terminated[0] == QuicError.APPLICATION_ERROR


def test_stateless_reset_from_the_client_side_is_recognised_by_the_server() -> None:
    client, server, net = established()
    net.run(2.0, lambda: len(server.conn._peer_cids.active) > 1)
    seq = max(server.conn._peer_cids.active)
    token = client.conn._local_cids.token(seq)
    server.receive(build_stateless_reset(token, 30), net.now)
    assert server.terminated is not None and server.terminated[2] == qc.CAUSE_RESET


def test_transport_error_closes_with_its_code() -> None:
    client, server, net = established()
    # A STREAM frame on a client stream the client never opened: STREAM_STATE_ERROR (0x05).
    payload = bytes([0x0A, 0x00, 0x01]) + b"x"  # STREAM|LEN, stream 0, length 1
    client.receive(inject(server, payload), net.now)
    net.flush(0)
    net.run(10.0, lambda: server.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == QuicError.STREAM_STATE_ERROR
    assert server.terminated is not None and server.terminated[0] == QuicError.STREAM_STATE_ERROR
    assert server.terminated[2] == qc.CAUSE_PEER


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        # Past the stream's receive window (1,250,000 by default).
        ([F.Stream(1, 1_250_000, b"x")], QuicError.FLOW_CONTROL_ERROR),
        # Beyond the 100 bidirectional streams the client allows.
        ([F.Stream(4 * 100 + 1, 0, b"x")], QuicError.STREAM_LIMIT_ERROR),
        # More connection IDs than the client's active_connection_id_limit (5).
        (
            [F.NewConnectionId(i, 0, bytes([i]) * 8, bytes([i]) * 16) for i in range(1, 9)],
            QuicError.CONNECTION_ID_LIMIT_ERROR,
        ),
        # A final size below data already received.
        ([F.Stream(1, 0, b"abcdef"), F.ResetStream(1, 0, 3)], QuicError.FINAL_SIZE_ERROR),
        ([F.HandshakeDone(), F.Ping(), F.Padding(3), F.MaxData(1 << 30)], -1),
    ],
)
def test_frames_that_break_the_rules_close_with_their_code(frames: list[F.Frame], code: int) -> None:
    client, server, net = established()
    client.receive(inject(server, F.encode_frames(frames)), net.now)
    if code < 0:
        assert client.terminated is None
        return
    assert client.terminated is not None and client.terminated[0] == code
    net.flush(0)
    net.run(5.0, lambda: server.terminated is not None)
    assert server.terminated is not None and server.terminated[0] == code


def test_a_receive_burst_is_delivered_in_one_pass() -> None:
    client, server, net = established()
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, pattern(8_000, 6), end_stream=True)
    burst = client.send(net.now)
    assert len(burst) > 1
    server.conn.receive_datagrams(burst, ("127.0.0.1", 1), net.now + 0.01)
    events = []
    while (ev := server.conn.next_event()) is not None:
        events.append(ev)
    data = [ev for ev in events if isinstance(ev, qc.StreamDataReceived)]
    assert len(data) == 1 and data[0].data == pattern(8_000, 6) and data[0].fin


def test_idle_timeout_closes_silently() -> None:
    cfg = qc.QuicConfig(is_client=True, idle_timeout=2.0)
    client, server, net = established(client_config=cfg)
    net.run(60.0, lambda: client.conn.is_closed and server.conn.is_closed)
    assert client.terminated is not None and client.terminated[2] == qc.CAUSE_IDLE
    assert server.terminated is not None and server.terminated[2] == qc.CAUSE_IDLE  # min of both sides
    assert 2.0 <= net.now < 3.0


def test_keep_alive_holds_an_idle_connection_open() -> None:
    cfg = qc.QuicConfig(is_client=True, idle_timeout=2.0, keep_alive=0.5)
    client, server, net = established(client_config=cfg)
    with pytest.raises(TimeoutError):
        net.run(20.0, lambda: client.conn.is_closed or server.conn.is_closed)
    assert client.terminated is None and server.terminated is None


def test_stateless_reset_is_recognised() -> None:
    client, server, net = established()
    token = server.conn._local_cids.token(0)
    client.receive(build_stateless_reset(token, 40), net.now)
    assert client.terminated is not None and client.terminated[2] == qc.CAUSE_RESET
    assert client.conn.is_closed
    # Random bytes of the same shape are not a reset.
    client2, server2, net2 = established(seed=2)
    client2.receive(build_stateless_reset(bytes(16), 40), net2.now)
    assert client2.terminated is None


# -- connection IDs and key update ------------------------------------------------------


def test_connection_ids_are_issued_rotated_and_retired() -> None:
    client, server, net = established()
    net.run(2.0, lambda: len(client.conn._peer_cids.active) == 4 and len(server.conn._peer_cids.active) == 4)
    old = set(server.conn.host_cids)
    server.conn.rotate_connection_ids()
    data = pattern(200_000, 5)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, data, end_stream=True)
    net.run(10.0, lambda: sid in server.finished and not (set(server.conn.host_cids) & old))
    assert bytes(server.streams[sid]) == data
    assert client.conn._peer_cids.cid() in server.conn.host_cids
    assert len(server.conn.host_cids) == 4


def test_key_update_mid_transfer() -> None:
    client, server, net = established()
    net.run(1.0, lambda: client.conn._confirmed)
    data = pattern(2_000_000, 3)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, data, end_stream=True)
    net.run(10.0, lambda: len(server.streams.get(sid, b"")) > 200_000)
    client.conn.request_key_update()
    assert client.conn.key_phase == 1
    with pytest.raises(QuicError):
        client.conn.request_key_update()  # not before the first one is acknowledged
    net.run(10.0, lambda: server.conn.key_phase == 1 and client.conn._key_update_allowed)
    # The server may start the next one once a packet it sent in phase 1 was acknowledged.
    net.run(10.0, lambda: len(server.streams[sid]) > 1_000_000 and server.conn._key_update_allowed)
    assert sid not in server.finished
    server.conn.request_key_update()  # the other side starts the next one
    net.run(30.0, lambda: sid in server.finished)
    assert bytes(server.streams[sid]) == data
    assert client.conn.key_phase == server.conn.key_phase == 0


# -- lossy links -----------------------------------------------------------------------


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.20])
def test_lossy_reordering_duplicating_link_delivers_intact(loss: float) -> None:
    link = Link(loss=loss, reorder=loss, duplicate=loss)
    client, server, net = established(link=link, seed=int(loss * 100))
    up = pattern(400_000, 7)
    down = pattern(300_000, 8)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, up, end_stream=True)
    server_sid = server.conn.open_stream()
    server.conn.send_stream_data(server_sid, down, end_stream=True)
    for i in range(10):
        client.conn.send_datagram(b"dg %d" % i)
    net.run(600.0, lambda: sid in server.finished and server_sid in client.finished)
    assert bytes(server.streams[sid]) == up
    assert bytes(client.streams[server_sid]) == down
    assert net.stats.lost > 0
    assert client.conn.recovery.cc.congestion_events > 0
    assert set(server.datagrams) <= {b"dg %d" % i for i in range(10)}


def inject(sender: Ours, payload: bytes) -> bytes:
    """A 1-RTT packet from ``sender``'s keys carrying ``payload`` as it is (for malformed frames)."""
    from irohpy.quic.packet import build_short_header, packet_number_length, seal_packet

    conn = sender.conn
    keys = conn._one_rtt
    assert keys is not None
    space = conn.recovery.spaces[APPLICATION]
    pn = space.next_pn
    space.next_pn = pn + 1
    pn_len = packet_number_length(pn, space.largest_acked)
    if len(payload) < 4:
        payload = payload + bytes(4 - len(payload))
    header = build_short_header(conn._peer_cids.cid(), pn, pn_len, keys.key_phase)
    return bytes(seal_packet(keys.send, keys.send_hp, header, payload, pn))


def test_both_sides_agree_on_the_negotiated_cipher_suite() -> None:
    client, server, _ = established()
    c, s = client.conn._one_rtt, server.conn._one_rtt
    assert c is not None and s is not None
    assert c.send.cipher_suite == s.recv.cipher_suite == AES_128_GCM_SHA256  # our TLS prefers it (AES-NI)


# -- Retry and Version Negotiation ---------------------------------------------------


def retry_for(first: bytes, token: bytes = b"retry-token") -> tuple[bytes, bytes, bytes]:
    """A Retry answering a client's first datagram: (retry packet, original DCID, Retry SCID)."""
    initial = split_datagram(first, 8)[0]
    retry_scid = bytes(range(10, 18))
    return build_retry(initial.scid, retry_scid, initial.dcid, token), initial.dcid, retry_scid


def test_client_follows_a_retry_and_the_server_checks_its_ids() -> None:
    client = our_client()
    [first] = client.send(0.0)
    retry, original, retry_scid = retry_for(first)
    forged, _, _ = retry_for(first)
    client.receive(forged[:-1] + bytes([forged[-1] ^ 1]), 0.01)  # bad integrity tag: ignored
    assert client.conn._token == b""
    client.receive(retry, 0.01)
    assert client.conn._token == b"retry-token"
    [again] = client.send(0.01)
    assert len(again) == 1200 and b"retry-token" in again[:64]
    # The endpoint validated the token; the connection is told the ids the Retry involved.
    server = Ours(
        qc.QuicConnection(
            qc.QuicConfig(is_client=False),
            iroh_handshake(SERVER_SECRET, is_client=False, alpns=[b"irohpy/test/0"]),
            original_dcid=original,
            retry_scid=retry_scid,
        )
    )
    server.receive(again, 0.02)
    net = Net(client, server, Link(), 1)
    net.now = 0.02
    net.flush(1)
    net.run(10.0, lambda: client.handshake_done and server.handshake_done)
    params = client.conn.peer_transport_parameters
    assert params is not None and params.retry_source_connection_id == retry_scid
    assert params.original_destination_connection_id == original
    # A second Retry is ignored.
    client.receive(retry_for(first, b"other")[0], net.now)
    assert client.conn._token == b"retry-token" and client.terminated is None


def test_server_that_forgot_the_retry_fails_the_client_check() -> None:
    client = our_client()
    [first] = client.send(0.0)
    retry, _, _ = retry_for(first)
    client.receive(retry, 0.01)
    server = our_server()  # not told about the Retry: its transport parameters cannot match
    net = Net(client, server, Link(), 1)
    net.now = 0.01
    net.run(10.0, lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == QuicError.TRANSPORT_PARAMETER_ERROR


def test_version_negotiation_without_a_common_version_ends_the_attempt() -> None:
    client = our_client()
    [first] = client.send(0.0)
    initial = split_datagram(first, 8)[0]
    client.receive(build_version_negotiation(initial.scid, initial.dcid, (0x6B3343CF,)), 0.01)
    assert client.terminated is not None and client.terminated[1] == b"no common QUIC version"
    assert client.conn.is_closed


def test_key_update_old_keys_are_dropped_after_three_ptos() -> None:
    client, server, net = established()
    net.run(1.0, lambda: client.conn._confirmed)
    client.conn.request_key_update()
    client.conn.ping()
    net.run(5.0, lambda: server.conn.key_phase == 1)
    keys = server.conn._one_rtt
    assert keys is not None and keys.recv_prev is not None
    net.run(5.0, lambda: keys.recv_prev is None)


def test_a_closing_connection_answers_with_its_close_a_bounded_number_of_times() -> None:
    client, server, net = established()
    client.conn.close(3, b"bye")
    sent = [len(client.conn.datagrams_to_send(net.now))]
    for i in range(100):
        client.conn.receive_datagram(inject(server, bytes([0x01])), ("127.0.0.1", 1), net.now + 0.001 * i)
        sent.append(len(client.conn.datagrams_to_send(net.now + 0.001 * i)))
    assert sent[0] == 1 and 1 < sum(sent) <= 1 + qc.MAX_CLOSE_RESPONSES


class EcnMarking(Ours):
    """Our end behind a socket that reports ECN codepoints: everything arrives with ``mark``."""

    mark = ECN_ECT0

    def receive(self, data: bytes, now: float) -> None:
        self.conn.receive_datagram(data, ("127.0.0.1", 1), now, ecn=self.mark)
        self._events()


def test_ecn_counts_are_echoed_and_ce_is_congestion() -> None:
    client = our_client()
    server = EcnMarking(our_server().conn)
    net = Net(client, server, Link(), 1)
    net.run(5.0, lambda: client.handshake_done and server.handshake_done)
    sid = client.conn.open_stream()
    client.conn.send_stream_data(sid, bytes(2_000_000), end_stream=True)
    net.run(30.0, lambda: len(server.streams.get(sid, b"")) > 500_000)
    assert client.conn.recovery.cc.congestion_events == 0
    assert server.conn.path.ack.ect0 > 0
    server.mark = ECN_CE  # a router on the way signals congestion
    net.run(30.0, lambda: sid in server.finished)
    assert client.conn.recovery.spaces[APPLICATION].ecn_ce > 0
    assert client.conn.recovery.cc.congestion_events > 0
    assert net.stats.lost == 0


def test_a_dial_to_a_placeholder_goes_on_where_the_server_answered() -> None:
    """A client dialing a placeholder (iroh's mapped address, which fans out over every path)
    takes the address of the first answer that authenticates, and only that one."""
    client = qc.QuicConnection(qc.QuicConfig(is_client=True), iroh_handshake(
        CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID))
    client.connect("every path", 0.0)
    server = our_server().conn
    now = 0.0
    for _ in range(6):
        now += 0.01
        for data in client.datagrams_to_send(now):
            server.receive_datagram(data, ("10.0.0.1", 1000), now)
        for data in server.datagrams_to_send(now):
            client.receive_datagram(b"\x40" + bytes(40), ("192.0.2.9", 9), now)  # junk first
            client.receive_datagram(data, ("10.0.0.2", 2000), now)
            client.receive_datagram(data, ("10.0.0.3", 3000), now)  # a copy from elsewhere
    assert client.handshake_complete and server.handshake_complete
    assert client.peer_address == ("10.0.0.2", 2000)
    assert server.peer_address == ("10.0.0.1", 1000)


def _handshaken(client_addr: object, server_addr: object) -> tuple[qc.QuicConnection, qc.QuicConnection, float]:
    client = qc.QuicConnection(qc.QuicConfig(is_client=True), iroh_handshake(
        CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID))
    client.connect(server_addr, 0.0)
    server = our_server().conn
    now = 0.0
    for _ in range(6):
        now += 0.01
        for data in client.datagrams_to_send(now):
            server.receive_datagram(data, client_addr, now)
        for data in server.datagrams_to_send(now):
            client.receive_datagram(data, server_addr, now)
    assert client.handshake_complete and server.handshake_complete
    return client, server, now


def test_the_server_follows_a_rebound_client_and_checks_the_new_address() -> None:
    old, new, elsewhere = ("10.0.0.1", 1000), ("10.0.0.1", 4000), ("192.0.2.66", 6666)
    client, server, now = _handshaken(old, ("10.0.0.2", 2000))
    sid = client.open_stream()
    client.send_stream_data(sid, b"before")
    first = client.datagrams_to_send(now)
    client.send_stream_data(sid, b" after")
    second = client.datagrams_to_send(now)
    for data in second:  # the NAT rebound: the newest packet comes from a new port
        server.receive_datagram(data, new, now)
    assert server.peer_address == new
    for data in first:  # an older packet from elsewhere (reordered, or replayed) moves nothing
        server.receive_datagram(data, elsewhere, now)
    for data in second:  # nor does a replay of the newest
        server.receive_datagram(data, elsewhere, now)
    assert server.peer_address == new
    out = server.transmit(now)
    assert out and all(addr == new for addr, _ in out)
    home = server.paths[0]
    assert home.challenges and not home.validated, "the new address is checked with a PATH_CHALLENGE"
    for data in out[0][1]:
        client.receive_datagram(data, ("10.0.0.2", 2000), now)
    for data in client.datagrams_to_send(now):
        server.receive_datagram(data, new, now)
    assert home.validated


def test_the_largest_ack_frame_we_write_fits_its_bound() -> None:
    """Packets take their ACK straight into their buffer when ``_ACK_FRAME_MAX`` bytes are
    free: every field of the largest one we write (32 ranges, ECN, a path id) at 8 bytes."""
    top = 2**62 - 1
    ranges = [(top - (2 * i + 1) * 2**40, top - 2 * i * 2**40) for i in range(qc.MAX_ACK_FRAME_RANGES)]
    w = Writer(qc._ACK_FRAME_MAX)
    F.push_ack(w, ranges, 2**40, (2**40, 2**40, 2**40), 2**32 - 1)
    assert w.tell() > qc._ACK_FRAME_MAX - 16


def test_ranges_the_peer_saw_in_a_pure_ack_are_not_reported_again() -> None:
    """RFC 9000 §13.2.4: once the peer acknowledges a packet that held only our ACK, the
    ranges in it are old news. An idle server only ever sends pure ACKs, so without this a gap
    its peer once left would ride in every ACK for the life of the connection."""
    client_addr, server_addr = ("10.0.0.1", 1000), ("10.0.0.2", 2000)
    client, server, now = _handshaken(client_addr, server_addr)

    def exchange(deliver: bool) -> None:
        client.ping()
        for data in client.datagrams_to_send(now):
            if deliver:
                server.receive_datagram(data, client_addr, now)
        for data in server.datagrams_to_send(now):
            client.receive_datagram(data, server_addr, now)

    for _ in range(3):
        now += 0.01
        exchange(True)
    received = server.paths[0].ack
    assert len(received.ranges()) == 1
    exchange(False)  # a lost PING leaves a gap
    exchange(True)
    assert len(received.ranges()) == 2, "the gap is reported until the client has seen it"
    exchange(True)  # the client's ACK covers the server's pure ACK that reported the gap
    assert len(received.ranges()) == 1
    assert client.state == server.state == qc.STATE_ESTABLISHED
