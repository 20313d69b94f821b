"""QUIC Address Discovery in the sans-IO engine: roles, OBSERVED_ADDRESS frames, sequence rules.

Two real QuicConnections (real TLS, real packet protection) on the simulated link of
tests/quic_conn_sim.py; the server sees the client at an address the test sets, as a relay's
QAD service sees an endpoint behind a NAT.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irohpy.errors import QuicError
from irohpy.quic import connection as qc
from irohpy.quic import frames as F
from irohpy.quic import transport_params as tp
from irohpy.quic.address_discovery import (
    ROLE_NONE,
    AddressDiscovery,
    ObservedAddressReceived,
    encode_address,
)
from irohpy.quic.packet import PACKET_ONE_RTT
from irohpy.quic.varint import encode_varint
from tests.quic_conn_sim import Link, Net, Ours, our_client, our_server
from tests.test_quic_connection import inject

NAT = ("203.0.113.21", 40000)


class Seen(Ours):
    """An end that records QAD events and receives from the address ``self.source``."""

    def __init__(self, end: Ours, source: object) -> None:
        super().__init__(end.conn)
        self.source = source
        self.observed: list[ObservedAddressReceived] = []
        self.sent_reports: list[F.ObservedAddress] = []

    def _events(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, ObservedAddressReceived):
                self.observed.append(ev)
            elif isinstance(ev, qc.HandshakeCompleted):
                self.handshake_done = True
            elif isinstance(ev, qc.ConnectionTerminated) and self.terminated is None:
                self.terminated = (ev.error_code, ev.reason, ev.cause)

    def receive(self, data: bytes, now: float) -> None:
        self.conn.receive_datagram(data, self.source, now)
        self._events()


def pair(client_role: int | None, server_role: int | None, *, source: object = NAT,
         link: Link | None = None, seed: int = 1) -> tuple[Seen, Seen, Net]:
    client = Seen(our_client(qc.QuicConfig(is_client=True, observed_address_role=client_role)), ("192.0.2.1", 7842))
    server = Seen(our_server(qc.QuicConfig(is_client=False, observed_address_role=server_role)), source)
    net = Net(client, server, link or Link(), seed)
    net.run(30.0, lambda: client.handshake_done and server.handshake_done)
    return client, server, net


def test_the_client_learns_the_address_the_server_sees() -> None:
    client, server, net = pair(tp.ROLE_RECEIVE, tp.ROLE_SEND)
    net.run(net.now + 5.0, lambda: bool(client.observed))
    assert client.observed == [ObservedAddressReceived("203.0.113.21", 40000, 0)]
    params = server.conn.peer_transport_parameters
    assert params is not None and params.observed_address_role == tp.ROLE_RECEIVE
    params = client.conn.peer_transport_parameters
    assert params is not None and params.observed_address_role == tp.ROLE_SEND


def test_an_ipv6_and_a_v4_mapped_address() -> None:
    client, _, net = pair(tp.ROLE_RECEIVE, tp.ROLE_SEND, source=("2001:db8::7", 5555, 0, 0))
    net.run(net.now + 5.0, lambda: bool(client.observed))
    assert client.observed[0] == ObservedAddressReceived("2001:db8::7", 5555, 0)
    client, _, net = pair(tp.ROLE_RECEIVE, tp.ROLE_BOTH, source=("::ffff:198.51.100.9", 1234, 0, 0))
    net.run(net.now + 5.0, lambda: bool(client.observed))
    assert client.observed[0] == ObservedAddressReceived("198.51.100.9", 1234, 0)


def test_a_new_path_address_is_reported_again_with_a_new_sequence_number() -> None:
    client, server, net = pair(tp.ROLE_RECEIVE, tp.ROLE_SEND)
    net.run(net.now + 5.0, lambda: bool(client.observed))
    server.source = ("203.0.113.21", 40001)  # the NAT rebinds
    client.conn.ping()
    net.flush(0)
    net.run(net.now + 5.0, lambda: len(client.observed) == 2)
    assert client.observed[1] == ObservedAddressReceived("203.0.113.21", 40001, 1)
    # The same address again is not news, whatever else the client sends.
    client.conn.ping()
    net.flush(0)
    net.run(net.now + 5.0, lambda: not net.heap)
    assert len(client.observed) == 2


@pytest.mark.parametrize(("client_role", "server_role"), [
    (None, tp.ROLE_SEND),           # the client asked for nothing
    (tp.ROLE_RECEIVE, None),        # the server does not do QAD
    (tp.ROLE_SEND, tp.ROLE_SEND),   # both only send
    (tp.ROLE_RECEIVE, tp.ROLE_RECEIVE),
])
def test_no_frames_unless_send_meets_receive(client_role: int | None, server_role: int | None) -> None:
    client, server, net = pair(client_role, server_role)
    client.conn.ping()
    server.conn.ping()
    net.run(net.now + 5.0, lambda: not net.heap)
    assert client.observed == [] and server.observed == []
    assert client.terminated is None and server.terminated is None


def test_both_roles_report_both_ways() -> None:
    client, server, net = pair(tp.ROLE_BOTH, tp.ROLE_BOTH)
    net.run(net.now + 5.0, lambda: bool(client.observed) and bool(server.observed))
    assert client.observed[0].host == "203.0.113.21"
    assert server.observed[0] == ObservedAddressReceived("192.0.2.1", 7842, 0)


def test_a_report_that_was_not_negotiated_is_a_protocol_violation() -> None:
    client, server, net = pair(tp.ROLE_SEND, tp.ROLE_SEND)
    client.receive(inject(server, F.encode_frames([F.ObservedAddress(0, bytes(4), 1)])), net.now)
    assert client.terminated is not None and client.terminated[0] == QuicError.PROTOCOL_VIOLATION


def test_stale_sequence_numbers_are_ignored_and_the_newest_wins() -> None:
    client, server, net = pair(tp.ROLE_RECEIVE, tp.ROLE_SEND)
    net.run(net.now + 5.0, lambda: bool(client.observed))

    def report(seq: int, last: int) -> None:
        client.receive(inject(server, F.encode_frames([F.ObservedAddress(seq, bytes([10, 0, 0, last]), 9)])), net.now)

    report(5, 5)
    report(3, 3)   # older than 5: ignored
    report(5, 6)   # not newer: ignored
    report(6, 5)   # newer, same address: no event
    report(7, 7)
    assert [(o.host, o.sequence) for o in client.observed[1:]] == [("10.0.0.5", 5), ("10.0.0.7", 7)]
    assert client.terminated is None


def test_a_lost_report_is_sent_again() -> None:
    link = Link()
    client = Seen(our_client(qc.QuicConfig(is_client=True, observed_address_role=tp.ROLE_RECEIVE)), ("192.0.2.1", 1))
    server = Seen(our_server(qc.QuicConfig(is_client=False, observed_address_role=tp.ROLE_SEND)), NAT)
    net = Net(client, server, link, 3)
    dropped: list[int] = []

    def drop(src: int, data: bytes) -> bool:
        # Drop the server's short-header packets at first: the first reports go missing.
        if src == 1 and not data[0] & 0x80 and len(dropped) < 3:
            dropped.append(len(data))
            return True
        return False

    net.drop = drop
    net.run(30.0, lambda: bool(client.observed))
    assert dropped and client.observed[0].host == NAT[0] and client.observed[0].port == NAT[1]


def test_a_role_outside_the_three_is_refused() -> None:
    with pytest.raises(QuicError):
        AddressDiscovery(3)
    assert AddressDiscovery(None).role == ROLE_NONE
    assert AddressDiscovery(None).transport_parameter is None
    with pytest.raises(QuicError):
        tp.TransportParameters.decode(encode_varint(tp.TP_OBSERVED_ADDRESS) + b"\x01\x03", from_server=True)


def test_addresses_that_are_not_ip_socket_addresses_are_not_reported() -> None:
    assert encode_address(("198.51.100.2", 1)) == (bytes([198, 51, 100, 2]), 1)
    assert encode_address(("fe80::1%eth0", 2, 0, 3)) == (bytes.fromhex("fe800000000000000000000000000001"), 2)
    for bad in (object(), ("host.example", 1), ("1.2.3.4", 70000), ("1.2.3.4",), (1, 2)):
        assert encode_address(bad) is None
    qad = AddressDiscovery(tp.ROLE_SEND)
    qad.on_peer_role(tp.ROLE_RECEIVE)
    qad.on_peer_address(object())
    assert not qad.wants_send and qad.take_frame() is None


@given(st.binary(max_size=40))
def test_garbage_observed_address_bodies_raise_typed_errors(body: bytes) -> None:
    for kind in (F.FRAME_OBSERVED_ADDRESS_V4, F.FRAME_OBSERVED_ADDRESS_V6):
        data = bytes.fromhex(f"{0x80000000 | kind:08x}") + body
        try:
            frames = F.decode_frames(data, PACKET_ONE_RTT)
        except QuicError:
            continue
        for frame in frames:
            if isinstance(frame, F.ObservedAddress):
                assert len(frame.ip) == (16 if kind == F.FRAME_OBSERVED_ADDRESS_V6 else 4)
                assert 0 <= frame.port <= 0xFFFF


@given(st.lists(st.tuples(st.integers(0, 2**62 - 1), st.binary(min_size=4, max_size=4),
                          st.integers(0, 0xFFFF)), max_size=20))
def test_the_receiver_keeps_the_newest_report(reports: list[tuple[int, bytes, int]]) -> None:
    qad = AddressDiscovery(tp.ROLE_RECEIVE)
    qad.on_peer_role(tp.ROLE_SEND)
    newest = -1
    for seq, ip, port in reports:
        event = qad.on_frame(F.ObservedAddress(seq, ip, port))
        if seq <= newest:
            assert event is None
        newest = max(newest, seq)
        if event is not None:
            assert event.sequence == seq
