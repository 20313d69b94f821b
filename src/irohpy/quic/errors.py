"""Errors of the QUIC transport state: a peer broke a rule that closes the connection.

Each class carries the RFC 9000 §20.1 transport error code the connection closes with, so the
engine can turn any of them into a CONNECTION_CLOSE frame without a lookup table.
"""

from __future__ import annotations

from irohpy.errors import IrohError

FLOW_CONTROL_ERROR = 0x03
STREAM_LIMIT_ERROR = 0x04
STREAM_STATE_ERROR = 0x05
FINAL_SIZE_ERROR = 0x06
FRAME_ENCODING_ERROR = 0x07
PROTOCOL_VIOLATION = 0x0A


class QuicTransportStateError(IrohError):
    """A frame the peer sent that breaks QUIC's transport rules; ``error_code`` closes the connection."""

    error_code: int = PROTOCOL_VIOLATION


class FlowControlError(QuicTransportStateError):
    """The peer sent more data than the stream or connection credit we granted."""

    error_code = FLOW_CONTROL_ERROR


class StreamLimitError(QuicTransportStateError):
    """The peer used a stream ID beyond the MAX_STREAMS limit we granted, or granted an impossible one."""

    error_code = STREAM_LIMIT_ERROR


class StreamStateError(QuicTransportStateError):
    """A frame for a stream that cannot receive it: wrong direction, or a local stream never opened."""

    error_code = STREAM_STATE_ERROR


class FinalSizeError(QuicTransportStateError):
    """Data past a stream's final size, or a final size that changed (RFC 9000 §4.5)."""

    error_code = FINAL_SIZE_ERROR


class AckError(QuicTransportStateError):
    """An ACK frame that acknowledges a packet we never sent, or whose ranges underflow."""

    error_code = PROTOCOL_VIOLATION


class FrameValueError(QuicTransportStateError):
    """A well-formed frame carrying a value QUIC forbids, such as MAX_STREAMS above 2**60."""

    error_code = FRAME_ENCODING_ERROR
