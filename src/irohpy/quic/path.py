"""What QUIC keeps per network path: the state multipath (draft-ietf-quic-multipath) multiplies.

A path has its own loss recovery and congestion controller, pacer, PMTU search and, for
application data, its own packet-number space with its ACK state (multipath numbers packets
per path and puts the path id in the nonce). Initial and Handshake packets only ever travel on
the first path. A single-path connection has one :class:`PathState`, path id 0.
"""

from __future__ import annotations

from irohpy.quic.ack import AckTracker
from irohpy.quic.congestion import Cubic, Pacer
from irohpy.quic.pmtud import BASE_MTU, Pmtud
from irohpy.quic.recovery import Recovery


class PathState:
    """Recovery, pacing, PMTU and application-data ACKs of one path."""

    __slots__ = ("path_id", "addr", "recovery", "pacer", "pmtud", "ack")

    def __init__(
        self,
        path_id: int,
        addr: object,
        *,
        is_server: bool,
        initial_rtt: float,
        max_ack_delay: float,
        max_datagram_size: int,
    ) -> None:
        self.path_id = path_id
        #: The remote address as the driver names it; the core never interprets it.
        self.addr = addr
        self.recovery = Recovery(is_server=is_server, cc=Cubic(BASE_MTU), initial_rtt=initial_rtt)
        self.pacer = Pacer(BASE_MTU)
        self.pmtud = Pmtud(max_datagram_size)
        self.ack = AckTracker(max_ack_delay)
