"""Errors of the QUIC transport state: a peer broke a rule that closes the connection.

Each class fixes the RFC 9000 §20.1 transport error code the connection closes with, so the
engine can turn any of them into a CONNECTION_CLOSE frame without a lookup table. They are
:class:`irohpy.errors.QuicError`, like the codec's decode errors.
"""

from __future__ import annotations

from typing import ClassVar

from irohpy.errors import QuicError


class QuicTransportStateError(QuicError):
    """A frame the peer sent that breaks QUIC's transport rules; ``error_code`` closes the connection."""

    code: ClassVar[int] = QuicError.PROTOCOL_VIOLATION

    def __init__(self, message: str, *, frame_type: int = 0) -> None:
        super().__init__(message, error_code=self.code, frame_type=frame_type)


class FlowControlError(QuicTransportStateError):
    """The peer sent more data than the stream or connection credit we granted."""

    code = QuicError.FLOW_CONTROL_ERROR


class StreamLimitError(QuicTransportStateError):
    """The peer used a stream ID beyond the MAX_STREAMS limit we granted, or granted an impossible one."""

    code = QuicError.STREAM_LIMIT_ERROR


class StreamStateError(QuicTransportStateError):
    """A frame for a stream that cannot receive it: wrong direction, or a local stream never opened."""

    code = QuicError.STREAM_STATE_ERROR


class FinalSizeError(QuicTransportStateError):
    """Data past a stream's final size, or a final size that changed (RFC 9000 §4.5)."""

    code = QuicError.FINAL_SIZE_ERROR


class AckError(QuicTransportStateError):
    """An ACK frame that acknowledges a packet we never sent, or whose ranges underflow."""


class FrameValueError(QuicTransportStateError):
    """A well-formed frame carrying a value QUIC forbids, such as MAX_STREAMS above 2**60."""

    code = QuicError.FRAME_ENCODING_ERROR
