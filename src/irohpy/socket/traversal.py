"""NAT traversal driver: feeds the hole-punch cores and carries out their actions.

It owns the control codec, asks our home relay's STUN service for our public
address, watches the interfaces for network changes, and ticks every remote
that has connections. Everything it learns ends up in the remote's
:class:`~irohpy.socket.paths.RemotePaths`, which the transport reads when
sending.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from irohpy.base.keys import SecretKey
from irohpy.errors import ControlPacketError, StunError
from irohpy.relay import stun
from irohpy.socket import control
from irohpy.socket.holepunch import Action, SendCallMeMaybe, SendPing
from irohpy.socket.interfaces import interface_addrs
from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.paths import DirectPath, PathKey, RelayPath, is_relay
from irohpy.socket.remote_map import RemoteMap, RemoteState
from irohpy.socket.transport import Transport

log = logging.getLogger(__name__)

TICK = 0.1
STUN_INTERVAL = 20.0
STUN_RETRIES = (0.25, 0.5, 1.0)
INTERFACE_POLL = 1.0
MAX_OBSERVED = 8


class NatTraversal:
    def __init__(self, secret: SecretKey, transport: Transport, remotes: RemoteMap,
                 on_local_change: Callable[[], None], metrics: SocketMetrics | None = None) -> None:
        self._codec = control.ControlCodec(secret)
        self._transport = transport
        self._remotes = remotes
        self._on_local_change = on_local_change
        self._loop = asyncio.get_running_loop()
        self.metrics = metrics or SocketMetrics()
        self.reflexive: set[DirectPath] = set()
        self.portmapped: DirectPath | None = None
        #: What our home relay's QUIC Address Discovery reports (authenticated by its certificate).
        self.qad: set[DirectPath] = set()
        self._observed: list[DirectPath] = []
        self._stun_waiters: dict[bytes, tuple[DirectPath, asyncio.Future[DirectPath]]] = {}
        self._stun_now = asyncio.Event()
        self._interfaces = self._read_interfaces()
        self._closed = False
        transport.on_control = self._on_control
        self._tasks = [asyncio.ensure_future(t) for t in (self._tick_loop(), self._stun_loop(), self._watch_interfaces())]

    # -- our candidates ----------------------------------------------------------------

    def local_candidates(self) -> list[DirectPath]:
        """Where peers may reach us: the port mapping, interface addresses, then what QAD, STUN and pongs reported."""
        out: list[DirectPath] = [self.portmapped] if self.portmapped is not None else []
        for host, port in self._transport.local_addrs():
            ip = ipaddress.ip_address(host)
            if ip.is_unspecified:
                family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                out += [(a, port) for a in interface_addrs(family)]
            elif (host, port) not in out:
                out.append((host, port))
        for addr in [*sorted(self.qad), *sorted(self.reflexive), *self._observed]:
            if addr not in out:
                out.append(addr)
        return out[: control.MAX_CANDIDATES]

    def set_portmapped(self, addr: DirectPath | None) -> None:
        """The router mapped (or stopped mapping) a public port to us: advertise it and punch again."""
        if addr == self.portmapped:
            return
        log.info("port-mapped address: %s", f"{addr[0]}:{addr[1]}" if addr else "none")
        self.portmapped = addr
        self._restart_all()
        self._on_local_change()

    def _read_interfaces(self) -> tuple[list[str], list[str]]:
        return interface_addrs(socket.AF_INET), interface_addrs(socket.AF_INET6)

    def _restart_all(self) -> None:
        now = self._loop.time()
        for remote in self._active():
            remote.punch.start(now)

    def _active(self) -> list[RemoteState]:
        return [r for r in self._remotes.by_id.values() if r.connections > 0]

    # -- loops ---------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = self._loop.time()
            for remote in self._active():
                if remote.endpoint_id is not None:
                    self.tick(remote, now)

    def tick(self, remote: RemoteState, now: float) -> None:
        paths = remote.paths
        was_direct = paths.selected is not None and not is_relay(paths.selected)
        if paths.check(now) and was_direct and paths.selected is not None and is_relay(paths.selected):
            self.metrics.fallbacks_to_relay.inc()
            log.info("direct path to %s went silent; back on the relay (punching resumes)", remote.endpoint_id)
        before = remote.punch.attempts
        self._run(remote, remote.punch.tick(now, paths))
        self.metrics.holepunch_attempts.inc(remote.punch.attempts - before)

    def on_connection(self, remote: RemoteState) -> None:
        """A connection with ``remote`` is up: punch if we are not direct yet."""
        if remote.endpoint_id is not None:
            remote.punch.start(self._loop.time())

    async def _stun_loop(self) -> None:
        # Checks the flag too: Python 3.11's asyncio.timeout can swallow a
        # cancellation that races with its own expiry (in _stun_query).
        while not self._closed:
            waiter = asyncio.ensure_future(self._stun_now.wait())
            try:
                await asyncio.wait([waiter], timeout=STUN_INTERVAL)
            finally:
                waiter.cancel()
            self._stun_now.clear()
            await self._stun_once()

    def stun_soon(self) -> None:
        self._stun_now.set()

    async def _stun_once(self) -> None:
        relay = self._transport.relay
        if relay is None or relay.home is None:
            return
        port = relay.stun_ports.get(relay.home)
        if port is None:
            return
        try:
            infos = await asyncio.wait_for(
                self._loop.getaddrinfo(relay.home.host, port, type=socket.SOCK_DGRAM), timeout=3.0)
        except (OSError, TimeoutError):
            return
        found: set[DirectPath] = set()
        for family in {info[0] for info in infos}:
            target = next(info[4][:2] for info in infos if info[0] == family)
            observed = await self._stun_query((str(target[0]), int(target[1])))
            if observed is not None:
                found.add(observed)
        if found and found != self.reflexive:
            log.info("our public address is %s", ", ".join(f"{h}:{p}" for h, p in sorted(found)))
            self.reflexive = found
            self._restart_all()
            self._on_local_change()

    async def _stun_query(self, target: DirectPath) -> DirectPath | None:
        for timeout in STUN_RETRIES:
            request, tx = stun.binding_request()
            fut: asyncio.Future[DirectPath] = self._loop.create_future()
            self._stun_waiters[tx] = (target, fut)
            try:
                self._transport.send_path(target, request)
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                continue
            finally:
                self._stun_waiters.pop(tx, None)
        return None

    async def _watch_interfaces(self) -> None:
        while True:
            await asyncio.sleep(INTERFACE_POLL)
            current = self._read_interfaces()
            if current != self._interfaces:
                log.info("network change: interfaces now %s", current)
                self._interfaces = current
                self.network_changed()

    def on_qad(self, addrs: set[DirectPath]) -> None:
        """The relay reported our public addresses (QUIC Address Discovery)."""
        if addrs != self.qad:
            self.qad = set(addrs)
            self._restart_all()
            self._on_local_change()

    def network_changed(self) -> None:
        """Addresses moved: learn our public address again and punch again everywhere."""
        self._observed.clear()
        if self._transport.relay is not None:
            self._transport.relay.network_changed()
        self.stun_soon()
        self._restart_all()
        self._on_local_change()

    # -- receiving -------------------------------------------------------------------------

    def _on_control(self, data: bytes, path: PathKey) -> None:
        if not is_relay(path) and stun.is_stun(data):
            self._on_stun(data, path)  # type: ignore[arg-type]
            return
        if not control.is_control(data):
            return
        try:
            sender, msg = self._codec.open(data)
        except ControlPacketError as exc:
            self.metrics.control_rejected.inc()
            log.debug("dropped control packet from %s: %s", path, exc)
            return
        remote = self._remotes.by_id.get(sender)
        if remote is None or remote.connections <= 0:
            return  # We talk to peers we have connections with, nobody else.
        now = self._loop.time()
        paths = remote.paths
        if isinstance(msg, control.CallMeMaybe):
            if not isinstance(path, RelayPath) or path.endpoint_id != sender:
                self.metrics.control_rejected.inc()
                return
            paths.speaks_control = True
            paths.heard(path, now)
            self._run(remote, remote.punch.on_call_me_maybe(now, paths, msg.candidates))
            return
        if isinstance(path, RelayPath):
            return
        if isinstance(msg, control.Ping):
            paths.speaks_control = True
            state = paths.add_candidate(path, "ping")
            paths.heard(path, now)
            if not state.validated:
                paths.to_probe.add(path)
            self._transport.send_path(path, self._codec.seal(sender, control.Pong(msg.tx_id, path)))
            return
        assert isinstance(msg, control.Pong)
        matched = remote.punch.on_pong(msg.tx_id, path, now)
        if matched is None:
            self.metrics.control_rejected.inc()
            return
        self._note_observed(msg.observed)
        was_direct = paths.selected is not None and not is_relay(paths.selected)
        if paths.on_pong(path, matched[1], now) and not was_direct and not is_relay(path):
            self.metrics.holepunch_successes.inc()
            if remote.punch.started_at is not None:
                self.metrics.time_to_direct.observe(now - remote.punch.started_at)
            remote.punch.stop()
            log.info("direct path to %s: %s (rtt %.1f ms)", remote.endpoint_id, path, matched[1] * 1000)

    def _on_stun(self, data: bytes, path: DirectPath) -> None:
        try:
            msg = stun.parse(data)
        except StunError:
            return
        waiter = self._stun_waiters.get(msg.tx_id)
        if waiter is None or waiter[0] != path or msg.mapped is None or waiter[1].done():
            return
        waiter[1].set_result(msg.mapped)

    def _note_observed(self, addr: DirectPath) -> None:
        if addr in self.reflexive or addr in self._observed or addr in self._transport.local_addrs():
            return
        self._observed.append(addr)
        del self._observed[:-MAX_OBSERVED]

    # -- sending ---------------------------------------------------------------------------

    def _run(self, remote: RemoteState, actions: list[Action]) -> None:
        peer = remote.endpoint_id
        if peer is None:
            return
        cmm: bytes | None = None
        for action in actions:
            if isinstance(action, SendPing):
                self._transport.send_path(action.path, self._codec.seal(peer, control.Ping(action.tx_id)))
            elif isinstance(action, SendCallMeMaybe):
                if cmm is None:
                    cmm = self._codec.seal(peer, control.CallMeMaybe(tuple(self.local_candidates())))
                self._transport.send_path(action.path, cmm)

    async def close(self) -> None:
        self._closed = True
        self._stun_now.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, fut in self._stun_waiters.values():
            fut.cancel()
        self._transport.on_control = None
