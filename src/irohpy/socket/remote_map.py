"""Remote endpoints: how to reach each one and which path its connections use.

What Rust iroh's remote state does, per remote endpoint and across all its connections:

- it keeps the addresses we know for the remote (ticket, lookup, paths that opened), where
  a dial's first flight goes to all at once while nothing was selected;
- every connection's paths are real network paths (a relay, an IPv4 or an IPv6 address);
  the client opens them, QUIC validates them, NAT traversal finds them;
- :func:`~irohpy.socket.path_selector.select_path` picks one network path for the remote,
  :func:`~irohpy.socket.path_selector.plan_paths` applies it to each connection (selected
  path available, others backup, the client closing surplus IP paths);
- :class:`~irohpy.socket.round_scheduler.RoundScheduler` says when a NAT-traversal round
  runs on the lowest-id client connection.

One thing is ours: a selected IP path that stopped acknowledging (two probe timeouts and
:data:`FALLBACK_SILENCE` without a packet) counts as having no RTT, so the selection moves to
the relay within seconds instead of waiting for the path's 15 s idle timeout; it comes back
once the path answers again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from irohpy.base.keys import EndpointId
from irohpy.errors import PathError
from irohpy.quic import connection as qc
from irohpy.quic.path import STATUS_AVAILABLE, PathState
from irohpy.socket.mapped import MappedAddr
from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.path_selector import PathInfo as SelectorPath
from irohpy.socket.path_selector import PathKind, plan_paths, select_path
from irohpy.socket.paths import EventKind, PathEvent, PathInfo, PathKey, RelayPath, describe_path, is_relay, offer
from irohpy.socket.round_scheduler import RoundScheduler, punching_connection

if TYPE_CHECKING:
    from irohpy.endpoint.connection import Connection

log = logging.getLogger(__name__)

INF = float("inf")
EVENT_QUEUE = 256
#: Addresses kept per remote; the oldest that no path uses go first.
MAX_ADDRS = 32
#: How often a remote with connections re-checks its paths (fallback, RTT changes).
CHECK_INTERVAL = 0.5
#: A path with two probe timeouts and nothing received for this long is failing.
FALLBACK_SILENCE = 1.0


def path_kind(path: PathKey) -> PathKind:
    if isinstance(path, RelayPath):
        return "relay"
    return "ipv6" if ":" in path[0] else "ipv4"


def failing(path: PathState, now: float) -> bool:
    """Whether a path stopped answering: probes timed out and nothing came back lately."""
    return path.recovery.pto_count >= 2 and now - path.last_activity >= FALLBACK_SILENCE


@dataclass(eq=False)
class RemoteState:
    endpoint_id: EndpointId | None
    mapped: MappedAddr = field(default_factory=MappedAddr)
    #: Known addresses and where each came from (dial, lookup, path), oldest first.
    addrs: dict[PathKey, str] = field(default_factory=dict)
    #: The network path the remote's traffic uses, None before any path is open.
    selected: PathKey | None = None
    #: Every connection to the remote, with its open paths by id.
    conns: dict[Connection, dict[int, PathKey]] = field(default_factory=dict)
    #: Path-event queues; None in one marks its end (its connection closed).
    subscribers: list[asyncio.Queue[PathEvent | None]] = field(default_factory=list)
    metrics: SocketMetrics | None = None
    scheduler: RoundScheduler | None = None
    #: Our NAT-traversal candidates, as every connection gets them.
    local_candidates: list[tuple[str, int]] = field(default_factory=list)
    #: When traffic went onto the relay (for time-to-direct).
    relay_since: float | None = None
    was_direct: bool = False
    #: A path open waits for the peer's path IDs or connection IDs.
    open_blocked: bool = False
    #: When the bridge runs :meth:`on_timeout` next.
    check_at: float = INF
    #: How many connections have each network path open (the remote's choice is among these).
    key_refs: dict[PathKey, int] = field(default_factory=dict)
    #: The connection NAT-traversal rounds run on, once known.
    puncher: Connection | None = None
    #: The local address the kernel sends from to a remote address, None where unknown.
    source_ip: Callable[[str], str | None] | None = None
    #: Each open IP path's local address when it opened (what a network change may take away).
    sources: dict[PathKey, str] = field(default_factory=dict)

    # -- addresses ---------------------------------------------------------------------

    def add_addr(self, path: PathKey, source: str) -> None:
        if path in self.addrs:
            return
        if len(self.addrs) >= MAX_ADDRS:
            used = {p for paths in self.conns.values() for p in paths.values()}
            victim = next((p for p in self.addrs if p not in used and p != self.selected), None)
            if victim is None:
                return
            del self.addrs[victim]
        self.addrs[path] = source

    def dial_targets(self) -> list[PathKey]:
        """Where a dial's packets go: the selected path, else every known address."""
        if self.selected is not None:
            return [self.selected]
        return list(self.addrs)

    # -- connections -------------------------------------------------------------------

    def add_connection(self, conn: Connection, now: float) -> None:
        """A connection's handshake completed: track its paths and punch if it is ours to."""
        quic = conn.quic
        paths: dict[int, PathKey] = {}
        self.conns[conn] = paths
        if self.scheduler is None:
            self.scheduler = RoundScheduler(now)
        quic.set_local_addresses(self.local_candidates)
        for pid, path in quic.paths.items():
            if not path.abandoned and path.validated:
                self._register(conn, pid, path.addr, now)
        home = quic.peer_address
        if quic.is_client and quic.multipath and not isinstance(home, RelayPath):
            # The first flight may have raced ahead on an IP path: keep the relay open too.
            for relay in [p for p in self.addrs if isinstance(p, RelayPath)]:
                self._open(conn, relay, now)
        self.puncher = _puncher([conn] if self.puncher is None else [self.puncher, conn])
        self.trigger(now)
        self.select(now, conn)

    def remove_connection(self, conn: Connection) -> None:
        paths = self.conns.pop(conn, None)
        if paths is None:
            return
        for path in paths.values():
            self._count("closed", path)
            self._unref(path)
        if conn is self.puncher:
            self.puncher = _puncher(list(self.conns))
        if not self.conns:
            self.selected = None
            self.relay_since = None

    def _unref(self, key: PathKey) -> None:
        left = self.key_refs.get(key, 0) - 1
        if left > 0:
            self.key_refs[key] = left
        else:
            self.key_refs.pop(key, None)
            self.sources.pop(key, None)

    def on_event(self, conn: Connection, ev: qc.Event, now: float) -> None:
        """A connection's path event (established, abandoned, new server candidates)."""
        paths = self.conns.get(conn)
        if paths is None:
            return
        if isinstance(ev, qc.PathEstablished):
            path = conn.quic.paths.get(ev.path_id)
            if path is not None and not path.abandoned:
                self._register(conn, ev.path_id, path.addr, now)
                self.select(now, conn)
        elif isinstance(ev, qc.PathAbandoned):
            gone = paths.pop(ev.path_id, None)
            if gone is not None:
                self._count("closed", gone)
                self._unref(gone)
                if not is_relay(gone) and ev.validated:
                    self._emit("lost", gone, now, conn)
                self.select(now, conn)
        elif isinstance(ev, qc.RemoteCandidatesChanged):
            self.trigger(now)

    def _register(self, conn: Connection, pid: int, addr: object, now: float) -> None:
        if not isinstance(addr, (tuple, RelayPath)):
            return
        key: PathKey = addr if isinstance(addr, RelayPath) else (str(addr[0]), int(addr[1]))
        paths = self.conns[conn]
        if pid in paths:
            return
        paths[pid] = key
        self.key_refs[key] = self.key_refs.get(key, 0) + 1
        if self.source_ip is not None and not isinstance(key, RelayPath) and key not in self.sources:
            source = self.source_ip(key[0])
            if source is not None:
                self.sources[key] = source
        self.add_addr(key, "path")
        if isinstance(key, RelayPath) and not conn.quic.is_client:
            conn.quic.set_path_idle_timeout(pid, qc.RELAY_PATH_IDLE_TIMEOUT)
        self._count("opened", key)
        self._emit("validated", key, now, conn)

    def on_network_change(self, local_ips: Collection[str], now: float) -> None:
        """Our interfaces changed: IP paths whose local address is gone are replaced, the rest
        pinged (:meth:`QuicConnection.handle_network_change`), as iroh hints noq. A path whose
        local address we never learned counts as recoverable, as in iroh."""
        lost_keys = {key for key, source in self.sources.items() if source not in local_ips}
        for conn, paths in self.conns.items():
            if conn.terminated is None:
                conn.quic.handle_network_change([pid for pid, key in paths.items() if key in lost_keys], now)
                conn._wake()

    # -- NAT traversal -----------------------------------------------------------------

    def set_local_candidates(self, addrs: list[tuple[str, int]], now: float) -> None:
        self.local_candidates = list(addrs)
        for conn in self.conns:
            if conn.terminated is None:
                conn.quic.set_local_addresses(self.local_candidates)
                conn._wake()
        self.trigger(now)

    def trigger(self, now: float) -> None:
        """Something changed that may make a NAT-traversal round worth it."""
        conn = self.puncher
        if conn is None or conn.terminated is not None or self.scheduler is None:
            return
        probed = self.scheduler.trigger(now, conn.quic.traversal)
        if probed is not None:
            if self.metrics is not None:
                self.metrics.holepunch_attempts.inc()
            log.debug("NAT traversal round to %s: probing %s", self.endpoint_id, probed)
            conn._wake()

    # -- path choice -------------------------------------------------------------------

    def _candidates(self, now: float) -> list[SelectorPath]:
        out: list[SelectorPath] = []
        for conn, paths in self.conns.items():
            if conn.terminated is not None:
                continue
            for pid, key in paths.items():
                path = conn.quic.paths.get(pid)
                if path is None or path.abandoned:
                    continue
                rtt = None if failing(path, now) else path.recovery.rtt.smoothed
                out.append(SelectorPath(key, path_kind(key), rtt))
        return out

    def select(self, now: float, conn: Connection | None = None) -> None:
        """Choose the remote's path and apply it: to every connection when the choice changed
        (or on the periodic check), else only to ``conn``, the one whose paths changed. A
        connection whose paths are all open elsewhere already changes no choice: only RTTs
        could, and the periodic check follows those."""
        if (
            conn is not None
            and self.selected in self.key_refs
            and all(self.key_refs.get(key, 0) > 1 for key in self.conns.get(conn, {}).values())
        ):
            self._apply(now, [conn])
            return
        candidates = self._candidates(now)
        current = self.selected
        if current is not None and not any(c.key == current and c.rtt is not None for c in candidates):
            # The selected path failed or closed everywhere: any other wins at once.
            current = None
        choice = select_path(current, candidates)
        changed = choice is not None and choice != self.selected
        if changed:
            previous = self.selected
            self.selected = choice  # type: ignore[assignment]
            assert self.selected is not None
            self._on_selected(previous, self.selected, now)
        elif choice is None and current is None and self.selected is not None:
            if not any(c.key == self.selected for c in candidates):
                self.selected = None
        self._apply(now, None if changed or conn is None else [conn])

    def _on_selected(self, previous: PathKey | None, path: PathKey, now: float) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.path_selected.labels(path_kind(path)).inc()
        if is_relay(path):
            if previous is None or not is_relay(previous):
                self.relay_since = now
            if previous is not None and not is_relay(previous):
                if metrics is not None:
                    metrics.fallbacks_to_relay.inc()
                log.info("direct path to %s failed; back on the relay", self.endpoint_id)
                self._emit("fallback", path, now)
                return
        else:
            if not self.was_direct:
                self.was_direct = True
                if metrics is not None:
                    metrics.num_conns_direct.inc(len(self.conns))
            if previous is not None and is_relay(previous) and self.relay_since is not None:
                if metrics is not None:
                    metrics.holepunch_successes.inc()
                    metrics.time_to_direct.observe(now - self.relay_since)
                log.info("direct path to %s: %s", self.endpoint_id, describe_path(path))
        self._emit("selected", path, now)

    def _apply(self, now: float, only: list[Connection] | None) -> None:
        selected = self.selected
        if selected is None:
            return
        sel = SelectorPath(selected, path_kind(selected), 0.0)
        for conn in self.conns if only is None else only:
            paths = self.conns.get(conn)
            if paths is None:
                continue
            quic = conn.quic
            if conn.terminated is not None or not quic.multipath:
                continue
            infos = {pid: SelectorPath(key, path_kind(key), 0.0) for pid, key in paths.items()}
            plan = plan_paths(sel, infos, quic.is_client)
            changed = False
            if plan.open_selected:
                changed = self._open(conn, selected, now) or changed
            for pid in plan.close:
                try:
                    quic.close_path(pid, now)
                    changed = True
                except PathError:
                    pass
            for pid, available in [*((p, True) for p in plan.available), *((p, False) for p in plan.backup)]:
                path = quic.paths.get(pid)
                if path is not None and not path.abandoned:
                    if (path.status == STATUS_AVAILABLE) != available:
                        quic.set_path_status(pid, available)
                        changed = True
            if changed:
                conn._wake()

    def _open(self, conn: Connection, key: PathKey, now: float) -> bool:
        """Client: open ``key`` on ``conn`` unless a path there is open or opening."""
        quic = conn.quic
        for path in quic.paths.values():
            if not path.abandoned and _same(path.addr, key):
                return False
        try:
            quic.open_path(key, now, available=key == self.selected, relay=is_relay(key))
        except PathError as exc:
            # Blocked on the peer's IDs or path limit: PATHS_BLOCKED / PATH_CIDS_BLOCKED went
            # out, and the periodic check tries again.
            blocked = exc.kind in ("cids-blocked", "paths-blocked")
            self.open_blocked = self.open_blocked or blocked
            return blocked
        return True

    # -- time ----------------------------------------------------------------------------

    def next_check(self, now: float) -> float:
        """When :meth:`on_timeout` is next due: every :data:`CHECK_INTERVAL` while there is a
        choice to watch (several paths, or a path open the peer blocked), else when the
        round scheduler wants it."""
        if not self.conns or self.scheduler is None:
            return INF
        due = self.scheduler.timeout()
        if self.open_blocked or len(self.key_refs) > 1:
            due = min(due, now + CHECK_INTERVAL)
        return due

    def on_timeout(self, now: float) -> None:
        """The periodic check: fallback and RTT changes, due rounds, paths to open again."""
        if not self.conns:
            return
        self.open_blocked = False
        self.select(now)
        scheduler = self.scheduler
        if scheduler is not None and now >= scheduler.timeout():
            rtts = [
                [conn.quic.paths[pid].recovery.rtt.smoothed for pid, key in paths.items()
                 if not is_relay(key) and pid in conn.quic.paths]
                for conn, paths in self.conns.items()
            ]
            if scheduler.on_timeout(now, rtts):
                self.trigger(now)

    # -- reporting -----------------------------------------------------------------------

    def infos(self, conn: Connection) -> list[PathInfo]:
        """``conn``'s open paths as ``Connection.paths()`` reports them."""
        paths = self.conns.get(conn)
        if paths is None:
            return []
        out = []
        for pid, key in paths.items():
            path = conn.quic.paths.get(pid)
            if path is not None and not path.abandoned:
                out.append(_info(key, path, key == self.selected))
        return out

    def _count(self, what: str, path: PathKey) -> None:
        if self.metrics is not None:
            counter = self.metrics.paths_opened if what == "opened" else self.metrics.paths_closed
            counter.labels(path_kind(path)).inc()

    def _emit(self, kind: EventKind, key: PathKey, now: float, conn: Connection | None = None) -> None:
        if not self.subscribers:
            return
        event = PathEvent(kind, self._describe(key, conn), now)
        for queue in self.subscribers:
            offer(queue, event)

    def _describe(self, key: PathKey, conn: Connection | None) -> PathInfo:
        """``key`` as a path of ``conn`` (else of any connection) reports it."""
        order = ([conn] if conn is not None else []) + list(self.conns)
        for c in order:
            for pid, k in self.conns.get(c, {}).items():
                path = c.quic.paths.get(pid)
                if k == key and path is not None:
                    return _info(key, path, key == self.selected)
        return PathInfo("relay" if is_relay(key) else "direct", describe_path(key), None,
                        key == self.selected, False, 0, 0)

    def subscribe(self) -> asyncio.Queue[PathEvent | None]:
        queue: asyncio.Queue[PathEvent | None] = asyncio.Queue(EVENT_QUEUE)
        self.subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PathEvent | None]) -> None:
        if queue in self.subscribers:
            self.subscribers.remove(queue)


def _puncher(conns: list[Connection]) -> Connection | None:
    """Which of ``conns`` runs the remote's NAT-traversal rounds (:func:`punching_connection`)."""
    nat = punching_connection((c.stable_id, c.quic.traversal) for c in conns)
    return next((c for c in conns if nat is not None and c.quic.traversal is nat), None)


def _info(key: PathKey, path: PathState, selected: bool) -> PathInfo:
    rec = path.recovery
    return PathInfo(
        "relay" if is_relay(key) else "direct", describe_path(key),
        rec.rtt.smoothed if rec.rtt.has_sample else None, selected, path.validated,
        rec.bytes_sent, rec.bytes_received,
    )


def _same(addr: object, key: PathKey) -> bool:
    if isinstance(key, RelayPath) or isinstance(addr, RelayPath):
        return addr == key
    if not isinstance(addr, tuple) or len(addr) < 2:
        return False
    try:
        return ipaddress.ip_address(addr[0]) == ipaddress.ip_address(key[0]) and addr[1] == key[1]
    except ValueError:
        return False


class RemoteMap:
    """Every remote we know, by id and by the mapped address its dials go to."""

    def __init__(self, metrics: SocketMetrics | None = None) -> None:
        self.metrics = metrics
        self.by_id: dict[EndpointId, RemoteState] = {}
        self.by_mapped: dict[MappedAddr, RemoteState] = {}
        #: Our NAT-traversal candidates, handed to every remote.
        self.local_candidates: list[tuple[str, int]] = []
        #: Told of each remote whose next check may have moved.
        self.on_changed: Callable[[RemoteState], None] | None = None
        #: How remotes learn the local address of an IP path (see RemoteState.source_ip).
        self.source_ip: Callable[[str], str | None] | None = None

    def for_id(self, endpoint_id: EndpointId) -> RemoteState:
        state = self.by_id.get(endpoint_id)
        if state is None:
            state = RemoteState(endpoint_id, metrics=self.metrics, local_candidates=list(self.local_candidates),
                                source_ip=self.source_ip)
            self.by_id[endpoint_id] = state
            self.by_mapped[state.mapped] = state
        return state

    def get(self, mapped: MappedAddr) -> RemoteState | None:
        return self.by_mapped.get(mapped)

    def active(self) -> list[RemoteState]:
        return [r for r in self.by_id.values() if r.conns]

    def on_network_change(self, local_ips: Collection[str], now: float) -> None:
        for remote in self.active():
            remote.on_network_change(local_ips, now)
            if self.on_changed is not None:
                self.on_changed(remote)

    def set_local_candidates(self, addrs: list[tuple[str, int]], now: float) -> None:
        if addrs == self.local_candidates:
            return
        self.local_candidates = list(addrs)
        for remote in self.by_id.values():
            remote.set_local_candidates(addrs, now)
            if self.on_changed is not None and remote.conns:
                self.on_changed(remote)
