"""What we received in one packet-number space, and when to acknowledge it (RFC 9000 §13.2).

One :class:`AckTracker` per packet-number space; with multipath each path has its own
application-data space, so its own tracker. ACK frames themselves are coded in
:mod:`irohpy.quic.frames`; :mod:`irohpy.quic.recovery` refuses ones that acknowledge packets
never sent.
"""

from __future__ import annotations

from irohpy.quic.rangeset import RangeSet

INF = float("inf")

#: Ranges we remember and report; a peer that leaves more gaps loses its oldest ones.
MAX_ACK_RANGES = 64

#: ECN codepoints as they appear in the IP header's two low TOS bits.
ECN_NOT_ECT = 0
ECN_ECT1 = 1
ECN_ECT0 = 2
ECN_CE = 3


class AckTracker:
    """Received packet numbers of one space, the ACK deadline, and ECN counts.

    Policy (RFC 9000 §13.2.1–2, with the ACK_FREQUENCY draft's knobs as plain fields):
    acknowledge immediately on out-of-order arrival, on ECN-CE, in the Initial and Handshake
    spaces (``max_ack_delay`` 0), or once ``ack_eliciting_threshold`` ack-eliciting packets are
    waiting, or when the connection asks (:meth:`ack_at_once`, for a PING); otherwise within
    ``max_ack_delay``. Non-ack-eliciting packets are recorded but never start the timer.
    """

    __slots__ = (
        "received",
        "largest",
        "largest_time",
        "floor",
        "unacked_eliciting",
        "ack_now",
        "ack_deadline",
        "max_ack_delay",
        "ack_eliciting_threshold",
        "reordering_threshold",
        "ect0",
        "ect1",
        "ce",
        "ecn_changed",
    )

    def __init__(self, max_ack_delay: float = 0.025, ack_eliciting_threshold: int = 2) -> None:
        self.received = RangeSet(MAX_ACK_RANGES)
        self.largest = -1
        self.largest_time = 0.0
        # Packets below the floor are treated as duplicates: the peer has seen our ACK of them.
        self.floor = 0
        self.unacked_eliciting = 0
        self.ack_now = False
        self.ack_deadline = INF
        self.max_ack_delay = max_ack_delay
        self.ack_eliciting_threshold = ack_eliciting_threshold
        self.reordering_threshold = 1
        self.ect0 = 0
        self.ect1 = 0
        self.ce = 0
        self.ecn_changed = False

    def is_duplicate(self, pn: int) -> bool:
        """True for a packet number already received (or below what we still track)."""
        return pn < self.floor or pn in self.received

    def on_packet(self, pn: int, ack_eliciting: bool, ecn: int, now: float) -> bool:
        """Record a packet that decrypted; returns False (and records nothing) for a duplicate."""
        if pn < self.floor:
            return False
        received = self.received
        largest = self.largest
        if pn > largest:
            # A gap opens when packets between the old largest and this one are missing.
            gap = bool(received) and pn > largest + self.reordering_threshold
            if received.add(pn, pn + 1) == 0:
                return False
            self.largest = pn
            self.largest_time = now
        else:
            if received.add(pn, pn + 1) == 0:
                return False
            gap = True
        if ecn:
            if ecn == ECN_CE:
                self.ce += 1
            elif ecn == ECN_ECT0:
                self.ect0 += 1
            else:
                self.ect1 += 1
            self.ecn_changed = True
        if not ack_eliciting:
            return True
        self.unacked_eliciting += 1
        if (
            gap
            or ecn == ECN_CE
            or self.max_ack_delay <= 0.0
            or self.unacked_eliciting >= self.ack_eliciting_threshold
        ):
            self.ack_now = True
            self.ack_deadline = now
        elif self.ack_deadline == INF:
            self.ack_deadline = now + self.max_ack_delay
        return True

    def ack_at_once(self, now: float) -> None:
        """The packet just recorded asks for its ACK now (it held a PING)."""
        self.ack_now = True
        self.ack_deadline = now

    def set_ack_frequency(
        self, ack_eliciting_threshold: int, max_ack_delay: float, reordering_threshold: int
    ) -> None:
        """Apply an ACK_FREQUENCY request from the peer (draft-ietf-quic-ack-frequency)."""
        self.ack_eliciting_threshold = max(1, ack_eliciting_threshold)
        self.max_ack_delay = max_ack_delay
        self.reordering_threshold = max(1, reordering_threshold)

    def wants_ack(self, now: float) -> bool:
        """Whether an ACK frame should go out in the next packet of this space."""
        return self.ack_now or now >= self.ack_deadline

    def ranges(self) -> list[tuple[int, int]]:
        """The ``[start, stop)`` ranges to acknowledge, highest first (the ACK frame's order)."""
        return list(self.received.descending())

    def ack_delay(self, now: float) -> float:
        """Seconds since the largest packet arrived: the ACK frame's ack delay, before encoding."""
        d = now - self.largest_time
        return d if d > 0.0 else 0.0

    def on_ack_sent(self) -> None:
        """An ACK frame with the current ranges was written into a packet."""
        self.unacked_eliciting = 0
        self.ack_now = False
        self.ack_deadline = INF
        self.ecn_changed = False

    def on_ack_acked(self, largest_acked: int) -> None:
        """The peer received one of our ACKs up to ``largest_acked``: stop reporting below it.

        RFC 9000 §13.2.4. The newest range is kept whole so the ACK frame stays non-empty.
        """
        received = self.received
        if not received:
            return
        cut = largest_acked + 1
        if cut > received.stop - 1:
            cut = received.stop - 1
        if cut > self.floor:
            received.remove_below(cut)
            self.floor = cut
