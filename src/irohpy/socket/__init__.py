"""The socket layer: UDP sockets and relays, remotes and their paths, our direct addresses.

QUIC above this layer sees each way to a remote (a relay, an IPv4 or IPv6 address) as a path
of its own; this layer says which one each remote's traffic uses.
"""

from __future__ import annotations

from irohpy.socket.mapped import MappedAddr
from irohpy.socket.paths import DirectPath, PathKey
from irohpy.socket.remote_map import RemoteMap, RemoteState
from irohpy.socket.transport import Transport
from irohpy.socket.udp import UdpSocket

__all__ = [
    "DirectPath",
    "MappedAddr",
    "PathKey",
    "RemoteMap",
    "RemoteState",
    "Transport",
    "UdpSocket",
]
