"""iroh-gossip (ALPN ``/iroh-gossip/1``): wire codec and sans-IO HyParView/PlumTree state."""

from __future__ import annotations

from irohpy.protocols.gossip.proto import Config, TopicState, message_id
from irohpy.protocols.gossip.wire import (
    ALPN,
    DEFAULT_MAX_MESSAGE_SIZE,
    FrameDecoder,
    decode_message,
    encode_frame,
    encode_message,
)

__all__ = [
    "ALPN",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Config",
    "FrameDecoder",
    "TopicState",
    "decode_message",
    "encode_frame",
    "encode_message",
    "message_id",
]
