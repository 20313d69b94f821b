"""Loss detection and RTT estimation for one path (RFC 9002 §5–6, Appendix A).

:class:`Recovery` holds everything RFC 9002 keeps per connection, but per *path*: the RTT
estimator, the congestion controller, the PTO backoff, bytes in flight, the anti-amplification
counters and the sent-packet records of each packet-number space. A single-path connection has
one; with multipath every path gets its own, with only the application-data space in use.

Calls fill two reusable lists, :attr:`Recovery.acked` and :attr:`Recovery.lost`, instead of
returning fresh ones: the caller reads them right away (to confirm or requeue frames), and the
next call clears them. One :class:`SentPacket` per packet is the only allocation.
"""

from __future__ import annotations

from irohpy.quic.congestion import CongestionController, Cubic
from irohpy.quic.errors import AckError
from irohpy.quic.rangeset import RangeSet

INF = float("inf")

INITIAL = 0
HANDSHAKE = 1
APPLICATION = 2

#: RFC 9002 §6.1 / Appendix A.2 constants.
PACKET_THRESHOLD = 3
#: The packet threshold grows when reordering proves a loss spurious (§6.1.1), up to this.
MAX_PACKET_THRESHOLD = 32
#: Packet numbers declared lost that are remembered to spot spurious losses.
LOST_MEMORY_RANGES = 32
TIME_THRESHOLD = 9.0 / 8.0
GRANULARITY = 0.001
INITIAL_RTT = 0.333
PERSISTENT_CONGESTION_THRESHOLD = 3
#: Probes a PTO may send without regard to the congestion window (§6.2.4).
PTO_PROBES = 2
#: A server sends at most this many times what it received before the address is validated.
AMPLIFICATION_FACTOR = 3

TIMEOUT_NONE = 0
TIMEOUT_LOSS = 1
TIMEOUT_PTO = 2


class SentPacket:
    """What recovery remembers of one sent packet; ``frames`` is the caller's, opaque here."""

    __slots__ = ("pn", "time_sent", "size", "ack_eliciting", "in_flight", "mtu_probe", "frames")

    def __init__(
        self,
        pn: int,
        time_sent: float,
        size: int,
        ack_eliciting: bool,
        in_flight: bool,
        frames: object,
        mtu_probe: bool = False,
    ) -> None:
        self.pn = pn
        self.time_sent = time_sent
        self.size = size
        self.ack_eliciting = ack_eliciting
        self.in_flight = in_flight
        self.frames = frames
        self.mtu_probe = mtu_probe

    def __repr__(self) -> str:
        return f"SentPacket(pn={self.pn}, size={self.size}, t={self.time_sent:.6f})"


class RttEstimator:
    """min_rtt, smoothed_rtt and rttvar as RFC 9002 §5 defines them."""

    __slots__ = ("latest", "smoothed", "var", "min", "has_sample", "first_sample_time")

    def __init__(self, initial_rtt: float = INITIAL_RTT) -> None:
        self.latest = 0.0
        self.smoothed = initial_rtt
        self.var = initial_rtt / 2.0
        self.min = 0.0
        self.has_sample = False
        self.first_sample_time = 0.0

    def update(self, latest_rtt: float, ack_delay: float, now: float) -> None:
        """Feed one RTT sample; ``ack_delay`` is already capped by the caller."""
        self.latest = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.first_sample_time = now
            self.min = latest_rtt
            self.smoothed = latest_rtt
            self.var = latest_rtt / 2.0
            return
        if latest_rtt < self.min:
            self.min = latest_rtt
        adjusted = latest_rtt
        if latest_rtt >= self.min + ack_delay:
            adjusted = latest_rtt - ack_delay
        diff = self.smoothed - adjusted
        self.var = 0.75 * self.var + 0.25 * (diff if diff >= 0.0 else -diff)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted

    def reset_initial(self, rtt: float) -> None:
        """Take ``rtt`` as the initial RTT, before any sample: a PATH_CHALLENGE answered on
        the same 4-tuple measured it (noq's reset_initial_rtt; RFC 9002 §6.2.2)."""
        if not self.has_sample and rtt > 0.0:
            self.smoothed = rtt
            self.var = rtt / 2.0

    def pto_base(self) -> float:
        """smoothed_rtt + max(4·rttvar, granularity): the PTO before ack delay and backoff."""
        v = 4.0 * self.var
        return self.smoothed + (v if v > GRANULARITY else GRANULARITY)

    def loss_delay(self) -> float:
        """How long after a later packet is acknowledged an unacknowledged one counts as lost."""
        r = self.latest if self.latest > self.smoothed else self.smoothed
        d = TIME_THRESHOLD * r
        return d if d > GRANULARITY else GRANULARITY


class SentSpace:
    """Sent packets of one packet-number space, in packet-number order."""

    __slots__ = (
        "packets",
        "next_pn",
        "largest_acked",
        "loss_time",
        "last_ack_eliciting_time",
        "ack_eliciting_in_flight",
        "ecn_ce",
        "discarded",
        "declared_lost",
        "pure_ack",
    )

    def __init__(self) -> None:
        self.packets: dict[int, SentPacket] = {}
        #: The newest packet that held only ACKs: when the peer acknowledges it, the ranges it
        #: reported need not be reported again (RFC 9000 §13.2.4). Without it a connection whose
        #: peer only pings (an idle one) would repeat every old gap in every ACK for good.
        self.pure_ack: SentPacket | None = None
        self.next_pn = 0
        self.largest_acked = -1
        self.loss_time = INF
        self.last_ack_eliciting_time = 0.0
        self.ack_eliciting_in_flight = 0
        self.ecn_ce = 0
        self.discarded = False
        self.declared_lost = RangeSet(LOST_MEMORY_RANGES)


class Recovery:
    """RFC 9002 loss detection, PTO and congestion bookkeeping for one path."""

    __slots__ = (
        "rtt",
        "cc",
        "spaces",
        "pto_count",
        "probes",
        "pto_space",
        "anchor",
        "bytes_in_flight",
        "max_ack_delay",
        "is_server",
        "handshake_confirmed",
        "has_handshake_keys",
        "peer_validated_address",
        "address_validated",
        "bytes_received",
        "bytes_sent",
        "app_limited",
        "persistent_congestion_events",
        "packet_threshold",
        "spurious_losses",
        "acked",
        "lost",
    )

    def __init__(
        self,
        *,
        is_server: bool,
        cc: CongestionController | None = None,
        initial_rtt: float = INITIAL_RTT,
        max_ack_delay: float = 0.025,
    ) -> None:
        self.rtt = RttEstimator(initial_rtt)
        self.cc: CongestionController = cc if cc is not None else Cubic()
        self.spaces = [SentSpace(), SentSpace(), SentSpace()]
        self.pto_count = 0
        self.probes = 0
        self.pto_space = APPLICATION
        # When the RFC's SetLossDetectionTimer last ran: the anti-deadlock PTO counts from here.
        self.anchor = 0.0
        self.bytes_in_flight = 0
        #: The peer's max_ack_delay transport parameter.
        self.max_ack_delay = max_ack_delay
        self.is_server = is_server
        self.handshake_confirmed = False
        self.has_handshake_keys = False
        # A server knows the client has its address; a client learns it from a Handshake ACK.
        self.peer_validated_address = is_server
        # A client's peer (the server) is validated by construction; a server's is not.
        self.address_validated = not is_server
        self.bytes_received = 0
        self.bytes_sent = 0
        self.app_limited = False
        self.persistent_congestion_events = 0
        self.packet_threshold = PACKET_THRESHOLD
        self.spurious_losses = 0
        self.acked: list[SentPacket] = []
        self.lost: list[SentPacket] = []

    # -- anti-amplification (RFC 9000 §8.1) ---------------------------------

    def on_datagram_received(self, size: int) -> None:
        self.bytes_received += size

    def on_datagram_sent(self, size: int) -> None:
        self.bytes_sent += size

    def amplification_budget(self) -> int:
        """Bytes this path may still send before the peer's address is validated."""
        if self.address_validated:
            return 1 << 62
        budget = AMPLIFICATION_FACTOR * self.bytes_received - self.bytes_sent
        return budget if budget > 0 else 0

    # -- sending ------------------------------------------------------------

    def send_budget(self) -> int:
        """Bytes that may be sent now: congestion window (or PTO probes) and amplification limit."""
        if self.probes > 0:
            window = 1 << 62
        else:
            window = self.cc.window - self.bytes_in_flight
        amp = self.amplification_budget()
        budget = window if window < amp else amp
        return budget if budget > 0 else 0

    def on_packet_sent(self, space: int, packet: SentPacket) -> None:
        sp = self.spaces[space]
        sp.next_pn = packet.pn + 1
        if not packet.in_flight and not packet.ack_eliciting:
            # Pure ACKs are never lost and bear no RTT sample: only the newest is remembered.
            sp.pure_ack = packet
            return
        sp.packets[packet.pn] = packet
        if packet.in_flight:
            self.bytes_in_flight += packet.size
        if packet.ack_eliciting:
            sp.ack_eliciting_in_flight += 1
            sp.last_ack_eliciting_time = packet.time_sent
            self.anchor = packet.time_sent
            if self.probes > 0:
                self.probes -= 1

    # -- acknowledgements ---------------------------------------------------

    def on_ack_received(
        self,
        space: int,
        ranges: list[tuple[int, int]],
        ack_delay: float,
        now: float,
        ecn_ce: int = -1,
    ) -> None:
        """Process one ACK frame's ``[start, stop)`` ranges, highest first.

        Fills :attr:`acked` with newly acknowledged packets and :attr:`lost` with packets
        declared lost by it; raises :class:`AckError` for an ACK of a packet never sent.
        ``ecn_ce`` is the frame's ECN-CE count, or -1 for an ACK frame without ECN counts.
        """
        acked = self.acked
        lost = self.lost
        acked.clear()
        lost.clear()
        sp = self.spaces[space]
        largest = ranges[0][1] - 1
        if largest >= sp.next_pn:
            raise AckError(f"ACK of packet {largest}, never sent (next is {sp.next_pn})")
        self.anchor = now
        if sp.discarded:
            return
        if largest > sp.largest_acked:
            sp.largest_acked = largest
        if sp.declared_lost:
            self._check_spurious(sp, ranges, largest)
        packets = sp.packets
        newest: SentPacket | None = None
        # Old ranges are re-reported in every ACK; everything below the oldest packet still
        # outstanding is done, so the work per ACK is what it newly acknowledges.
        lowest = next(iter(packets)) if packets else sp.next_pn
        for start, stop in ranges:
            if start >= stop:
                raise AckError("empty ACK range")
            if stop <= lowest:
                break
            if start < lowest:
                start = lowest
            if stop - start <= len(packets):
                for pn in range(start, stop):
                    p = packets.pop(pn, None)
                    if p is not None:
                        acked.append(p)
                        if newest is None or pn > newest.pn:
                            newest = p
            else:
                for pn in [k for k in packets if start <= k < stop]:
                    p = packets.pop(pn)
                    acked.append(p)
                    if newest is None or pn > newest.pn:
                        newest = p
        pure = sp.pure_ack
        if pure is not None:
            for start, stop in ranges:  # highest first
                if pure.pn >= stop:
                    break  # above the largest acknowledged, or in a gap
                if pure.pn >= start:
                    acked.append(pure)
                    sp.pure_ack = None
                    break
        if newest is None:
            return
        if space == HANDSHAKE and not self.is_server:
            self.peer_validated_address = True
        any_eliciting = False
        cc = self.cc
        for p in acked:
            if p.ack_eliciting:
                any_eliciting = True
                sp.ack_eliciting_in_flight -= 1
            if p.in_flight:
                self.bytes_in_flight -= p.size
        if newest.pn == largest and any_eliciting:
            if space == INITIAL:
                ack_delay = 0.0
            elif self.handshake_confirmed and ack_delay > self.max_ack_delay:
                ack_delay = self.max_ack_delay
            self.rtt.update(now - newest.time_sent, ack_delay, now)
        if ecn_ce > sp.ecn_ce:
            sp.ecn_ce = ecn_ce
            cc.on_congestion(newest.time_sent, now)
        self._detect_lost(sp, now)
        if self.lost:
            self._on_lost(now)
        # After the losses, as RFC 9002 A.7 orders it: a congestion event this ACK revealed
        # puts the packets it acknowledges inside the new recovery period.
        acked_bytes = 0
        for p in acked:
            if p.in_flight and not cc.in_recovery(p.time_sent):
                acked_bytes += p.size
        if acked_bytes:
            cc.on_ack(acked_bytes, now, self.rtt.smoothed, self.app_limited)
        if self.peer_validated_address:
            self.pto_count = 0

    def _check_spurious(self, sp: SentSpace, ranges: list[tuple[int, int]], largest: int) -> None:
        """A packet we declared lost was acknowledged after all: the path reorders.

        Widen the packet threshold past the reordering seen (RFC 9002 §6.1.1 allows adapting
        it), so the next reordered packet is not retransmitted and taken for congestion.
        """
        lost = sp.declared_lost
        low = lost.start
        for start, stop in ranges:
            if stop <= low:
                break
            gaps = lost.gaps(start, stop)
            if sum(b - a for a, b in gaps) == stop - start:
                continue
            # The lowest packet both acknowledged and declared lost: the widest reordering.
            first = gaps[0][1] if gaps and gaps[0][0] == start else start
            lost.remove(start, stop)
            self.spurious_losses += 1
            distance = largest - first + 1
            if distance > self.packet_threshold:
                self.packet_threshold = (
                    distance if distance < MAX_PACKET_THRESHOLD else MAX_PACKET_THRESHOLD
                )
            if not lost:
                break

    def _detect_lost(self, sp: SentSpace, now: float) -> None:
        sp.loss_time = INF
        largest = sp.largest_acked
        loss_delay = self.rtt.loss_delay()
        lost = self.lost
        first = len(lost)
        threshold = self.packet_threshold
        for pn, p in sp.packets.items():
            if pn > largest:
                break
            # The same sum as the deadline, so a timer firing at loss_time always finds it due.
            t = p.time_sent + loss_delay
            if t <= now or largest >= pn + threshold:
                lost.append(p)
            elif t < sp.loss_time:
                sp.loss_time = t
        packets = sp.packets
        declared = sp.declared_lost
        for i in range(first, len(lost)):
            p = lost[i]
            del packets[p.pn]
            declared.add(p.pn, p.pn + 1)
            if p.ack_eliciting:
                sp.ack_eliciting_in_flight -= 1

    def _on_lost(self, now: float) -> None:
        """Take lost packets out of flight; one congestion event; check persistent congestion.

        Lost PMTU probes leave flight but are not congestion (RFC 8899 §4.1).
        """
        latest_sent = -1.0
        rtt = self.rtt
        pc_duration = (
            rtt.pto_base() + self.max_ack_delay
        ) * PERSISTENT_CONGESTION_THRESHOLD
        run_start = -1.0
        prev_pn = -2
        persistent = False
        for p in self.lost:
            if p.in_flight:
                self.bytes_in_flight -= p.size
            if p.mtu_probe:
                continue
            if p.in_flight and p.time_sent > latest_sent:
                latest_sent = p.time_sent
            # Persistent congestion: ack-eliciting losses spanning the duration, with no packet
            # in between acknowledged (consecutive packet numbers), all sent after the first RTT
            # sample (RFC 9002 §7.6).
            if not rtt.has_sample or p.time_sent <= rtt.first_sample_time:
                prev_pn = -2
                continue
            if p.pn != prev_pn + 1:
                run_start = -1.0
            prev_pn = p.pn
            if p.ack_eliciting:
                if run_start < 0.0:
                    run_start = p.time_sent
                elif p.time_sent - run_start > pc_duration:
                    persistent = True
        if latest_sent >= 0.0:
            self.cc.on_congestion(latest_sent, now)
        if persistent:
            self.persistent_congestion_events += 1
            self.cc.on_persistent_congestion(now)
            # RFC 9002 §5.2: min_rtt restarts from the newest sample after persistent congestion.
            rtt.min = rtt.latest

    # -- timers -------------------------------------------------------------

    def _ack_eliciting_in_flight(self) -> bool:
        for sp in self.spaces:
            if sp.ack_eliciting_in_flight > 0:
                return True
        return False

    def _pto_time(self) -> tuple[float, int]:
        duration = self.rtt.pto_base() * (1 << self.pto_count)
        if not self._ack_eliciting_in_flight():
            # Client anti-deadlock (§6.2.2.1): keep probing until the server validated us.
            space = HANDSHAKE if self.has_handshake_keys else INITIAL
            return self.anchor + duration, space
        best = INF
        best_space = APPLICATION
        for i in range(3):
            sp = self.spaces[i]
            if sp.discarded or sp.ack_eliciting_in_flight == 0:
                continue
            if i == APPLICATION:
                if not self.handshake_confirmed:
                    break
                duration += self.max_ack_delay * (1 << self.pto_count)
            t = sp.last_ack_eliciting_time + duration
            if t < best:
                best = t
                best_space = i
        return best, best_space

    def loss_deadline(self) -> float:
        """When :meth:`on_timeout` must run next, or ``inf`` (RFC 9002 A.8)."""
        earliest = INF
        for sp in self.spaces:
            if sp.loss_time < earliest:
                earliest = sp.loss_time
        if earliest < INF:
            return earliest
        if self.is_server and self.amplification_budget() == 0:
            return INF
        if not self._ack_eliciting_in_flight() and self.peer_validated_address:
            return INF
        return self._pto_time()[0]

    def on_timeout(self, now: float) -> int:
        """The loss-detection deadline passed: declare time-threshold losses or arm a PTO.

        Returns TIMEOUT_LOSS (see :attr:`lost`), TIMEOUT_PTO (send up to :attr:`probes`
        ack-eliciting packets in :attr:`pto_space`, regardless of the window) or TIMEOUT_NONE.
        """
        self.lost.clear()
        self.acked.clear()
        earliest = INF
        loss_sp: SentSpace | None = None
        for sp in self.spaces:
            if sp.loss_time < earliest:
                earliest = sp.loss_time
                loss_sp = sp
        if loss_sp is not None:
            if earliest > now:
                return TIMEOUT_NONE
            self._detect_lost(loss_sp, now)
            if self.lost:
                self._on_lost(now)
            return TIMEOUT_LOSS
        deadline = self.loss_deadline()
        if deadline > now:
            return TIMEOUT_NONE
        _, space = self._pto_time()
        self.anchor = now
        self.pto_space = space
        self.pto_count += 1
        self.probes = PTO_PROBES
        return TIMEOUT_PTO

    def discard_space(self, space: int) -> None:
        """Initial or Handshake keys were dropped: forget that space's packets (RFC 9002 A.11)."""
        sp = self.spaces[space]
        for p in sp.packets.values():
            if p.in_flight:
                self.bytes_in_flight -= p.size
        sp.packets.clear()
        sp.pure_ack = None
        sp.discarded = True
        sp.loss_time = INF
        sp.last_ack_eliciting_time = 0.0
        sp.ack_eliciting_in_flight = 0
        self.pto_count = 0

    def forget(self, space: int, pns: list[int]) -> list[SentPacket]:
        """Take packets out of tracking without a congestion signal (rejected 0-RTT, RFC 9002 A.11).

        Returns those still tracked, for the caller to queue their content again.
        """
        sp = self.spaces[space]
        out: list[SentPacket] = []
        for pn in pns:
            p = sp.packets.pop(pn, None)
            if p is None:
                continue
            if p.in_flight:
                self.bytes_in_flight -= p.size
            if p.ack_eliciting:
                sp.ack_eliciting_in_flight -= 1
            out.append(p)
        if not sp.packets:
            sp.loss_time = INF
        return out

    def on_handshake_confirmed(self) -> None:
        self.handshake_confirmed = True
        self.peer_validated_address = True
