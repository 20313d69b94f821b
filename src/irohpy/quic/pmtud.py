"""Datagram packetization-layer path MTU discovery for one path (RFC 8899, RFC 9000 §14.3).

QUIC starts every path at 1200-byte datagrams. This state machine probes larger sizes with
padded PING packets up to the path's ceiling (the local interface limit, default 1452 for
IPv4/UDP on Ethernet, lowered to the peer's max_udp_payload_size), first the ceiling itself and
then a binary search. A probe that is lost :data:`MAX_PROBES` times marks that size as too big.
Lost probes never count as congestion; recovery skips them.

Black holes: if regular datagrams larger than the base size keep getting lost while no large
datagram is acknowledged, the path falls back to the base size and searches again below the
size that failed. PTO probes shrink to the base size after repeated timeouts, so even a
path that drops every large datagram produces the acknowledgements that expose it.
"""

from __future__ import annotations

BASE_MTU = 1200
#: UDP payload on a 1500-byte Ethernet MTU: 1500 - 20 (IPv4) - 8 (UDP) - 20 (room for IPv6).
DEFAULT_CEILING = 1452
MAX_PROBES = 3
#: Stop the binary search when the window is this narrow.
SEARCH_GRANULARITY = 20
#: RFC 8899 PMTU_RAISE_TIMER: after a completed search, look for a larger MTU this often.
RAISE_INTERVAL = 600.0
#: Consecutive large datagrams lost, none acknowledged in between, that mean a black hole.
BLACK_HOLE_THRESHOLD = 8
#: From this many consecutive PTOs on, probe packets shrink to the base size (see datagram_size).
PTO_SHRINK = 2

SEARCHING = 0
SEARCH_COMPLETE = 1


class Pmtud:
    """Probe sizes, results and the current MTU of one path."""

    __slots__ = (
        "mtu",
        "ceiling",
        "low",
        "high",
        "state",
        "probe_size",
        "probe_in_flight",
        "probe_losses",
        "next_search",
        "large_losses",
        "largest_acked_large_pn",
        "black_holes",
    )

    def __init__(self, ceiling: int = DEFAULT_CEILING) -> None:
        self.mtu = BASE_MTU
        self.ceiling = ceiling if ceiling > BASE_MTU else BASE_MTU
        #: Largest size known to work, and smallest size known not to (exclusive bound).
        self.low = BASE_MTU
        self.high = self.ceiling + 1
        self.state = SEARCHING if self.ceiling > BASE_MTU else SEARCH_COMPLETE
        self.probe_size = 0
        self.probe_in_flight = False
        self.probe_losses = 0
        self.next_search = float("inf")
        self.large_losses = 0
        self.largest_acked_large_pn = -1
        self.black_holes = 0

    def set_peer_max_udp_payload(self, size: int) -> None:
        """The peer's max_udp_payload_size transport parameter lowers the ceiling."""
        if BASE_MTU <= size < self.ceiling:
            self.ceiling = size
            if self.high > size + 1:
                self.high = size + 1
            if self.mtu > size:
                self.mtu = size
                self.low = size
            if self.high - self.low <= 1:
                self.state = SEARCH_COMPLETE

    def _next_probe_size(self) -> int:
        if self.high > self.ceiling:
            return self.ceiling
        return (self.low + self.high) // 2

    def poll_probe(self, now: float) -> int:
        """Size of a probe to send now, or 0: at most one probe is in flight."""
        if self.state == SEARCH_COMPLETE:
            if now < self.next_search or self.mtu >= self.ceiling:
                return 0
            # Raise timer: retry everything above the current MTU.
            self.state = SEARCHING
            self.high = self.ceiling + 1
            self.probe_losses = 0
        if self.probe_in_flight:
            return 0
        if self.probe_size == 0:
            self.probe_size = self._next_probe_size()
        return self.probe_size

    def on_probe_sent(self) -> None:
        self.probe_in_flight = True

    def on_probe_acked(self, size: int, now: float) -> None:
        """A probe of ``size`` bytes got through: that size works."""
        self.probe_in_flight = False
        if size > self.low:
            self.low = size
        if size > self.mtu:
            self.mtu = size
        self._advance(now)

    def on_probe_lost(self, size: int, now: float) -> None:
        self.probe_in_flight = False
        if size != self.probe_size:
            return
        self.probe_losses += 1
        if self.probe_losses >= MAX_PROBES:
            if size < self.high:
                self.high = size
            self._advance(now)

    def _advance(self, now: float) -> None:
        self.probe_losses = 0
        self.probe_size = 0
        if self.low >= self.ceiling or self.high - self.low < SEARCH_GRANULARITY:
            self.state = SEARCH_COMPLETE
            self.next_search = now + RAISE_INTERVAL

    def datagram_size(self, pto_count: int) -> int:
        """The largest datagram to build now.

        After repeated PTOs, a path that silently dropped everything above some size would also
        drop full-size PTO probes forever and never produce the losses that reveal a black hole.
        So from the second consecutive PTO, probes fit in the base size: their ACK declares the
        large packets lost, and :meth:`on_packet_lost` sees the black hole.
        """
        return BASE_MTU if pto_count >= PTO_SHRINK else self.mtu

    def on_packet_acked(self, pn: int, size: int) -> None:
        """A regular (non-probe) datagram was acknowledged."""
        if size > BASE_MTU and pn > self.largest_acked_large_pn:
            self.largest_acked_large_pn = pn
            self.large_losses = 0

    def on_packet_lost(self, pn: int, size: int, now: float) -> bool:
        """A regular datagram was lost; returns True when that reveals a black hole."""
        # Packets larger than the current MTU were sent before an earlier fallback: old news.
        if size <= BASE_MTU or size > self.mtu or pn < self.largest_acked_large_pn:
            return False
        self.large_losses += 1
        if self.large_losses < BLACK_HOLE_THRESHOLD:
            return False
        self.black_holes += 1
        failed = self.mtu
        self.mtu = BASE_MTU
        self.low = BASE_MTU
        self.high = failed
        self.large_losses = 0
        self.probe_size = 0
        self.probe_losses = 0
        self.probe_in_flight = False
        self.state = SEARCHING if self.high - self.low >= SEARCH_GRANULARITY else SEARCH_COMPLETE
        self.next_search = now + RAISE_INTERVAL
        return True
