"""Garbage into the QUIC connection in every state: it is dropped or closes the connection.

Random datagrams (raw, or shaped like our packets so they reach decryption) and random frames
sealed into genuine 1-RTT packets. The core never raises on peer input: a broken rule becomes a
CONNECTION_CLOSE with the transport error code; anything else raised is a bug. Only
``irohpy.errors`` types are tolerated, as the project's rule for parsers says.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irohpy.errors import IrohError
from irohpy.quic import connection as qc
from irohpy.quic import frames as F
from irohpy.quic.packet import PACKET_HANDSHAKE, PACKET_INITIAL, build_long_header, packet_number_length, seal_packet
from irohpy.quic.recovery import HANDSHAKE, INITIAL
from tests.quic_conn_sim import Link, Net, Ours, our_client, our_server
from tests.test_quic_connection import established, inject

VARINT = st.one_of(st.integers(0, 64), st.integers(0, (1 << 62) - 1))
SMALL = st.integers(0, 24)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def acks(draw: st.DrawFn) -> F.Ack:
    largest = draw(st.integers(0, 300))
    first = draw(st.integers(0, largest))
    return F.Ack([(largest - first, largest + 1)], draw(st.integers(0, 1000)))


@st.composite
def new_cids(draw: st.DrawFn) -> F.NewConnectionId:
    seq = draw(SMALL)
    return F.NewConnectionId(
        seq,
        draw(st.integers(0, seq)),
        draw(st.binary(min_size=1, max_size=20)),
        draw(st.binary(min_size=16, max_size=16)),
    )


FRAMES = st.one_of(
    st.builds(F.Padding, st.integers(1, 8)),
    st.just(F.Ping()),
    acks(),
    st.builds(F.ResetStream, SMALL, VARINT, st.one_of(SMALL, VARINT)),
    st.builds(F.StopSending, SMALL, VARINT),
    st.builds(F.Crypto, st.integers(0, 100_000), st.binary(max_size=40)),
    st.builds(F.NewToken, st.binary(min_size=1, max_size=16)),
    st.builds(F.Stream, SMALL, st.one_of(SMALL, st.integers(0, 1 << 40)), st.binary(max_size=64), st.booleans()),
    st.builds(F.MaxData, VARINT),
    st.builds(F.MaxStreamData, SMALL, VARINT),
    st.builds(F.MaxStreams, st.booleans(), st.integers(0, 1 << 60)),
    st.builds(F.DataBlocked, VARINT),
    st.builds(F.StreamDataBlocked, SMALL, VARINT),
    st.builds(F.StreamsBlocked, st.booleans(), st.integers(0, 1 << 60)),
    new_cids(),
    st.builds(F.RetireConnectionId, SMALL),
    st.builds(F.PathChallenge, st.binary(min_size=8, max_size=8)),
    st.builds(F.PathResponse, st.binary(min_size=8, max_size=8)),
    st.builds(F.ConnectionClose, VARINT, st.binary(max_size=16), SMALL, st.booleans()),
    st.just(F.HandshakeDone()),
    st.builds(F.Datagram, st.binary(max_size=64)),
    st.just(F.ImmediateAck()),
    st.builds(F.AckFrequency, SMALL, SMALL, SMALL, SMALL),
)


def feed(end: Ours, datagram: bytes, now: float) -> None:
    conn = end.conn
    try:
        conn.receive_datagram(datagram, ("127.0.0.1", 9), now)
        conn.datagrams_to_send(now)
        timer = conn.get_timer()
        if timer is not None:
            conn.handle_timer(max(timer, now))
            conn.datagrams_to_send(max(timer, now))
    except IrohError:
        pass
    if conn.state == qc.STATE_CLOSING:
        # A connection that closed itself said why, with a transport error code.
        events = []
        while (ev := conn.next_event()) is not None:
            events.append(ev)
        assert any(isinstance(ev, qc.ConnectionTerminated) for ev in events) or end.terminated is not None


def settle(client: Ours, server: Ours, net: Net) -> None:
    """Whatever happened, the pair either keeps working or both sides end; nothing gets stuck."""
    try:
        net.run(net.now + 5.0, lambda: client.conn.is_closed and server.conn.is_closed)
    except TimeoutError:
        assert not client.conn.is_closed or not server.conn.is_closed


@FUZZ
@given(frames=st.lists(FRAMES, min_size=1, max_size=6), to_client=st.booleans())
def test_random_frames_in_genuine_packets(frames: list[F.Frame], to_client: bool) -> None:
    client, server, net = established()
    sender, receiver = (server, client) if to_client else (client, server)
    try:
        payload = F.encode_frames(frames)
    except IrohError:
        return
    feed(receiver, inject(sender, payload), net.now)
    receiver._events()
    settle(client, server, net)


def _shaped(cid: bytes) -> st.SearchStrategy[bytes]:
    """Raw bytes, or bytes behind a short or Initial header that names ``cid``."""
    body = st.binary(min_size=0, max_size=1400)
    return st.one_of(
        body,
        body.map(lambda b: bytes([0x40 | (b[0] & 0x3F) if b else 0x40]) + cid + b),
        body.map(lambda b: bytes([0xC0, 0, 0, 0, 1, len(cid)]) + cid + b"\x08" + bytes(8) + b"\x00\x44\x00" + b),
    )


STATES = ["fresh-server", "connecting-client", "server-mid-handshake", "established", "closing", "draining"]


def _conn_in(state: str) -> tuple[Ours, Ours, Net, Ours]:
    """A pair and the end under test, put into ``state``."""
    if state == "fresh-server":
        client, server = our_client(), our_server()
        return client, server, Net(client, server, Link(), 1), server
    if state == "connecting-client":
        client, server = our_client(), our_server()
        net = Net(client, server, Link(), 1)
        client.send(0.0)
        return client, server, net, client
    if state == "server-mid-handshake":
        client, server = our_client(), our_server()
        net = Net(client, server, Link(), 1)
        for datagram in client.send(0.0):
            server.receive(datagram, 0.01)
        server.send(0.01)
        return client, server, net, server
    client, server, net = established()
    if state == "closing":
        client.conn.close(1, b"x")
        client.send(net.now)
    elif state == "draining":
        server.conn.close(1, b"x")
        net.flush(1)
        net.run(net.now + 1.0, lambda: client.conn.state == qc.STATE_DRAINING)
    return client, server, net, client


@FUZZ
@given(state=st.sampled_from(STATES), data=st.data())
def test_random_datagrams_in_every_state(state: str, data: st.DataObject) -> None:
    client, server, net, end = _conn_in(state)
    cids = end.conn.host_cids + ([end.conn.original_dcid] if end.conn.original_dcid else [])
    cid = data.draw(st.sampled_from(cids))
    for datagram in data.draw(st.lists(_shaped(cid), min_size=1, max_size=4)):
        feed(end, datagram, net.now + 0.001)
    if state == "established":
        # Garbage is dropped without harm: the connection still carries data.
        end._events()
        assert end.terminated is None
        sid = client.conn.open_stream()
        client.conn.send_stream_data(sid, b"still here", end_stream=True)
        net.run(net.now + 5.0, lambda: sid in server.finished)
        assert bytes(server.streams[sid]) == b"still here"


def seal_long(sender: Ours, space: int, payload: bytes) -> bytes:
    """An Initial or Handshake packet under ``sender``'s keys, padded to 1200 bytes."""
    conn = sender.conn
    keys = conn._spaces[space].send
    assert keys is not None
    sent = conn.recovery.spaces[space]
    pn = sent.next_pn
    sent.next_pn = pn + 1
    pn_len = packet_number_length(pn, sent.largest_acked)
    payload = payload + bytes(max(0, 1100 - len(payload)))
    packet_type = PACKET_INITIAL if space == INITIAL else PACKET_HANDSHAKE
    header = build_long_header(packet_type, conn._peer_cids.cid(), conn.host_cids[0], pn, pn_len, len(payload))
    return bytes(seal_packet(keys.key, keys.hp, header, payload, pn))


@FUZZ
@given(frames=st.lists(FRAMES, min_size=1, max_size=6), handshake_space=st.booleans())
def test_random_frames_during_the_handshake(frames: list[F.Frame], handshake_space: bool) -> None:
    client, server = our_client(), our_server()
    net = Net(client, server, Link(), 1)
    for datagram in client.send(0.0):
        server.receive(datagram, 0.01)
    for datagram in server.send(0.01):
        client.receive(datagram, 0.02)
    try:
        payload = F.encode_frames(frames)
    except IrohError:
        return
    space = HANDSHAKE if handshake_space else INITIAL
    if client.conn._spaces[space].send is None:
        return
    feed(server, seal_long(client, space, payload), 0.03)
    server._events()
    net.now = 0.03
    settle(client, server, net)


def test_tls_message_at_the_wrong_encryption_level_is_a_protocol_violation() -> None:
    client, server = our_client(), our_server()
    for datagram in client.send(0.0):
        server.receive(datagram, 0.01)
    server.send(0.01)
    hello_length = server.conn._spaces[INITIAL].crypto_recv.offset
    # A Finished message (type 20) continuing the client's Initial CRYPTO stream.
    finished = bytes([20, 0, 0, 32]) + bytes(32)
    server.receive(seal_long(client, INITIAL, F.encode_frames([F.Crypto(hello_length, finished)])), 0.02)
    assert server.terminated is not None
    assert server.terminated[0] == 0x0A and b"wrong encryption level" in server.terminated[1]
