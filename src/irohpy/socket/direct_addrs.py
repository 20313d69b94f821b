"""Our direct addresses: where peers may reach us without a relay.

They are the NAT-traversal candidates every connection announces (ADD_ADDRESS) or names in
its rounds (REACH_OUT), and the IP addresses of our EndpointAddr. Sources, best first: the
router's port mapping, our interfaces' addresses, what our home relay's QUIC Address
Discovery reports (authenticated by the relay's certificate) and what its STUN service
reports. Nothing a peer says about us is taken. On every change the remotes get the new
set and our address watchers are woken; an interface change also reconnects the relays and
asks STUN again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from irohpy.errors import StunError
from irohpy.relay import stun
from irohpy.socket.interfaces import interface_addrs
from irohpy.socket.netmon import NetworkMonitor
from irohpy.socket.paths import DirectPath, PathKey, is_relay
from irohpy.socket.remote_map import RemoteMap
from irohpy.socket.transport import Transport

log = logging.getLogger(__name__)

STUN_INTERVAL = 20.0
STUN_RETRIES = (0.25, 0.5, 1.0)
#: The most candidates we announce (iroh's MAX_QNT_ADDRESSES).
MAX_CANDIDATES = 32


class DirectAddrs:
    def __init__(self, transport: Transport, remotes: RemoteMap, on_change: Callable[[], None]) -> None:
        self._transport = transport
        self._remotes = remotes
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self.reflexive: set[DirectPath] = set()
        self.portmapped: DirectPath | None = None
        #: What our home relay's QUIC Address Discovery reports.
        self.qad: set[DirectPath] = set()
        self._stun_waiters: dict[bytes, tuple[DirectPath, asyncio.Future[DirectPath]]] = {}
        self._stun_now = asyncio.Event()
        self._interfaces = self._read_interfaces()
        self._netmon = NetworkMonitor()
        self._closed = False
        transport.on_control = self._on_control
        if transport.relay is not None:
            # STUN needs the relay's /ping, not its connection: asked while the relay connects,
            # our public address is a candidate by the time the endpoint is online.
            transport.relay.on_ranked = self.stun_soon
        self._tasks = [asyncio.ensure_future(t) for t in (self._stun_loop(), self._watch_interfaces())]
        self._changed()

    def local_candidates(self) -> list[DirectPath]:
        """The port mapping, interface addresses, then what QAD and STUN reported.

        A socket bound to the unspecified address stands for every interface address, loopback
        only when there is nothing else (no other interface and no public address), as iroh
        announces them: a remote elsewhere would probe its own host's loopback.
        """
        public = [*sorted(self.qad), *sorted(self.reflexive)]
        out: list[DirectPath] = [self.portmapped] if self.portmapped is not None else []
        v4, v6 = self._interfaces
        loopback_too = not (out or public or any(not ipaddress.ip_address(a).is_loopback for a in (*v4, *v6)))
        for host, port in self._transport.local_addrs():
            ip = ipaddress.ip_address(host)
            if ip.is_unspecified:
                out += [(a, port) for a in (v6 if ip.version == 6 else v4)
                        if (loopback_too or not ipaddress.ip_address(a).is_loopback) and (a, port) not in out]
            elif (host, port) not in out:
                out.append((host, port))
        for addr in public:
            if addr not in out:
                out.append(addr)
        return out[:MAX_CANDIDATES]

    def _changed(self) -> None:
        self._remotes.set_local_candidates(self.local_candidates(), self._loop.time())
        self._on_change()

    def set_portmapped(self, addr: DirectPath | None) -> None:
        """The router mapped (or stopped mapping) a public port to us."""
        if addr == self.portmapped:
            return
        log.info("port-mapped address: %s", f"{addr[0]}:{addr[1]}" if addr else "none")
        self.portmapped = addr
        self._changed()

    def on_qad(self, addrs: set[DirectPath]) -> None:
        """The relay reported our public addresses (QUIC Address Discovery)."""
        if addrs != self.qad:
            self.qad = set(addrs)
            self._changed()

    def _read_interfaces(self) -> tuple[list[str], list[str]]:
        return interface_addrs(socket.AF_INET), interface_addrs(socket.AF_INET6)

    async def _watch_interfaces(self) -> None:
        while True:
            await self._netmon.changed()
            current = self._read_interfaces()
            if current != self._interfaces:
                log.info("network change: interfaces now %s", current)
                self._interfaces = current
                self.network_changed()

    def network_changed(self) -> None:
        """Addresses moved: replace the paths that lost their local address and ping the rest,
        reconnect relays, learn our public address again, tell the remotes."""
        local_ips = [*self._interfaces[0], *self._interfaces[1]]
        self._remotes.on_network_change(set(local_ips), self._loop.time())
        if self._transport.relay is not None:
            self._transport.relay.network_changed(local_ips)
        self.stun_soon()
        self._changed()

    # -- STUN ------------------------------------------------------------------------------

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
        if relay is None:
            return
        url = relay.home or next((u for u in relay.ranked if u in relay.stun_ports), None)
        port = relay.stun_ports.get(url) if url is not None else None
        if url is None or port is None:
            return
        try:
            infos = await asyncio.wait_for(_resolve(url.host, port), timeout=3.0)
        except (OSError, TimeoutError):
            return
        found: set[DirectPath] = set()
        for family in {info[0] for info in infos}:
            target = next(addr for fam, addr in infos if fam == family)
            observed = await self._stun_query(target)
            if observed is not None:
                found.add(observed)
        if found and found != self.reflexive:
            log.info("our public address is %s", ", ".join(f"{h}:{p}" for h, p in sorted(found)))
            self.reflexive = found
            self._changed()

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

    def _on_control(self, data: bytes, path: PathKey) -> None:
        """A non-QUIC datagram: only a STUN answer to a request of ours means anything."""
        if is_relay(path) or not stun.is_stun(data):
            return
        try:
            msg = stun.parse(data)
        except StunError:
            return
        waiter = self._stun_waiters.get(msg.tx_id)
        if waiter is None or waiter[0] != path or msg.mapped is None or waiter[1].done():
            return
        waiter[1].set_result(msg.mapped)

    async def close(self) -> None:
        self._closed = True
        self._stun_now.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._netmon.close()
        for _, fut in self._stun_waiters.values():
            fut.cancel()
        self._transport.on_control = None


async def _resolve(host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    """``host``'s addresses as (family, (ip, port)); an IP literal without the resolver thread."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return [(info[0], (str(info[4][0]), int(info[4][1]))) for info in infos]
    return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (str(ip), port))]
