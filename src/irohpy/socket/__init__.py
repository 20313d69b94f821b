"""The socket layer: UDP sockets, per-remote paths, and mapped addresses.

QUIC above this layer only ever sees one stable :class:`MappedAddr` per
remote endpoint; this layer decides which real path each datagram takes.
"""

from __future__ import annotations

from irohpy.socket.mapped import MappedAddr
from irohpy.socket.paths import DirectPath, PathKey, RemotePaths
from irohpy.socket.remote_map import RemoteMap, RemoteState
from irohpy.socket.transport import Transport
from irohpy.socket.udp import UdpSocket

__all__ = [
    "DirectPath",
    "MappedAddr",
    "PathKey",
    "RemoteMap",
    "RemotePaths",
    "RemoteState",
    "Transport",
    "UdpSocket",
]
