"""iroh-gossip (ALPN ``/iroh-gossip/1``): topic broadcast over HyParView + PlumTree.

``Gossip(endpoint)`` is the API; register it on a Router under ``gossip.alpn``. The wire codec
(:mod:`.wire`) and the sans-IO state (:mod:`.proto`) are usable on their own.
"""

from __future__ import annotations

from irohpy.protocols.gossip.net import (
    Gossip,
    GossipEvent,
    GossipReceiver,
    GossipSender,
    GossipTopic,
    Lagged,
    NeighborDown,
    NeighborUp,
    Received,
    TopicId,
)
from irohpy.protocols.gossip.proto import Config, TopicState, message_id
from irohpy.protocols.gossip.ticket import GossipTicket
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
    "Gossip",
    "GossipEvent",
    "GossipReceiver",
    "GossipSender",
    "GossipTicket",
    "GossipTopic",
    "Lagged",
    "NeighborDown",
    "NeighborUp",
    "Received",
    "TopicId",
    "TopicState",
    "decode_message",
    "encode_frame",
    "encode_message",
    "message_id",
]
