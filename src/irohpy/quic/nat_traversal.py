"""n0's NAT traversal inside one QUIC connection, as noq (Rust iroh 1.x) runs it: sans-IO.

It is on when both sides send transport parameter 0x3d7f91120401 (how many candidate addresses
each accepts from the other) and multipath is negotiated. The QUIC server announces its
candidate addresses with ADD_ADDRESS and withdraws them with REMOVE_ADDRESS. The client runs
rounds: round += 1, one REACH_OUT per local candidate, and off-path PATH_CHALLENGE probes to
every server candidate. A server that sees a REACH_OUT of a newer round forgets the old one and
probes every client candidate of the new round. A probe goes out up to nine times, the gaps
growing from initial_rtt/10 and capped at 2 s. When a PATH_RESPONSE on the client matches one
of its probes, the client opens a path to that 4-tuple (status backup); server probes only open
the server's NAT.

Addresses are ``(host, port)`` with the host in canonical text form (an IPv4-mapped IPv6 address
becomes IPv4). The connection feeds frames, PATH_RESPONSEs and time in, and pulls out frames to
send, probes (:class:`Probe`) and paths to open (:class:`OpenPath`). Probe tokens are random; a
response that matches none costs one dictionary lookup. Whatever the peer sends, the core's
tables stay bounded by the two address limits.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Final, Union

from irohpy.errors import InvalidAddr, NatTraversalError
from irohpy.quic.errors import QuicTransportStateError
from irohpy.quic.frames import (
    FRAME_ADD_ADDRESS_V4,
    FRAME_ADD_ADDRESS_V6,
    FRAME_REACH_OUT_V4,
    FRAME_REACH_OUT_V6,
    FRAME_REMOVE_ADDRESS,
    AddAddress,
    ReachOut,
    RemoveAddress,
)
from irohpy.quic.transport_params import TransportParameters

#: Probes per address and round (noq's MAX_NAT_PROBE_ATTEMPTS): a first one and eight retries.
MAX_PROBE_ATTEMPTS: Final = 9
#: The longest gap between two probes of a round.
MAX_PROBE_INTERVAL: Final = 2.0
_MAX_BACKOFF_EXPONENT: Final = 8
#: Challenges a client may have outstanding beyond its rounds' probes: the ones it sends along
#: with off-path PATH_RESPONSEs, which the peer, not we, retries.
MAX_EXTRA_CHALLENGES: Final = 16
TOKEN_SIZE: Final = 8
#: What iroh offers in the transport parameter.
DEFAULT_MAX_ADDRESSES: Final = 32

IpPort = tuple[str, int]
NatFrame = Union[AddAddress, RemoveAddress, ReachOut]


def canonical(host: str | bytes, port: int) -> IpPort:
    """``(host, port)`` in the form the core compares: IPv4-mapped IPv6 as IPv4, no scope."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidAddr(f"not an IP address: {host!r}") from None
    if not 0 <= port <= 0xFFFF:
        raise InvalidAddr("port must be in 0..65535")
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped), port
        return str(ipaddress.IPv6Address(ip.packed)), port
    return str(ip), port


def _packed(addr: IpPort) -> bytes:
    return ipaddress.ip_address(addr[0]).packed


def probeable(addr: IpPort) -> bool:
    """Whether a probe to ``addr`` could reach a peer: a unicast address and a real port."""
    ip = ipaddress.ip_address(addr[0])
    if addr[1] == 0 or ip.is_unspecified or ip.is_multicast:
        return False
    return ip.packed != b"\xff\xff\xff\xff"  # IPv4 limited broadcast


@dataclass(slots=True)
class Probe:
    """Send an off-path PATH_CHALLENGE carrying ``token`` to ``addr``: a short-header packet
    with the active CID of a validated path, not padded, not congestion controlled."""

    addr: IpPort
    token: bytes


@dataclass(slots=True)
class OpenPath:
    """A probe came back: open a multipath path to ``remote`` from ``local`` (status backup)."""

    remote: IpPort
    local: str | None
    rtt: float | None = None
    """How long the probe took to come back: the new path's initial RTT."""


class _Candidate:
    """One address probed in the current round: probes left after the next, or done."""

    __slots__ = ("addr", "remaining", "succeeded")

    def __init__(self, addr: IpPort, remaining: int) -> None:
        self.addr = addr
        self.remaining = remaining
        self.succeeded = False

    def left(self) -> int:
        return 0 if self.succeeded else self.remaining


def negotiated(
    is_client: bool,
    ours: TransportParameters,
    theirs: TransportParameters,
    *,
    initial_rtt: float = 0.333,
    ipv6: bool = True,
) -> NatTraversal | None:
    """The connection's traversal state, or None when either side lacks the parameter or
    multipath (noq runs the extension only on top of multipath)."""
    local_limit = ours.max_remote_nat_traversal_addresses
    peer_limit = theirs.max_remote_nat_traversal_addresses
    if local_limit is None or peer_limit is None:
        return None
    if ours.initial_max_path_id is None or theirs.initial_max_path_id is None:
        return None
    return NatTraversal(
        is_client, max_remote=local_limit, max_local=peer_limit, initial_rtt=initial_rtt, ipv6=ipv6
    )


class NatTraversal:
    """One connection's NAT-traversal state; ``now`` is the driver's clock in seconds.

    ``max_remote`` is our own limit on the peer's addresses, ``max_local`` the peer's limit on
    ours. ``ipv6`` says whether we can send to IPv6 addresses at all; IPv6 candidates are
    skipped without it.
    """

    __slots__ = (
        "is_client",
        "max_remote",
        "max_local",
        "initial_rtt",
        "ipv6",
        "round",
        "attempt",
        "deadline",
        "_local",
        "_next_seq",
        "_remote_by_seq",
        "_remote_changed",
        "_round_remotes",
        "_pending_probes",
        "_sent",
        "_to_open",
        "_pending_add",
        "_pending_remove",
        "_pending_reach_out",
    )

    def __init__(
        self,
        is_client: bool,
        *,
        max_remote: int = DEFAULT_MAX_ADDRESSES,
        max_local: int = DEFAULT_MAX_ADDRESSES,
        initial_rtt: float = 0.333,
        ipv6: bool = True,
    ) -> None:
        self.is_client = is_client
        self.max_remote = max_remote
        self.max_local = max_local
        self.initial_rtt = initial_rtt
        self.ipv6 = ipv6
        #: The client's latest round, or on a server the newest round a REACH_OUT named.
        self.round = 0
        #: Probing passes sent in this round after the first.
        self.attempt = 0
        #: When the next probing pass is due (None: the round has nothing left to send).
        self.deadline: float | None = None
        #: Our candidates; on a server with the ADD_ADDRESS sequence number each was sent with.
        self._local: dict[IpPort, int] = {}
        self._next_seq = 0
        #: Client: the server's candidates by ADD_ADDRESS sequence number.
        self._remote_by_seq: dict[int, _Candidate] = {}
        self._remote_changed = False
        #: Server: the client's candidates of the current round.
        self._round_remotes: dict[IpPort, _Candidate] = {}
        self._pending_probes: dict[IpPort, None] = {}
        #: Outstanding probe tokens and where each went; oldest first.
        self._sent: dict[bytes, tuple[IpPort, float]] = {}
        self._to_open: dict[tuple[IpPort, str | None], float | None] = {}
        self._pending_add: dict[int, AddAddress] = {}
        self._pending_remove: dict[int, None] = {}
        self._pending_reach_out: list[ReachOut] = []

    # -- our candidates -----------------------------------------------------------------

    def add_local_address(self, addr: IpPort) -> None:
        """Offer ``addr`` as ours: a server announces it, a client names it in its next round."""
        addr = canonical(addr[0], addr[1])
        if addr in self._local:
            return
        if not probeable(addr):
            raise NatTraversalError(f"{addr[0]} port {addr[1]} cannot be a candidate")
        if len(self._local) >= self.max_local:
            raise NatTraversalError(f"the peer takes at most {self.max_local} candidate addresses")
        seq = 0
        if not self.is_client:
            seq = self._next_seq
            self._next_seq = seq + 1
            self._pending_add[seq] = AddAddress(seq, _packed(addr), addr[1])
        self._local[addr] = seq

    def remove_local_address(self, addr: IpPort) -> None:
        """Stop offering ``addr``; a server withdraws it (unless its ADD_ADDRESS never left)."""
        seq = self._local.pop(canonical(addr[0], addr[1]), -1)
        if seq < 0 or self.is_client:
            return
        if self._pending_add.pop(seq, None) is None:
            self._pending_remove[seq] = None

    def set_local_addresses(self, addrs: list[IpPort]) -> None:
        """Make our candidates ``addrs``, dropping the unusable ones and those past the limit."""
        wanted: dict[IpPort, None] = {}
        for host, port in addrs:
            addr = canonical(host, port)
            if probeable(addr):
                wanted[addr] = None
        for addr in [a for a in self._local if a not in wanted]:
            self.remove_local_address(addr)
        for addr in wanted:
            if addr not in self._local and len(self._local) < self.max_local:
                self.add_local_address(addr)

    def local_addresses(self) -> list[IpPort]:
        return list(self._local)

    def remote_addresses(self) -> list[IpPort]:
        """The server's candidates as its ADD_ADDRESS frames left them (client only)."""
        return [c.addr for c in self._remote_by_seq.values()]

    def take_remote_changed(self) -> bool:
        """Whether the server's candidates changed since the last call (a reason for a round)."""
        changed = self._remote_changed
        self._remote_changed = False
        return changed

    # -- rounds ---------------------------------------------------------------------------

    def initiate_round(self, now: float) -> list[IpPort]:
        """Client: start a round, cancelling the last. Queues one REACH_OUT per local candidate
        and a probe to every reachable server candidate; returns the addresses to be probed."""
        if not self.is_client:
            raise NatTraversalError("only the QUIC client starts NAT traversal rounds")
        if not self._local:
            raise NatTraversalError("no local candidate addresses yet", transient=True)
        self.round += 1
        self.attempt = 0
        self._sent.clear()
        self._pending_probes.clear()
        for cand in self._remote_by_seq.values():
            cand.succeeded = False
            if self._reachable(cand.addr):
                cand.remaining = MAX_PROBE_ATTEMPTS - 1
                self._pending_probes[cand.addr] = None
            else:
                cand.remaining = 0
        self._pending_reach_out = [ReachOut(self.round, _packed(a), a[1]) for a in self._local]
        self._arm(now)
        return list(self._pending_probes)

    def retry_delay(self) -> float | None:
        """The gap before the next probing pass, or None when every probe of the round is spent."""
        if not any(c.left() > 0 for c in self._candidates()):
            return None
        base = self.initial_rtt / 10
        exponent = min(self.attempt, _MAX_BACKOFF_EXPONENT)
        interval = base if exponent == 0 else base * (1 << (exponent - 1))
        return min(interval, MAX_PROBE_INTERVAL)

    def on_timeout(self, now: float) -> None:
        """Queue the next probing pass when it is due."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        self.attempt += 1
        for cand in self._candidates():
            if cand.left() > 0:
                cand.remaining -= 1
                if self._reachable(cand.addr):
                    self._pending_probes[cand.addr] = None
                else:
                    cand.remaining = 0
        self._arm(now)

    def _arm(self, now: float) -> None:
        delay = self.retry_delay()
        self.deadline = None if delay is None else now + delay

    def _candidates(self) -> list[_Candidate]:
        if self.is_client:
            return list(self._remote_by_seq.values())
        return list(self._round_remotes.values())

    def _reachable(self, addr: IpPort) -> bool:
        return self.ipv6 or ":" not in addr[0]

    # -- frames from the peer ---------------------------------------------------------------

    def on_frame(self, frame: NatFrame, now: float) -> None:
        """A NAT-traversal frame from the peer; raises PROTOCOL_VIOLATION for one sent by the
        wrong side and for a REACH_OUT round naming more addresses than we accept."""
        if isinstance(frame, AddAddress):
            if not self.is_client:
                frame_type = FRAME_ADD_ADDRESS_V6 if len(frame.ip) == 16 else FRAME_ADD_ADDRESS_V4
                raise QuicTransportStateError("ADD_ADDRESS from a client", frame_type=frame_type)
            self._on_add_address(frame)
        elif isinstance(frame, RemoveAddress):
            if not self.is_client:
                raise QuicTransportStateError("REMOVE_ADDRESS from a client", frame_type=FRAME_REMOVE_ADDRESS)
            if self._remote_by_seq.pop(frame.sequence, None) is not None:
                self._remote_changed = True
        else:
            if self.is_client:
                frame_type = FRAME_REACH_OUT_V6 if len(frame.ip) == 16 else FRAME_REACH_OUT_V4
                raise QuicTransportStateError("REACH_OUT from a server", frame_type=frame_type)
            self._on_reach_out(frame, now)

    def _on_add_address(self, frame: AddAddress) -> None:
        addr = canonical(frame.ip, frame.port)
        if not probeable(addr):
            return
        known = self._remote_by_seq.get(frame.sequence)
        if known is not None:
            if known.addr != addr:  # noq takes the newer value of a sequence number
                self._remote_by_seq[frame.sequence] = _Candidate(addr, MAX_PROBE_ATTEMPTS)
                self._remote_changed = True
            return
        if len(self._remote_by_seq) >= self.max_remote:
            return  # as noq: past our limit the address is dropped, the connection stays
        self._remote_by_seq[frame.sequence] = _Candidate(addr, MAX_PROBE_ATTEMPTS)
        self._remote_changed = True

    def _on_reach_out(self, frame: ReachOut, now: float) -> None:
        if frame.round < self.round:
            return
        addr = canonical(frame.ip, frame.port)
        if not probeable(addr) or not self._reachable(addr):
            return
        new_round = frame.round > self.round
        if new_round:
            self.round = frame.round
            self.attempt = 0
            self._round_remotes.clear()
            self._sent.clear()
            self._pending_probes.clear()
        elif addr in self._round_remotes:
            return
        elif len(self._round_remotes) >= self.max_remote:
            frame_type = FRAME_REACH_OUT_V6 if len(frame.ip) == 16 else FRAME_REACH_OUT_V4
            raise QuicTransportStateError(
                f"REACH_OUT round {frame.round} names more than {self.max_remote} addresses", frame_type=frame_type
            )
        self._round_remotes[addr] = _Candidate(addr, MAX_PROBE_ATTEMPTS - 1)
        self._pending_probes[addr] = None
        if new_round:
            self._arm(now)

    # -- probes and responses ------------------------------------------------------------------

    def poll_probe(self, now: float = -1.0) -> Probe | None:
        """The next probe to send, with a fresh token; call only when it can go out now
        (``now``: the time it goes, to measure its round trip)."""
        if not self._pending_probes:
            return None
        addr = next(iter(self._pending_probes))
        del self._pending_probes[addr]
        return Probe(addr, self._challenge(addr, now))

    def challenge_with_response(self, addr: IpPort, now: float = -1.0) -> bytes | None:
        """Client: a token for a PATH_CHALLENGE to put beside an off-path PATH_RESPONSE to
        ``addr`` (where no validated path is), as noq does: the peer's probe got through, so
        ours may too. None on a server."""
        if not self.is_client:
            return None
        return self._challenge(canonical(addr[0], addr[1]), now)

    def _challenge(self, addr: IpPort, now: float) -> bytes:
        token = os.urandom(TOKEN_SIZE)
        sent = self._sent
        while len(sent) >= MAX_PROBE_ATTEMPTS * self.max_remote + MAX_EXTRA_CHALLENGES:
            del sent[next(iter(sent))]
        sent[token] = (addr, now)
        return token

    def on_path_response(self, remote: IpPort, token: bytes, local: str | None = None, now: float = -1.0) -> bool:
        """A PATH_RESPONSE from ``remote``; True when it answers one of our probes (then the
        connection must not treat it as on-path validation). On the client that queues an
        :class:`OpenPath`. Anything else is ignored at the cost of one dictionary lookup."""
        entry = self._sent.get(token)
        if entry is None:
            return False
        expected, sent_at = entry
        addr = canonical(remote[0], remote[1])
        if addr != expected:
            return False
        del self._sent[token]
        if self.is_client:
            for cand in self._remote_by_seq.values():
                if cand.addr == addr:
                    cand.succeeded = True
            key = (addr, local)
            rtt = now - sent_at if 0.0 <= sent_at <= now else None
            if key not in self._to_open and len(self._to_open) < self.max_remote + MAX_EXTRA_CHALLENGES:
                self._to_open[key] = rtt
        else:
            probed = self._round_remotes.get(addr)
            if probed is not None:
                probed.succeeded = True
        return True

    def poll_path_open(self) -> OpenPath | None:
        """Client: the next traversed 4-tuple to open a path on (status backup)."""
        if not self._to_open:
            return None
        key = next(iter(self._to_open))
        rtt = self._to_open.pop(key)
        return OpenPath(key[0], key[1], rtt)

    def path_open_blocked(self, path: OpenPath) -> None:
        """Opening ``path`` failed for now (no path id or CID free): keep it for later."""
        key = (path.remote, path.local)
        if len(self._to_open) < self.max_remote + MAX_EXTRA_CHALLENGES:
            self._to_open[key] = path.rtt

    # -- frames to the peer ---------------------------------------------------------------------

    def pop_frame(self) -> NatFrame | None:
        """The next frame to send in a 1-RTT packet (at most 30 bytes); ack-eliciting."""
        if self._pending_add:
            seq = next(iter(self._pending_add))
            return self._pending_add.pop(seq)
        if self._pending_remove:
            seq = next(iter(self._pending_remove))
            del self._pending_remove[seq]
            return RemoveAddress(seq)
        if self._pending_reach_out:
            return self._pending_reach_out.pop(0)
        return None

    def has_frames(self) -> bool:
        """Whether :meth:`pop_frame` has something to send."""
        return bool(self._pending_add or self._pending_remove or self._pending_reach_out)

    def on_frame_lost(self, frame: NatFrame) -> None:
        """A packet carrying ``frame`` was lost: send it again if it still says something true."""
        if isinstance(frame, AddAddress):
            if self._local.get(canonical(frame.ip, frame.port)) == frame.sequence and not self.is_client:
                self._pending_add[frame.sequence] = frame
        elif isinstance(frame, RemoveAddress):
            if not self.is_client:
                self._pending_remove[frame.sequence] = None
        elif frame.round == self.round and self.is_client and canonical(frame.ip, frame.port) in self._local:
            if frame not in self._pending_reach_out:
                self._pending_reach_out.append(frame)

    def footprint(self) -> int:
        """Entries in all the core's tables (what the peer can add is bounded by the limits)."""
        return (
            len(self._local)
            + len(self._remote_by_seq)
            + len(self._round_remotes)
            + len(self._pending_probes)
            + len(self._sent)
            + len(self._to_open)
            + len(self._pending_add)
            + len(self._pending_remove)
            + len(self._pending_reach_out)
        )
