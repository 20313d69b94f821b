"""The DNS server process: HTTP pkarr relay, DNS over UDP and TCP, metrics, and age-based eviction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import cast

from aiohttp import web

from irohpy.base.addr import IpAddr
from irohpy.base.conn_cap import PerIpConnections, capped_factory
from irohpy.base.http_log import QuietHttpLogger
from irohpy.dns_server.config import DnsServerConfig
from irohpy.dns_server.http import metrics_app, pkarr_app
from irohpy.dns_server.metrics import DnsServerMetrics
from irohpy.dns_server.ratelimit import PutRateLimiter
from irohpy.dns_server.rrl import ResponseRateLimiter
from irohpy.dns_server.store import PacketStore
from irohpy.dns_server.transport import TcpDns, UdpDns
from irohpy.dns_server.zone import answer
from irohpy.errors import BindError

logger = logging.getLogger(__name__)

_HTTP_SHUTDOWN_TIMEOUT = 2.0
_HTTP_KEEPALIVE = 30.0


def _family(addr: IpAddr) -> socket.AddressFamily:
    return socket.AF_INET6 if addr.host.version == 6 else socket.AF_INET


def _hostport(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DnsServer:
    """Use as ``async with DnsServer(config) as server:`` or start()/shutdown()."""

    def __init__(self, config: DnsServerConfig) -> None:
        self.config = config
        self.metrics = DnsServerMetrics()
        self.store = PacketStore(config.db_path)
        self.metrics.packets_stored.set(len(self.store))
        limit = config.rate_limit
        self._limiter = PutRateLimiter(limit.interval, limit.burst) if limit is not None else None
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self._rrl = ResponseRateLimiter(config.rrl) if config.rrl is not None else None
        self._udp: asyncio.DatagramTransport | None = None
        self.http_connections = PerIpConnections(config.max_connections_per_ip)
        self.tcp_connections = PerIpConnections(config.max_connections_per_ip)
        self._tcp = TcpDns(self._answer, self._observe, self.tcp_connections, self._refused_tcp)
        self._http_logger = QuietHttpLogger(logging.getLogger("aiohttp.server"), self.metrics.bad_http_requests.inc)
        self._evictor: asyncio.Task[None] | None = None
        self.pkarr_url = ""
        self.dns_addr = ""
        self.metrics_url: str | None = None
        self._stopped = False

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def _answer(self, wire: bytes, udp: bool) -> tuple[bytes | None, str]:
        return answer(wire, self.config.origins, self.store.get, udp=udp)

    def _observe(self, transport: str, result: str) -> None:
        self.metrics.queries.labels(transport, result).inc()

    def _refused_http(self, host: str) -> None:
        self.metrics.connections_refused.labels("http").inc()

    def _refused_tcp(self, host: str) -> None:
        self.metrics.connections_refused.labels("dns_tcp").inc()

    def _socket(self, addr: IpAddr, kind: socket.SocketKind) -> socket.socket:
        host, port = addr.sockaddr
        try:
            if kind == socket.SOCK_STREAM:
                sock = socket.create_server((host, port), family=_family(addr),
                                            dualstack_ipv6=host == "::" and socket.has_dualstack_ipv6())
            else:
                sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
                try:
                    if host == "::":
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    sock.bind((host, port))
                except BaseException:
                    sock.close()
                    raise
        except OSError as exc:
            raise BindError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        return sock

    async def _listen_http(self, app: web.Application, addr: IpAddr, *, capped: bool = True) -> socket.socket:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_HTTP_SHUTDOWN_TIMEOUT,
                               keepalive_timeout=_HTTP_KEEPALIVE, logger=self._http_logger)
        await runner.setup()
        self._runners.append(runner)
        sock = self._socket(addr, socket.SOCK_STREAM)
        try:
            factory = (capped_factory(runner.server, self.http_connections, self._refused_http)
                       if capped else runner.server)
            server = await asyncio.get_running_loop().create_server(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        return sock

    async def _listen_dns(self, addr: IpAddr) -> str:
        """UDP and TCP on the same port (the TCP port is taken first, then UDP on its number)."""
        loop = asyncio.get_running_loop()
        tcp_sock = self._socket(addr, socket.SOCK_STREAM)
        try:
            server = await asyncio.start_server(self._tcp.handle, sock=tcp_sock)
        except BaseException:
            tcp_sock.close()
            raise
        self._servers.append(server)
        port = tcp_sock.getsockname()[1]
        udp_sock = self._socket(IpAddr(addr.host, port), socket.SOCK_DGRAM)
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: UdpDns(self._answer, self._observe, self._rrl),
                                                               sock=udp_sock)
        except BaseException:
            udp_sock.close()
            raise
        self._udp = cast(asyncio.DatagramTransport, transport)
        return _hostport(tcp_sock)

    async def start(self) -> None:
        """Bind every listener; on failure nothing stays open."""
        config = self.config
        try:
            app = pkarr_app(self.store, self.metrics, self._limiter, config.max_future_skew)
            http = await self._listen_http(app, config.http_bind)
            self.pkarr_url = f"http://{_hostport(http)}/pkarr"
            self.dns_addr = await self._listen_dns(config.dns_bind)
            if config.metrics_bind is not None:
                metrics = await self._listen_http(metrics_app(self.metrics), config.metrics_bind, capped=False)
                self.metrics_url = f"http://{_hostport(metrics)}/metrics"
        except BaseException:
            await self._teardown()
            raise
        self._evictor = asyncio.create_task(self._evict_forever())
        logger.info("pkarr relay on %s, DNS on %s", self.pkarr_url, self.dns_addr)

    def evict_now(self) -> int:
        """Drop packets older than the configured age; returns how many."""
        evicted = self.store.evict(time.time() - self.config.max_age)
        if evicted:
            self.metrics.packets_evicted.inc(evicted)
            self.metrics.packets_stored.set(len(self.store))
            logger.info("evicted %d packets older than %.0f s", evicted, self.config.max_age)
        return evicted

    async def _evict_forever(self) -> None:
        while True:
            self.evict_now()
            await asyncio.sleep(self.config.evict_interval)

    async def shutdown(self) -> None:
        """Close every listener and the store (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._evictor is not None:
            self._evictor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._evictor
        await self._teardown()
        logger.info("dns server stopped")

    async def _teardown(self) -> None:
        for server in self._servers:
            server.close()
        if self._udp is not None:
            self._udp.close()
        await self._tcp.close_all()
        for runner in self._runners:
            await runner.cleanup()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._runners.clear()
        self.store.close()
