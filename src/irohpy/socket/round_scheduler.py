"""When to run a NAT-traversal round to one remote, as Rust iroh's remote state decides it.

Rounds run on the remote's lowest-id connection where we are the QUIC client (both endpoints
punch when each holds a client connection). A trigger (a connection added, our candidates or
the server's changed, a major network change, a scheduled retry) starts a round at once when
some candidate is new since the last round; otherwise at most one round per 5 s, the rest
deferred to that mark. Every 60 s the remote is checked: unless every connection has an IP path
with an RTT of 10 ms or less, that is a trigger too. A round refused for a passing reason (no
local candidates yet) is tried again after 100 ms. Sans-IO: time and the connections' traversal
cores in, rounds started on those cores.
"""

from __future__ import annotations

from collections.abc import Iterable

from irohpy.errors import NatTraversalError
from irohpy.quic.nat_traversal import IpPort, NatTraversal

#: The least time between two rounds when no candidate is new.
ROUND_INTERVAL = 5.0
#: How often the remote's paths are checked for being good enough.
UPGRADE_INTERVAL = 60.0
#: An IP path at or under this RTT needs no better one.
GOOD_ENOUGH_RTT = 0.010
#: The wait before retrying a round refused for a passing reason.
RETRY_AFTER = 0.1


def punching_connection(connections: Iterable[tuple[int, NatTraversal | None]]) -> NatTraversal | None:
    """The traversal core of the lowest-id client connection with the extension, if any."""
    best: tuple[int, NatTraversal] | None = None
    for conn_id, nat in connections:
        if nat is not None and nat.is_client and (best is None or conn_id < best[0]):
            best = (conn_id, nat)
    return None if best is None else best[1]


def good_enough(ip_rtts: Iterable[list[float]]) -> bool:
    """Whether every connection (one list of its IP paths' RTTs each) has a fast IP path."""
    return all(rtts and min(rtts) <= GOOD_ENOUGH_RTT for rtts in ip_rtts)


class RoundScheduler:
    """One remote's round timing; ``now`` is the driver's clock in seconds."""

    def __init__(self, now: float) -> None:
        self.last_round: float | None = None
        self._last_local: frozenset[IpPort] = frozenset()
        self._last_remote: frozenset[IpPort] = frozenset()
        #: A deferred or retried trigger.
        self.scheduled: float | None = None
        self.next_check = now + UPGRADE_INTERVAL

    def trigger(self, now: float, nat: NatTraversal | None) -> list[IpPort] | None:
        """Something changed: start a round on ``nat`` (the :func:`punching_connection`) now,
        or defer it. Returns the server candidates now being probed when a round started."""
        if nat is None:
            return None
        local = frozenset(nat.local_addresses())
        remote = frozenset(nat.remote_addresses())
        last = self.last_round
        if last is not None and local <= self._last_local and remote <= self._last_remote:
            due = last + ROUND_INTERVAL
            if due > now:
                self.scheduled = due
                return None
        try:
            probed = nat.initiate_round(now)
        except NatTraversalError as exc:
            if exc.transient:
                self.scheduled = now + RETRY_AFTER
            return None
        self.last_round = now
        self._last_local = local
        self._last_remote = remote
        return probed

    def timeout(self) -> float:
        """When :meth:`on_timeout` is next due."""
        scheduled = self.scheduled
        return self.next_check if scheduled is None else min(scheduled, self.next_check)

    def on_timeout(self, now: float, ip_rtts: Iterable[list[float]]) -> bool:
        """Whether a timer makes a trigger now: a deferred round fell due, or the periodic check
        found a connection (``ip_rtts`` as for :func:`good_enough`) without a fast IP path."""
        fire = False
        if self.scheduled is not None and now >= self.scheduled:
            self.scheduled = None
            fire = True
        if now >= self.next_check:
            self.next_check = now + UPGRADE_INTERVAL
            if not good_enough(ip_rtts):
                fire = True
        return fire
