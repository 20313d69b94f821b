"""Endpoints, connections and streams."""

from __future__ import annotations

from irohpy.endpoint import presets
from irohpy.endpoint.connection import Connection, ConnectionStats, Side
from irohpy.endpoint.endpoint import Endpoint, HandshakeLimits, Incoming
from irohpy.endpoint.hooks import Accept, ConnectionInfo, EndpointHooks, Reject
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.relay.recv_limits import RelayRecvLimits

__all__ = [
    "Accept",
    "Connection",
    "ConnectionInfo",
    "ConnectionStats",
    "Endpoint",
    "EndpointHooks",
    "HandshakeLimits",
    "Incoming",
    "RecvStream",
    "RelayRecvLimits",
    "Reject",
    "SendStream",
    "Side",
    "presets",
]
