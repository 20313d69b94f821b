"""The Initial check and Retry codec (irohpy.endpoint.initial), against aioquic's own packets."""

from __future__ import annotations

import os

import pytest
from aioquic.quic.packet import get_retry_integrity_tag
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.endpoint.initial import VERSION_1, VERSION_2, RetryTokens, open_initial, retry_packet
from irohpy.errors import QuicPacketError
from irohpy.tls import IrohQuicConnection, quic_configuration


def client_initial(version: int) -> tuple[bytes, bytes]:
    server_id = os.urandom(32)
    config = quic_configuration(os.urandom(32), is_client=True, alpns=[b"x"], expected_peer=server_id)
    config.original_version = version
    quic = IrohQuicConnection(configuration=config, expected_peer=server_id)
    quic.connect(("127.0.0.1", 9), 0.0)
    return quic.datagrams_to_send(0.0)[0][0], quic._peer_cid.cid


INITIALS = {v: client_initial(v) for v in (VERSION_1, VERSION_2)}


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_opens_a_real_initial(version: int) -> None:
    data, dcid = INITIALS[version]
    packet = open_initial(data)
    assert (packet.version, packet.dcid, packet.token) == (version, dcid, b"")


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_any_flipped_bit_in_the_packet_is_rejected(version: int) -> None:
    data, _ = INITIALS[version]
    for index in (0, 6, 30, 100, 400):
        bad = bytearray(data)
        bad[index] ^= 0x01
        with pytest.raises(QuicPacketError):
            open_initial(bytes(bad))


@given(st.binary(max_size=1500))
@settings(max_examples=2000, deadline=None)
def test_garbage_raises_only_quic_packet_error(data: bytes) -> None:
    try:
        open_initial(data)
    except QuicPacketError:
        pass


@given(st.integers(0, 1199), st.integers(0, 255), st.sampled_from([VERSION_1, VERSION_2]))
@settings(max_examples=1000, deadline=None)
def test_mutated_initials_raise_only_quic_packet_error(index: int, value: int, version: int) -> None:
    data = bytearray(INITIALS[version][0])
    data[index] = value
    try:
        open_initial(bytes(data))
    except QuicPacketError:
        pass


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_retry_integrity_tag_matches_aioquic(version: int) -> None:
    packet = retry_packet(version, b"d" * 8, b"s" * 8, b"o" * 8, b"token")
    assert get_retry_integrity_tag(packet[:-16], b"o" * 8, version) == packet[-16:]


def test_retry_tokens_bind_address_cid_and_time() -> None:
    tokens = RetryTokens(lifetime=10.0)
    token = tokens.issue(b"127.0.0.1|5000", b"original", b"retrycid", now=100.0)
    assert tokens.validate(token, b"127.0.0.1|5000", b"retrycid", now=101.0) == b"original"
    assert tokens.validate(token, b"127.0.0.1|5001", b"retrycid", now=101.0) is None
    assert tokens.validate(b"x" * 40, b"127.0.0.1|5000", b"retrycid", now=101.0) is None
    assert RetryTokens().validate(token, b"127.0.0.1|5000", b"retrycid", now=101.0) is None
    with pytest.raises(QuicPacketError):
        tokens.validate(token, b"127.0.0.1|5000", b"othercid", now=101.0)
    with pytest.raises(QuicPacketError):
        tokens.validate(token, b"127.0.0.1|5000", b"retrycid", now=111.0)


@given(st.binary(max_size=200), st.binary(max_size=20))
@settings(max_examples=1000, deadline=None)
def test_forged_tokens_are_never_valid(token: bytes, dcid: bytes) -> None:
    tokens = RetryTokens()
    assert tokens.validate(token, b"127.0.0.1|5000", dcid, now=1.0) is None
