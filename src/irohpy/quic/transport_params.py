"""QUIC transport parameters (RFC 9000 §18) as noq, and so Rust iroh, sends and reads them.

Besides RFC 9000's set: ``max_datagram_frame_size`` (RFC 9221), ``min_ack_delay``
(ack-frequency draft-07), ``initial_max_path_id`` (multipath), n0's NAT-traversal limit (one
raw byte), and the QAD ``observed_address_role``. Decoding ignores unknown ids, rejects
duplicates and values RFC 9000 forbids (TRANSPORT_PARAMETER_ERROR), and rejects server-only
parameters sent by a client. ``TransportParameters.iroh()`` gives the values iroh sends.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Final

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic.buffer import Reader
from irohpy.quic.packet import MAX_CID_SIZE, RESET_TOKEN_SIZE
from irohpy.quic.varint import VARINT_MAX, encode_varint

TP_ORIGINAL_DESTINATION_CONNECTION_ID: Final = 0x00
TP_MAX_IDLE_TIMEOUT: Final = 0x01
TP_STATELESS_RESET_TOKEN: Final = 0x02
TP_MAX_UDP_PAYLOAD_SIZE: Final = 0x03
TP_INITIAL_MAX_DATA: Final = 0x04
TP_INITIAL_MAX_STREAM_DATA_BIDI_LOCAL: Final = 0x05
TP_INITIAL_MAX_STREAM_DATA_BIDI_REMOTE: Final = 0x06
TP_INITIAL_MAX_STREAM_DATA_UNI: Final = 0x07
TP_INITIAL_MAX_STREAMS_BIDI: Final = 0x08
TP_INITIAL_MAX_STREAMS_UNI: Final = 0x09
TP_ACK_DELAY_EXPONENT: Final = 0x0A
TP_MAX_ACK_DELAY: Final = 0x0B
TP_DISABLE_ACTIVE_MIGRATION: Final = 0x0C
TP_PREFERRED_ADDRESS: Final = 0x0D
TP_ACTIVE_CONNECTION_ID_LIMIT: Final = 0x0E
TP_INITIAL_SOURCE_CONNECTION_ID: Final = 0x0F
TP_RETRY_SOURCE_CONNECTION_ID: Final = 0x10
TP_MAX_DATAGRAM_FRAME_SIZE: Final = 0x20
TP_GREASE_QUIC_BIT: Final = 0x2AB2
TP_INITIAL_MAX_PATH_ID: Final = 0x3E
TP_MIN_ACK_DELAY: Final = 0xFF04DE1B
TP_OBSERVED_ADDRESS: Final = 0x9F81A176
TP_N0_NAT_TRAVERSAL: Final = 0x3D7F91120401

ROLE_SEND: Final = 0
ROLE_RECEIVE: Final = 1
ROLE_BOTH: Final = 2

_INTEGER_PARAMETERS: Final = (
    TP_MAX_IDLE_TIMEOUT,
    TP_MAX_UDP_PAYLOAD_SIZE,
    TP_INITIAL_MAX_DATA,
    TP_INITIAL_MAX_STREAM_DATA_BIDI_LOCAL,
    TP_INITIAL_MAX_STREAM_DATA_BIDI_REMOTE,
    TP_INITIAL_MAX_STREAM_DATA_UNI,
    TP_INITIAL_MAX_STREAMS_BIDI,
    TP_INITIAL_MAX_STREAMS_UNI,
    TP_ACK_DELAY_EXPONENT,
    TP_MAX_ACK_DELAY,
    TP_ACTIVE_CONNECTION_ID_LIMIT,
)


def _error(message: str) -> QuicDecodeError:
    return QuicDecodeError(message, error_code=QuicError.TRANSPORT_PARAMETER_ERROR)


@dataclass(slots=True)
class PreferredAddress:
    """A server's preferred address (RFC 9000 §18.2); absent families are all zeros."""

    ipv4: bytes
    ipv4_port: int
    ipv6: bytes
    ipv6_port: int
    connection_id: bytes
    reset_token: bytes

    def encode(self) -> bytes:
        return b"".join(
            [
                self.ipv4,
                self.ipv4_port.to_bytes(2, "big"),
                self.ipv6,
                self.ipv6_port.to_bytes(2, "big"),
                bytes((len(self.connection_id),)),
                self.connection_id,
                self.reset_token,
            ]
        )

    @staticmethod
    def decode(data: bytes) -> PreferredAddress:
        r = Reader(data)
        ipv4 = r.pull_bytes(4)
        ipv4_port = r.pull_uint16()
        ipv6 = r.pull_bytes(16)
        ipv6_port = r.pull_uint16()
        length = r.pull_uint8()
        if length < 1 or length > MAX_CID_SIZE:
            raise _error("preferred address with a bad connection ID")
        cid = r.pull_bytes(length)
        token = r.pull_bytes(RESET_TOKEN_SIZE)
        if not r.eof():
            raise _error("preferred address with trailing bytes")
        if ipv4 == bytes(4) and ipv4_port == 0 and ipv6 == bytes(16) and ipv6_port == 0:
            raise _error("preferred address without an address")
        return PreferredAddress(ipv4, ipv4_port, ipv6, ipv6_port, cid, token)


@dataclass(slots=True)
class TransportParameters:
    """One side's transport parameters; defaults are RFC 9000's values when absent."""

    original_destination_connection_id: bytes | None = None
    max_idle_timeout: int = 0
    stateless_reset_token: bytes | None = None
    max_udp_payload_size: int = 65527
    initial_max_data: int = 0
    initial_max_stream_data_bidi_local: int = 0
    initial_max_stream_data_bidi_remote: int = 0
    initial_max_stream_data_uni: int = 0
    initial_max_streams_bidi: int = 0
    initial_max_streams_uni: int = 0
    ack_delay_exponent: int = 3
    max_ack_delay: int = 25
    disable_active_migration: bool = False
    preferred_address: PreferredAddress | None = None
    active_connection_id_limit: int = 2
    initial_source_connection_id: bytes | None = None
    retry_source_connection_id: bytes | None = None
    max_datagram_frame_size: int | None = None
    grease_quic_bit: bool = False
    min_ack_delay: int | None = None
    initial_max_path_id: int | None = None
    max_remote_nat_traversal_addresses: int | None = None
    observed_address_role: int | None = None

    @staticmethod
    def iroh(initial_source_connection_id: bytes) -> TransportParameters:
        """What a Rust iroh 1.x endpoint sends (noq defaults as iroh configures them)."""
        return TransportParameters(
            max_idle_timeout=30_000,
            max_udp_payload_size=1472,
            initial_max_data=VARINT_MAX,
            initial_max_stream_data_bidi_local=1_250_000,
            initial_max_stream_data_bidi_remote=1_250_000,
            initial_max_stream_data_uni=1_250_000,
            initial_max_streams_bidi=100,
            initial_max_streams_uni=100,
            active_connection_id_limit=5,
            initial_source_connection_id=initial_source_connection_id,
            max_datagram_frame_size=65535,
            min_ack_delay=1000,
            initial_max_path_id=7,
            max_remote_nat_traversal_addresses=32,
        )

    def keeps_0rtt_limits(self, remembered: TransportParameters) -> bool:
        """No limit 0-RTT data may use is below ``remembered``'s (RFC 9000 §7.4.1)."""
        return (
            self.initial_max_data >= remembered.initial_max_data
            and self.initial_max_stream_data_bidi_local >= remembered.initial_max_stream_data_bidi_local
            and self.initial_max_stream_data_bidi_remote >= remembered.initial_max_stream_data_bidi_remote
            and self.initial_max_stream_data_uni >= remembered.initial_max_stream_data_uni
            and self.initial_max_streams_bidi >= remembered.initial_max_streams_bidi
            and self.initial_max_streams_uni >= remembered.initial_max_streams_uni
            and (self.max_datagram_frame_size or 0) >= (remembered.max_datagram_frame_size or 0)
            and self.active_connection_id_limit >= remembered.active_connection_id_limit
        )

    def _integer(self, param: int) -> int:
        if param == TP_MAX_IDLE_TIMEOUT:
            return self.max_idle_timeout
        if param == TP_MAX_UDP_PAYLOAD_SIZE:
            return self.max_udp_payload_size
        if param == TP_INITIAL_MAX_DATA:
            return self.initial_max_data
        if param == TP_INITIAL_MAX_STREAM_DATA_BIDI_LOCAL:
            return self.initial_max_stream_data_bidi_local
        if param == TP_INITIAL_MAX_STREAM_DATA_BIDI_REMOTE:
            return self.initial_max_stream_data_bidi_remote
        if param == TP_INITIAL_MAX_STREAM_DATA_UNI:
            return self.initial_max_stream_data_uni
        if param == TP_INITIAL_MAX_STREAMS_BIDI:
            return self.initial_max_streams_bidi
        if param == TP_INITIAL_MAX_STREAMS_UNI:
            return self.initial_max_streams_uni
        if param == TP_ACK_DELAY_EXPONENT:
            return self.ack_delay_exponent
        if param == TP_MAX_ACK_DELAY:
            return self.max_ack_delay
        return self.active_connection_id_limit

    def _set_integer(self, param: int, value: int) -> None:
        if param == TP_MAX_IDLE_TIMEOUT:
            self.max_idle_timeout = value
        elif param == TP_MAX_UDP_PAYLOAD_SIZE:
            self.max_udp_payload_size = value
        elif param == TP_INITIAL_MAX_DATA:
            self.initial_max_data = value
        elif param == TP_INITIAL_MAX_STREAM_DATA_BIDI_LOCAL:
            self.initial_max_stream_data_bidi_local = value
        elif param == TP_INITIAL_MAX_STREAM_DATA_BIDI_REMOTE:
            self.initial_max_stream_data_bidi_remote = value
        elif param == TP_INITIAL_MAX_STREAM_DATA_UNI:
            self.initial_max_stream_data_uni = value
        elif param == TP_INITIAL_MAX_STREAMS_BIDI:
            self.initial_max_streams_bidi = value
        elif param == TP_INITIAL_MAX_STREAMS_UNI:
            self.initial_max_streams_uni = value
        elif param == TP_ACK_DELAY_EXPONENT:
            self.ack_delay_exponent = value
        elif param == TP_MAX_ACK_DELAY:
            self.max_ack_delay = value
        else:
            self.active_connection_id_limit = value

    def encode(self, grease: bool = False) -> bytes:
        """The parameter list; values equal to the defaults are left out, as noq does.

        With ``grease`` the order is shuffled and a reserved parameter (id 31·N+27, up to 16
        random bytes) is added, like iroh does on every connection.
        """
        items: list[bytes] = []
        defaults = _DEFAULTS
        for param in _INTEGER_PARAMETERS:
            value = self._integer(param)
            if value != defaults._integer(param):
                items.append(_item(param, encode_varint(value)))
        for param, cid in (
            (TP_ORIGINAL_DESTINATION_CONNECTION_ID, self.original_destination_connection_id),
            (TP_INITIAL_SOURCE_CONNECTION_ID, self.initial_source_connection_id),
            (TP_RETRY_SOURCE_CONNECTION_ID, self.retry_source_connection_id),
        ):
            if cid is not None:
                items.append(_item(param, cid))
        if self.stateless_reset_token is not None:
            items.append(_item(TP_STATELESS_RESET_TOKEN, self.stateless_reset_token))
        if self.disable_active_migration:
            items.append(_item(TP_DISABLE_ACTIVE_MIGRATION, b""))
        if self.preferred_address is not None:
            items.append(_item(TP_PREFERRED_ADDRESS, self.preferred_address.encode()))
        if self.max_datagram_frame_size is not None:
            items.append(_item(TP_MAX_DATAGRAM_FRAME_SIZE, encode_varint(self.max_datagram_frame_size)))
        if self.grease_quic_bit:
            items.append(_item(TP_GREASE_QUIC_BIT, b""))
        if self.min_ack_delay is not None:
            items.append(_item(TP_MIN_ACK_DELAY, encode_varint(self.min_ack_delay)))
        if self.initial_max_path_id is not None:
            items.append(_item(TP_INITIAL_MAX_PATH_ID, encode_varint(self.initial_max_path_id)))
        if self.max_remote_nat_traversal_addresses is not None:
            items.append(_item(TP_N0_NAT_TRAVERSAL, bytes((self.max_remote_nat_traversal_addresses,))))
        if self.observed_address_role is not None:
            items.append(_item(TP_OBSERVED_ADDRESS, encode_varint(self.observed_address_role)))
        if grease:
            rng = random.SystemRandom()
            reserved = 31 * rng.randrange((VARINT_MAX - 27) // 31) + 27
            items.append(_item(reserved, os.urandom(rng.randrange(16))))
            rng.shuffle(items)
        return b"".join(items)

    @staticmethod
    def decode(data: bytes, from_server: bool) -> TransportParameters:
        """Parse the peer's parameters; ``from_server`` allows the server-only ones."""
        params = TransportParameters()
        seen: set[int] = set()
        r = Reader(data)
        try:
            while not r.eof():
                param = r.pull_varint()
                length = r.pull_varint()
                if length > r.remaining():
                    raise _error("truncated transport parameter")
                value = r.pull_bytes(length)
                if param in seen:
                    raise _error(f"duplicate transport parameter 0x{param:x}")
                if param in _KNOWN:
                    seen.add(param)
                    _apply(params, param, value)
        except QuicDecodeError as exc:
            if exc.error_code == QuicError.TRANSPORT_PARAMETER_ERROR:
                raise
            raise _error(str(exc)) from None
        params._validate(from_server)
        return params

    def _validate(self, from_server: bool) -> None:
        if self.ack_delay_exponent > 20:
            raise _error("ack_delay_exponent above 20")
        if self.max_ack_delay >= 1 << 14:
            raise _error("max_ack_delay of 2^14 ms or more")
        if self.active_connection_id_limit < 2:
            raise _error("active_connection_id_limit below 2")
        if self.max_udp_payload_size < 1200:
            raise _error("max_udp_payload_size below 1200")
        if self.initial_max_streams_bidi > 1 << 60 or self.initial_max_streams_uni > 1 << 60:
            raise _error("initial stream limit above 2^60")
        if self.min_ack_delay is not None and self.min_ack_delay > self.max_ack_delay * 1000:
            raise _error("min_ack_delay above max_ack_delay")
        if not from_server and (
            self.original_destination_connection_id is not None
            or self.preferred_address is not None
            or self.retry_source_connection_id is not None
            or self.stateless_reset_token is not None
        ):
            raise _error("server-only transport parameter from a client")


_DEFAULTS: Final = TransportParameters()

_KNOWN: Final = frozenset(
    _INTEGER_PARAMETERS
    + (
        TP_ORIGINAL_DESTINATION_CONNECTION_ID,
        TP_STATELESS_RESET_TOKEN,
        TP_DISABLE_ACTIVE_MIGRATION,
        TP_PREFERRED_ADDRESS,
        TP_INITIAL_SOURCE_CONNECTION_ID,
        TP_RETRY_SOURCE_CONNECTION_ID,
        TP_MAX_DATAGRAM_FRAME_SIZE,
        TP_GREASE_QUIC_BIT,
        TP_MIN_ACK_DELAY,
        TP_INITIAL_MAX_PATH_ID,
        TP_N0_NAT_TRAVERSAL,
        TP_OBSERVED_ADDRESS,
    )
)


def _item(param: int, value: bytes) -> bytes:
    return encode_varint(param) + encode_varint(len(value)) + value


def _varint_value(value: bytes) -> int:
    """A parameter whose value is exactly one varint."""
    r = Reader(value)
    number = r.pull_varint()
    if not r.eof():
        raise _error("transport parameter value is not one varint")
    return number


def _cid(value: bytes) -> bytes:
    if len(value) > MAX_CID_SIZE:
        raise _error("connection ID longer than 20 bytes")
    return value


def _apply(params: TransportParameters, param: int, value: bytes) -> None:
    if param in _INTEGER_PARAMETERS:
        params._set_integer(param, _varint_value(value))
    elif param == TP_ORIGINAL_DESTINATION_CONNECTION_ID:
        params.original_destination_connection_id = _cid(value)
    elif param == TP_INITIAL_SOURCE_CONNECTION_ID:
        params.initial_source_connection_id = _cid(value)
    elif param == TP_RETRY_SOURCE_CONNECTION_ID:
        params.retry_source_connection_id = _cid(value)
    elif param == TP_STATELESS_RESET_TOKEN:
        if len(value) != RESET_TOKEN_SIZE:
            raise _error("stateless_reset_token is not 16 bytes")
        params.stateless_reset_token = value
    elif param == TP_DISABLE_ACTIVE_MIGRATION:
        if value:
            raise _error("disable_active_migration with a value")
        params.disable_active_migration = True
    elif param == TP_PREFERRED_ADDRESS:
        params.preferred_address = PreferredAddress.decode(value)
    elif param == TP_MAX_DATAGRAM_FRAME_SIZE:
        params.max_datagram_frame_size = _varint_value(value)
    elif param == TP_GREASE_QUIC_BIT:
        if value:
            raise _error("grease_quic_bit with a value")
        params.grease_quic_bit = True
    elif param == TP_MIN_ACK_DELAY:
        params.min_ack_delay = _varint_value(value)
    elif param == TP_INITIAL_MAX_PATH_ID:
        path_id = _varint_value(value)
        if path_id > (1 << 32) - 1:
            raise _error("initial_max_path_id above 2^32-1")
        params.initial_max_path_id = path_id
    elif param == TP_N0_NAT_TRAVERSAL:
        if len(value) != 1 or value[0] == 0:
            raise _error("NAT traversal limit must be one non-zero byte")
        params.max_remote_nat_traversal_addresses = value[0]
    elif param == TP_OBSERVED_ADDRESS:
        role = _varint_value(value)
        if role > ROLE_BOTH:
            raise _error("unknown observed address role")
        params.observed_address_role = role

