"""Which multipath path a remote's traffic uses, as Rust iroh chooses it (``BiasedRttPathSelector``).

IP paths are primary, relay paths backup: a primary path beats every backup at once, whatever
the RTTs. Within a tier the lowest RTT wins, IPv6 counting 3 ms faster, and the current path
is only left for one at least 5 ms better, so jitter does not make paths flap. The choice is
per remote, across all its connections; :func:`plan_paths` then says what one connection does
about it: the selected path AVAILABLE, every other BACKUP, and on the client the surplus IP
paths closed (the relay path stays open as the fallback). Sans-IO: RTTs in, decisions out.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

#: How much faster an IPv6 path counts than its RTT.
IPV6_RTT_ADVANTAGE = 0.003
#: How much better (biased) a same-tier path must be to take over.
RTT_SWITCHING_MIN = 0.005

PathKind = Literal["ipv4", "ipv6", "relay", "custom"]
_PRIMARY = 0
_BACKUP = 1


@dataclass(frozen=True)
class PathInfo:
    """One open path: ``key`` names its network path (equal on every connection to the
    remote), ``rtt`` is its smoothed RTT in seconds, None when it has no stats (closing)."""

    key: Hashable
    kind: PathKind
    rtt: float | None


def _sort_key(path: PathInfo, rtt: float) -> tuple[int, float]:
    if path.kind == "relay":
        return _BACKUP, rtt
    if path.kind == "ipv6":
        return _PRIMARY, rtt - IPV6_RTT_ADVANTAGE
    return _PRIMARY, rtt


def select_path(current: Hashable | None, paths: Iterable[PathInfo]) -> Hashable | None:
    """The path to move to, or None to stay on ``current``.

    ``paths`` holds every open path of every connection to the remote; a network path seen on
    several connections counts with its best RTT.
    """
    best: tuple[tuple[int, float], Hashable] | None = None
    current_key: tuple[int, float] | None = None
    for path in paths:
        if path.rtt is None:
            continue
        key = _sort_key(path, path.rtt)
        if path.key == current and (current_key is None or key < current_key):
            current_key = key
        if best is None or key < best[0]:
            best = (key, path.key)
    if best is None:
        return None
    (best_tier, best_rtt), best_path = best
    if current_key is None:
        return best_path
    current_tier, current_rtt = current_key
    if best_tier != current_tier or best_rtt + RTT_SWITCHING_MIN <= current_rtt:
        return best_path
    return None


@dataclass
class PathPlan:
    """What one connection does once a path is selected; path ids as the connection has them."""

    #: The selected network path is missing here and the client should open it.
    open_selected: bool = False
    available: list[int] = field(default_factory=list)
    backup: list[int] = field(default_factory=list)
    close: list[int] = field(default_factory=list)


def plan_paths(selected: PathInfo, paths: dict[int, PathInfo], is_client: bool) -> PathPlan:
    """Statuses for a connection's ``paths`` (by path id) given the remote's ``selected`` path.

    Only the client opens and closes paths, so the two sides never abandon different ones. It
    keeps one IP path: once the selected IP path is open here, every other IP path is closed.
    Relay and custom paths stay open as backups.
    """
    plan = PathPlan()
    present = any(p.key == selected.key for p in paths.values())
    plan.open_selected = is_client and not present
    prune = is_client and present and selected.kind in ("ipv4", "ipv6")
    for path_id, path in paths.items():
        if path.key == selected.key:
            plan.available.append(path_id)
        elif prune and path.kind in ("ipv4", "ipv6"):
            plan.close.append(path_id)
        else:
            plan.backup.append(path_id)
    return plan
