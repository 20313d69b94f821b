"""The relay server's lifecycle: listeners (HTTP, HTTPS, metrics), reload and graceful shutdown.

Shutdown first stops accepting, then sends ``Restarting`` to every client and closes it with
"going away", waits a bounded time for them, and only then tears down the HTTP machinery.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from aiohttp import WSCloseCode, web

from irohpy.base.addr import IpAddr
from irohpy.base.conn_cap import PerIpConnections, capped_factory
from irohpy.base.http_log import QuietHttpLogger
from irohpy.errors import BindError, ConfigError, StunError
from irohpy.relay import stun
from irohpy.relay.protocol import Restarting, encode
from irohpy.relay.server.app import RelayService, metrics_app, portal_app, relay_app
from irohpy.relay.server.client import Client, Ending
from irohpy.relay.server.clients import Clients
from irohpy.relay.server.config import ServerConfig, Tls
from irohpy.relay.server.metrics import RelayMetrics
from irohpy.relay.server.qad import QadLimits, QadServer
from irohpy.tls.webpki import ServerCertificate

logger = logging.getLogger(__name__)

_HTTP_SHUTDOWN_TIMEOUT = 1.0


def _tls_context(tls: Tls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    _load_certificate(context, tls)
    return context


def _load_certificate(context: ssl.SSLContext, tls: Tls) -> None:
    try:
        context.load_cert_chain(tls.cert_path, tls.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {tls.cert_path} with key {tls.key_path}: {exc}") from None


def _url(scheme: str, server: asyncio.Server, path: str) -> str:
    """A URL clients on this machine can use: a wildcard bind is reached through loopback."""
    sock = server.sockets[0]
    host, port = sock.getsockname()[:2]
    if host == "0.0.0.0" or (host == "::" and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}"


class StunResponder(asyncio.DatagramProtocol):
    """Answers binding requests with the address they came from; ignores everything else."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = stun.parse(data)
        except StunError:
            self._metrics.stun_requests.labels("bad").inc()
            return
        if msg.kind != stun.BINDING_REQUEST or self._transport is None:
            self._metrics.stun_requests.labels("bad").inc()
            return
        host = addr[0].split("%")[0]
        if host.startswith("::ffff:") and "." in host:
            host = host.removeprefix("::ffff:")
        self._metrics.stun_requests.labels("ok").inc()
        self._transport.sendto(stun.binding_response(msg.tx_id, (host, addr[1])), addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("STUN socket error: %s", exc)


class RelayServer:
    """An iroh relay; use as ``async with RelayServer(config) as server:`` or start()/shutdown()."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = RelayMetrics()
        self._clients = Clients(self.metrics)
        self._service = RelayService(config, self._clients, self.metrics)
        self._ssl = _tls_context(config.tls) if config.tls is not None else None
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self.relay_url = ""
        self.portal_url: str | None = None
        self.metrics_url: str | None = None
        self.stun_addr: tuple[str, int] | None = None
        self._stun: asyncio.DatagramTransport | None = None
        self._qad: QadServer | None = None
        #: Where QUIC address discovery listens (UDP), when enabled.
        self.quic_addr: tuple[str, int] | None = None
        self._stopped = False
        self.connections = PerIpConnections(config.limits.max_connections_per_ip)
        self._http_logger = QuietHttpLogger(logging.getLogger("aiohttp.server"), self.metrics.bad_http_requests.inc)

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def _refused(self, host: str) -> None:
        self.metrics.connections_refused.labels("per_ip_limit").inc()
        logger.debug("refused a connection from %s: per-address limit reached", host)

    async def _listen(self, app: web.Application, addr: IpAddr, tls: ssl.SSLContext | None, *,
                      capped: bool = True) -> asyncio.Server:
        # The keep-alive timer also runs before the first request: it bounds silent connections.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_HTTP_SHUTDOWN_TIMEOUT,
                               keepalive_timeout=self.config.limits.accept_timeout, logger=self._http_logger)
        await runner.setup()
        self._runners.append(runner)
        host, port = addr.sockaddr
        family = socket.AF_INET6 if addr.host.version == 6 else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family,
                                        dualstack_ipv6=host == "::" and socket.has_dualstack_ipv6())
        except OSError as exc:
            raise BindError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        try:
            factory = capped_factory(runner.server, self.connections, self._refused) if capped else runner.server
            server = await asyncio.get_running_loop().create_server(
                factory, sock=sock, ssl=tls,
                ssl_handshake_timeout=self.config.limits.accept_timeout if tls else None)
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        return server

    async def start(self) -> None:
        """Bind every listener; on failure nothing stays open."""
        config = self.config
        try:
            if self._ssl is not None:
                main = await self._listen(relay_app(self._service), config.https_bind, self._ssl)
                self.relay_url = _url("https", main, "/")
                if config.http_bind is not None:
                    self.portal_url = _url("http", await self._listen(portal_app(), config.http_bind, None),
                                           "/generate_204")
            else:
                assert config.http_bind is not None  # ServerConfig guarantees it without TLS
                self.relay_url = _url("http", await self._listen(relay_app(self._service), config.http_bind, None), "/")
            if config.stun_port is not None:
                await self._listen_stun(self._servers[0], config.stun_port)
            if config.quic_bind is not None:
                assert config.tls is not None  # ServerConfig guarantees it
                limits = QadLimits(max_connections=config.limits.qad_max_connections,
                                   max_connections_per_ip=config.limits.qad_max_connections_per_ip)
                self._qad = QadServer(ServerCertificate.load(config.tls.cert_path, config.tls.key_path),
                                      self.metrics, limits)
                await self._qad.start(config.quic_bind)
                self.quic_addr = self._qad.local_addr
            if config.metrics_bind is not None:
                metrics = await self._listen(metrics_app(self.metrics), config.metrics_bind, None, capped=False)
                self.metrics_url = _url("http", metrics, "/metrics")
        except BaseException:
            await self._teardown()
            raise
        logger.info("relay listening on %s", self.relay_url)

    async def _listen_stun(self, relay: asyncio.Server, port: int) -> None:
        host, relay_port = relay.sockets[0].getsockname()[:2]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port or relay_port))
        except OSError as exc:
            sock.close()
            raise BindError(f"cannot bind STUN on udp {host}:{port or relay_port}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self._stun, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: StunResponder(self.metrics), sock=sock)
        self.stun_addr = sock.getsockname()[:2]
        self._service.stun_port = self.stun_addr[1]

    def reload(self, config: ServerConfig) -> None:
        """Apply a new access policy (and re-read the TLS certificate files).

        Connected clients are checked again against the new policy as of when they were
        admitted, so a revoked token or a denylisted id is cut off while tokens that merely
        expired since then are not. Other settings need a restart.
        """
        if self._ssl is not None and config.tls is not None:
            _load_certificate(self._ssl, config.tls)
            if self._qad is not None:
                self._qad.certificate = ServerCertificate.load(config.tls.cert_path, config.tls.key_path)
        policy = config.access
        self._service.policy = policy

        def recheck(client: Client) -> Ending | None:
            decision = policy.check(client.endpoint_id, client.token, client.authorized_at)
            if decision.allowed:
                return None
            return Ending("access_revoked", WSCloseCode.POLICY_VIOLATION, f"access revoked: {decision.reason}")

        self._clients.stop_where(recheck)

    async def shutdown(self) -> None:
        """Tell clients to come back later, close them, and release every socket (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers:
            server.close()
        restart = self.config.shutdown
        final = encode(Restarting(restart.reconnect_in_ms, restart.try_for_ms))
        ending = Ending("shutdown", WSCloseCode.GOING_AWAY, "relay shutting down", final)
        await self._clients.close_all(ending, timeout=2 * self.config.limits.write_timeout)
        await self._teardown()
        logger.info("relay stopped")

    async def _teardown(self) -> None:
        if self._qad is not None:
            await self._qad.close()
            self._qad = None
        if self._stun is not None:
            self._stun.close()
            self._stun = None
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._runners.clear()
