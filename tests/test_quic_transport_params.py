"""irohpy.quic.transport_params: iroh's set, noq's rules, aioquic as an independent codec, fuzzing."""

from __future__ import annotations

import os

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import (
    QuicPreferredAddress,
    QuicTransportParameters,
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic import transport_params as tp
from irohpy.quic.transport_params import PreferredAddress, TransportParameters
from irohpy.quic.varint import VARINT_MAX, encode_varint


def item(param: int, value: bytes) -> bytes:
    return encode_varint(param) + encode_varint(len(value)) + value


def test_iroh_parameters_round_trip_with_grease_and_shuffle() -> None:
    params = TransportParameters.iroh(b"\x01" * 8)
    plain = params.encode()
    assert TransportParameters.decode(plain, from_server=False) == params
    orders = set()
    for _ in range(10):
        greased = params.encode(grease=True)
        assert TransportParameters.decode(greased, from_server=True) == params
        orders.add(greased[:4])
    assert len(orders) > 1
    # What iroh sends beyond RFC 9000, by id and value.
    assert item(tp.TP_INITIAL_MAX_PATH_ID, b"\x07") in plain
    assert item(tp.TP_N0_NAT_TRAVERSAL, b"\x20") in plain
    assert item(tp.TP_MIN_ACK_DELAY, encode_varint(1000)) in plain
    assert item(tp.TP_MAX_DATAGRAM_FRAME_SIZE, encode_varint(65535)) in plain


def test_defaults_are_not_sent() -> None:
    assert TransportParameters().encode() == b""
    assert TransportParameters.decode(b"", from_server=True) == TransportParameters()


def test_aioquic_reads_ours_and_we_read_aioquics() -> None:
    ours = TransportParameters.iroh(b"abcdefgh")
    ours.original_destination_connection_id = b"12345678"
    ours.stateless_reset_token = bytes(range(16))
    ours.disable_active_migration = True
    ours.ack_delay_exponent = 10
    ours.max_ack_delay = 100
    ours.preferred_address = PreferredAddress(bytes([127, 0, 0, 1]), 4433, bytes(16), 0, b"\x09" * 8, b"\x0a" * 16)
    theirs = pull_quic_transport_parameters(Buffer(data=ours.encode(grease=True)))
    for name in (
        "original_destination_connection_id", "max_idle_timeout", "stateless_reset_token", "max_udp_payload_size",
        "initial_max_data", "initial_max_stream_data_bidi_local", "initial_max_stream_data_bidi_remote",
        "initial_max_stream_data_uni", "initial_max_streams_bidi", "initial_max_streams_uni", "ack_delay_exponent",
        "max_ack_delay", "disable_active_migration", "active_connection_id_limit", "initial_source_connection_id",
        "max_datagram_frame_size",
    ):
        assert getattr(theirs, name) == getattr(ours, name), name
    assert theirs.preferred_address is not None
    assert theirs.preferred_address.connection_id == b"\x09" * 8

    aioquic_params = QuicTransportParameters(
        initial_source_connection_id=b"xyz",
        max_idle_timeout=60_000,
        initial_max_data=1 << 20,
        initial_max_streams_bidi=128,
        max_datagram_frame_size=65536,
        active_connection_id_limit=8,
        version_information=None,
        preferred_address=QuicPreferredAddress(
            ipv4_address=("10.0.0.1", 443), ipv6_address=None, connection_id=b"\x05" * 8,
            stateless_reset_token=b"\x06" * 16,
        ),
    )
    buf = Buffer(capacity=1024)
    push_quic_transport_parameters(buf, aioquic_params)
    decoded = TransportParameters.decode(buf.data, from_server=True)
    assert decoded.initial_source_connection_id == b"xyz"
    assert decoded.max_idle_timeout == 60_000 and decoded.initial_max_data == 1 << 20
    assert decoded.initial_max_streams_bidi == 128 and decoded.max_datagram_frame_size == 65536
    assert decoded.active_connection_id_limit == 8
    assert decoded.preferred_address is not None and decoded.preferred_address.ipv4 == bytes([10, 0, 0, 1])


def test_unknown_parameters_are_ignored() -> None:
    data = item(0x11, b"aioquic version information") + item(31 * 5 + 27, os.urandom(9)) + item(0x05, b"\x10")
    assert TransportParameters.decode(data, from_server=False).initial_max_stream_data_bidi_local == 16


@pytest.mark.parametrize(
    "data",
    [
        item(0x04, b"\x10") + item(0x04, b"\x10"),  # duplicate
        item(0x3E, b"\x07") + item(0x3E, b"\x07"),  # duplicate extension
        item(0xFF04DE1B, b"\x01") + item(0xFF04DE1B, b"\x01"),  # duplicate min_ack_delay
        item(0x04, b"\x10\x00"),  # trailing bytes after the varint
        item(0x04, b""),  # empty integer
        encode_varint(0x04) + encode_varint(5) + b"\x01",  # truncated
        item(0x0A, b"\x15"),  # ack_delay_exponent 21
        item(0x0B, encode_varint(1 << 14)),  # max_ack_delay 2^14
        item(0x0E, b"\x01"),  # active_connection_id_limit 1
        item(0x03, encode_varint(1199)),  # max_udp_payload_size below 1200
        item(0x08, encode_varint((1 << 60) + 1)),  # stream limit above 2^60
        item(0xFF04DE1B, encode_varint(26_000)),  # min_ack_delay above max_ack_delay (25 ms)
        item(0x02, bytes(15)),  # reset token of 15 bytes
        item(0x0C, b"\x00"),  # disable_active_migration with a value
        item(0x0F, bytes(21)),  # 21-byte CID
        item(0x3D7F91120401, b"\x00"),  # NAT traversal limit 0
        item(0x3D7F91120401, b"\x01\x02"),  # NAT traversal limit of two bytes
        item(0x3E, encode_varint(1 << 32)),  # path id above 2^32-1
        item(0x9F81A176, b"\x03"),  # unknown QAD role
        item(0x0D, bytes(4 + 2 + 16 + 2) + b"\x01\x01" + bytes(16)),  # preferred address without address
    ],
)
def test_bad_parameters_are_transport_parameter_errors(data: bytes) -> None:
    with pytest.raises(QuicDecodeError) as info:
        TransportParameters.decode(data, from_server=True)
    assert info.value.error_code == QuicError.TRANSPORT_PARAMETER_ERROR


@pytest.mark.parametrize("param", [0x00, 0x02, 0x0D, 0x10])
def test_server_only_parameters_from_a_client_are_refused(param: int) -> None:
    params = TransportParameters()
    if param == 0x00:
        params.original_destination_connection_id = b"abc"
    elif param == 0x02:
        params.stateless_reset_token = bytes(16)
    elif param == 0x0D:
        params.preferred_address = PreferredAddress(bytes(4), 0, bytes(15) + b"\x01", 1, b"c", bytes(16))
    else:
        params.retry_source_connection_id = b"r"
    data = params.encode()
    assert TransportParameters.decode(data, from_server=True) == params
    with pytest.raises(QuicDecodeError):
        TransportParameters.decode(data, from_server=False)


def test_multipath_nat_traversal_and_qad_parameters() -> None:
    params = TransportParameters(initial_max_path_id=2**32 - 1, max_remote_nat_traversal_addresses=255,
                                 observed_address_role=tp.ROLE_RECEIVE, grease_quic_bit=True)
    data = params.encode()
    assert item(tp.TP_OBSERVED_ADDRESS, b"\x01") in data
    assert item(tp.TP_GREASE_QUIC_BIT, b"") in data
    assert TransportParameters.decode(data, from_server=False) == params


@st.composite
def parameters(draw: st.DrawFn) -> TransportParameters:
    cids = st.none() | st.binary(max_size=20)
    return TransportParameters(
        max_idle_timeout=draw(st.integers(0, VARINT_MAX)),
        max_udp_payload_size=draw(st.integers(1200, VARINT_MAX)),
        initial_max_data=draw(st.integers(0, VARINT_MAX)),
        initial_max_stream_data_bidi_local=draw(st.integers(0, VARINT_MAX)),
        initial_max_streams_bidi=draw(st.integers(0, 1 << 60)),
        initial_max_streams_uni=draw(st.integers(0, 1 << 60)),
        ack_delay_exponent=draw(st.integers(0, 20)),
        max_ack_delay=draw(st.integers(1, (1 << 14) - 1)),
        active_connection_id_limit=draw(st.integers(2, VARINT_MAX)),
        initial_source_connection_id=draw(cids),
        retry_source_connection_id=draw(cids),
        original_destination_connection_id=draw(cids),
        max_datagram_frame_size=draw(st.none() | st.integers(0, VARINT_MAX)),
        initial_max_path_id=draw(st.none() | st.integers(0, 2**32 - 1)),
        max_remote_nat_traversal_addresses=draw(st.none() | st.integers(1, 255)),
        observed_address_role=draw(st.none() | st.integers(0, 2)),
        disable_active_migration=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None)
@given(parameters())
def test_parameters_round_trip(params: TransportParameters) -> None:
    assert TransportParameters.decode(params.encode(grease=True), from_server=True) == params


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_parameters_only_typed_errors(data: bytes, from_server: bool) -> None:
    try:
        TransportParameters.decode(data, from_server)
    except QuicDecodeError as exc:
        assert exc.error_code == QuicError.TRANSPORT_PARAMETER_ERROR


@settings(max_examples=300, deadline=None)
@given(parameters(), st.data())
def test_fuzz_mutated_parameters_only_typed_errors(params: TransportParameters, data: st.DataObject) -> None:
    encoded = bytearray(params.encode())
    if not encoded:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    try:
        TransportParameters.decode(bytes(encoded), from_server=True)
    except QuicDecodeError:
        pass
