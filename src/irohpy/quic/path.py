"""What QUIC keeps per network path: the state multipath (draft-ietf-quic-multipath) multiplies.

A path has its own loss recovery and congestion controller, pacer, PMTU search and, for
application data, its own packet-number space with its ACK state (multipath numbers packets
per path and puts the path id in the nonce). It also has its own connection IDs both ways
(kept by the connection), its validation (PATH_CHALLENGE/PATH_RESPONSE), its status and its keep-alive and idle timers.
Initial and Handshake packets only ever travel on path 0. A single-path connection has one
:class:`PathState`, path id 0.
"""

from __future__ import annotations

from typing import Final

from irohpy.quic.ack import AckTracker
from irohpy.quic.congestion import Cubic, Pacer
from irohpy.quic.pmtud import BASE_MTU, Pmtud
from irohpy.quic.recovery import HANDSHAKE, INITIAL, Recovery

#: PATH_STATUS values (draft-ietf-quic-multipath §3.3): data prefers available paths; a
#: backup path carries data only while no validated available path exists.
STATUS_BACKUP: Final = 0
STATUS_AVAILABLE: Final = 1


class PathState:
    """Recovery, pacing, PMTU, ACKs, CIDs, validation and timers of one path."""

    __slots__ = (
        "path_id",
        "addr",
        "recovery",
        "pacer",
        "pmtud",
        "ack",
        "ack_dirty",
        "validated",
        "challenges",
        "challenge_at",
        "challenges_lost",
        "responses",
        "off_path",
        "status",
        "status_seq",
        "status_pending",
        "remote_status",
        "remote_status_seq",
        "keep_alive",
        "idle_timeout",
        "last_activity",
        "last_eliciting",
        "peer_eliciting",
        "ping_pending",
        "abandoned",
        "remote_abandoned",
        "drain_at",
        "established_reported",
        "max_datagram_size",
    )

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
        #: Packets arrived since the last ACK of this path we sent.
        self.ack_dirty = False
        self.validated = path_id == 0
        #: The PATH_CHALLENGE data we wait to hear echoed, when the next is due, and how many
        #: went unanswered (their retransmission backs off).
        self.challenges: list[bytes] = []
        self.challenge_at = float("inf")
        self.challenges_lost = 0
        #: PATH_CHALLENGE data the peer sent on this path: PATH_RESPONSE goes back on it.
        self.responses: list[bytes] = []
        #: PATH_CHALLENGEs that came on this path's IDs from another address (NAT traversal
        #: probes): answered there, outside congestion control, as noq does.
        self.off_path: list[tuple[bytes, object]] = []
        self.status = STATUS_AVAILABLE
        self.status_seq = 0
        self.status_pending = False
        self.remote_status = STATUS_AVAILABLE
        self.remote_status_seq = -1
        #: Multipath keep-alive and idle timeout of this path (0: none).
        self.keep_alive = 0.0
        self.idle_timeout = 0.0
        self.last_activity = 0.0
        self.last_eliciting = 0.0
        #: When the peer's last ack-eliciting packet on this path arrived.
        self.peer_eliciting = 0.0
        self.ping_pending = False
        self.abandoned = False
        #: The peer's PATH_ABANDON arrived.
        self.remote_abandoned = False
        #: When an abandoned path's state goes (3 PTO after abandoning).
        self.drain_at = float("inf")
        self.established_reported = path_id == 0
        #: What datagrams may be on this path now: 1200 until PMTU discovery proves more.
        self.max_datagram_size = BASE_MTU

    def start_confirmed(self) -> None:
        """A path opened after the handshake: only the application-data space exists."""
        rec = self.recovery
        rec.on_handshake_confirmed()
        rec.discard_space(INITIAL)
        rec.discard_space(HANDSHAKE)

    def pto(self) -> float:
        return self.recovery.rtt.pto_base() + self.recovery.max_ack_delay
