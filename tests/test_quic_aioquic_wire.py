"""The wire layer against a live aioquic connection (in memory, no sockets): we read what aioquic
sends (Initial, ClientHello transport parameters, 1-RTT STREAM/DATAGRAM/ACK, key updates) and
aioquic accepts what we build. aioquic is only the independent second implementation here."""

from __future__ import annotations

import datetime
import ssl

import pytest
from aioquic import tls
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from irohpy.quic import crypto, frames, packet
from irohpy.quic.buffer import Writer
from irohpy.quic.transport_params import TransportParameters

CLIENT_ADDR = ("10.0.0.1", 1111)
SERVER_ADDR = ("10.0.0.2", 2222)


def _certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


class Pair:
    """An aioquic client and server wired together in memory, with a fake clock."""

    def __init__(self) -> None:
        cert, key = _certificate()
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["wire"], max_datagram_frame_size=65536)
        server_config.certificate = cert
        server_config.private_key = key
        client_config = QuicConfiguration(
            is_client=True, alpn_protocols=["wire"], max_datagram_frame_size=65536,
            verify_mode=ssl.CERT_NONE, server_name="localhost",
        )
        self.now = 1000.0
        self.client = QuicConnection(configuration=client_config)
        self.client.connect(SERVER_ADDR, now=self.now)
        self.first_flight = [data for data, _ in self.client.datagrams_to_send(now=self.now)]
        self.server = QuicConnection(
            configuration=server_config,
            original_destination_connection_id=self.client.original_destination_connection_id,
        )
        for data in self.first_flight:
            self.server.receive_datagram(data, CLIENT_ADDR, now=self.now)
        for _ in range(10):
            self.pump()
        assert self.client._handshake_complete and self.server._handshake_complete

    def pump(self) -> None:
        self.now += 0.001
        for data, _ in self.server.datagrams_to_send(now=self.now):
            self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
        for data, _ in self.client.datagrams_to_send(now=self.now):
            self.server.receive_datagram(data, CLIENT_ADDR, now=self.now)

    def keys(self, view: QuicConnection, peer: QuicConnection) -> crypto.OneRttKeys:
        """1-RTT keys as ``view`` holds them (send = view's send secret)."""
        mine = view._cryptos[tls.Epoch.ONE_RTT].send
        theirs = peer._cryptos[tls.Epoch.ONE_RTT].send
        return crypto.OneRttKeys(int(mine.cipher_suite), mine.secret, theirs.secret)


def _events(conn: QuicConnection) -> list[events.QuicEvent]:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def _client_hello_transport_parameters(hello: bytes) -> bytes:
    assert hello[0] == 1  # ClientHello
    pos = 4 + 2 + 32
    pos += 1 + hello[pos]  # session id
    pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")  # cipher suites
    pos += 1 + hello[pos]  # compression methods
    end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
    pos += 2
    while pos < end:
        ext_type = int.from_bytes(hello[pos : pos + 2], "big")
        length = int.from_bytes(hello[pos + 2 : pos + 4], "big")
        if ext_type == 0x39:
            return hello[pos + 4 : pos + 4 + length]
        pos += 4 + length
    raise AssertionError("no quic_transport_parameters extension")


def test_we_read_aioquics_initial_and_its_transport_parameters() -> None:
    pair = Pair()
    datagram = pair.first_flight[0]
    assert len(datagram) >= packet.MIN_INITIAL_DATAGRAM
    parts = packet.split_datagram(datagram, 8)
    initial = parts[0]
    assert initial.packet_type == packet.PACKET_INITIAL
    assert initial.dcid == pair.client.original_destination_connection_id
    _, recv = crypto.initial_protection(initial.dcid, is_client=False)
    packet.unprotect_headers([initial], recv.hp, -1)
    payload = packet.open_packet(recv.key, initial)
    decoded = frames.decode_frames(payload, packet.PACKET_INITIAL)
    hello = b"".join(f.data for f in decoded if isinstance(f, frames.Crypto))
    params = TransportParameters.decode(_client_hello_transport_parameters(hello), from_server=False)
    assert params.initial_source_connection_id == pair.client.host_cid
    assert params.max_datagram_frame_size == 65536
    assert params.initial_max_data == pair.client._configuration.max_data


def test_we_read_aioquics_one_rtt_stream_datagram_and_ack() -> None:
    pair = Pair()
    server_view = pair.keys(pair.server, pair.client)
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream_id, b"hello from aioquic" * 50, end_stream=True)
    pair.client.send_datagram_frame(b"a datagram")
    pair.now += 0.001
    seen_stream = b""
    seen_datagrams = []
    fin = False
    for data, _ in pair.client.datagrams_to_send(now=pair.now):
        parts = [p for p in packet.split_datagram(data, len(pair.server.host_cid)) if p.packet_type == packet.PACKET_ONE_RTT]
        packet.unprotect_headers(parts, server_view.recv_hp, -1)
        for p in parts:
            for frame in frames.decode_frames(packet.open_one_rtt(server_view, p), packet.PACKET_ONE_RTT):
                if isinstance(frame, frames.Stream) and frame.stream_id == stream_id:
                    assert frame.offset == len(seen_stream)
                    seen_stream += frame.data
                    fin = fin or frame.fin
                elif isinstance(frame, frames.Datagram):
                    seen_datagrams.append(frame.data)
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    assert seen_stream == b"hello from aioquic" * 50 and fin
    assert seen_datagrams == [b"a datagram"]

    # The server acknowledges; its ACK decodes with our codec (client's view of the keys).
    client_view = pair.keys(pair.client, pair.server)
    pair.now += 0.05
    acks = []
    for data, _ in pair.server.datagrams_to_send(now=pair.now):
        parts = [p for p in packet.split_datagram(data, len(pair.client.host_cid)) if p.packet_type == packet.PACKET_ONE_RTT]
        packet.unprotect_headers(parts, client_view.recv_hp, -1)
        for p in parts:
            acks += [f for f in frames.decode_frames(packet.open_one_rtt(client_view, p), packet.PACKET_ONE_RTT)
                     if isinstance(f, frames.Ack)]
    assert acks and acks[-1].largest >= 0


def _send_as(pair: Pair, keys: crypto.OneRttKeys, dcid: bytes, pn: int, body: list[frames.Frame]) -> bytes:
    w = Writer(1500)
    for frame in body:
        frame.encode(w)
    pn_length = 2
    header = packet.build_short_header(dcid, pn, pn_length, key_phase=keys.key_phase)
    return bytes(packet.seal_packet(keys.send, keys.send_hp, header, w.getvalue(), pn))


def test_aioquic_accepts_our_one_rtt_packets() -> None:
    pair = Pair()
    client_view = pair.keys(pair.client, pair.server)
    _events(pair.server)
    body: list[frames.Frame] = [
        frames.Stream(8, 0, b"built by irohpy", True),
        frames.Datagram(b"our datagram"),
        frames.MaxData(10**9),
        frames.Ping(),
        frames.Padding(20),
    ]
    datagram = _send_as(pair, client_view, pair.server.host_cid, 500, body)
    pair.server.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    got = _events(pair.server)
    assert any(isinstance(e, events.StreamDataReceived) and e.stream_id == 8 and e.data == b"built by irohpy"
               and e.end_stream for e in got)
    assert any(isinstance(e, events.DatagramFrameReceived) and e.data == b"our datagram" for e in got)


@pytest.mark.parametrize("initiator", ["aioquic", "irohpy"])
def test_key_update_interoperates(initiator: str) -> None:
    pair = Pair()
    server_view = pair.keys(pair.server, pair.client)
    _events(pair.client)
    if initiator == "aioquic":
        pair.client.request_key_update()
        pair.client.send_stream_data(0, b"after the update", end_stream=True)
        pair.now += 0.001
        texts = b""
        for data, _ in pair.client.datagrams_to_send(now=pair.now):
            parts = [p for p in packet.split_datagram(data, 8) if p.packet_type == packet.PACKET_ONE_RTT]
            packet.unprotect_headers(parts, server_view.recv_hp, 10)
            for p in parts:
                assert p.key_phase == 1
                texts += b"".join(f.data for f in frames.decode_frames(packet.open_one_rtt(server_view, p), packet.PACKET_ONE_RTT)
                                  if isinstance(f, frames.Stream))
        assert texts == b"after the update"
        assert server_view.key_phase == 1
    else:
        server_view.update()
    # Our reply in the new phase opens at aioquic (which follows if it did not start the update).
    reply = _send_as(pair, server_view, pair.client.host_cid, 700, [frames.Stream(1, 0, b"new phase reply", True)])
    pair.client.receive_datagram(reply, SERVER_ADDR, now=pair.now)
    got = _events(pair.client)
    assert any(isinstance(e, events.StreamDataReceived) and e.data == b"new phase reply" for e in got)
    assert pair.client._cryptos[tls.Epoch.ONE_RTT].key_phase == 1
