"""The relay half of the socket layer: a home relay, plus relays on demand.

The home relay is the one with the lowest ``/ping`` latency that accepts
us; it is what our EndpointAddr advertises. When it stays down past a short
grace period, the next relay takes over. Relays named by a peer's address
are connected on demand and dropped after a minute without traffic, as iroh
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiohttp

from irohpy.base.keys import PublicKey, SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.base.notify import Notify
from irohpy.relay.client import CONNECT_TIMEOUT, RelayClient, probe
from irohpy.relay.map import RelayConfig, RelayMap
from irohpy.relay.client_metrics import RelayClientMetrics
from irohpy.relay.recv_limits import RelayRecvLimits
from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.paths import RelayPath

log = logging.getLogger(__name__)

FAILOVER_GRACE = 3.0
IDLE_CLOSE = 60.0
RETRY_RANKING = 1.0



@dataclass(frozen=True)
class RelayProblem:
    """Why a relay is not connected: unreachable, or it refused us (``refused``)."""

    url: RelayUrl
    error: str
    refused: bool = False


PacketHandler = Callable[[list[tuple[bytes, RelayPath]]], None]


class RelayTransport:
    def __init__(self, secret: SecretKey, relay_map: RelayMap, on_packets: PacketHandler,
                 on_home_change: Callable[[], None] | None = None,
                 recv_limits: RelayRecvLimits = RelayRecvLimits(), metrics: SocketMetrics | None = None,
                 client_metrics: RelayClientMetrics | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._secret = secret
        self._recv_limits = recv_limits
        self._map = relay_map
        self._on_packets = on_packets
        # The CAs the endpoint trusts for https relays (None: the system's, aiohttp's default).
        connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                                              connector=connector)
        self._clients: dict[RelayUrl, RelayClient] = {}
        self.home: RelayUrl | None = None
        # Where each relay answers STUN, as its /ping said.
        self.stun_ports: dict[RelayUrl, int] = {}
        #: The relays the last ranking reached, best first.
        self.ranked: list[RelayUrl] = []
        #: Told after each ranking: our address can be asked for before a home relay connects.
        self.on_ranked: Callable[[], None] | None = None
        self.metrics = metrics or SocketMetrics()
        self.client_metrics = client_metrics or RelayClientMetrics()
        self._m_sent = self.metrics.send_datagrams.labels("relay")
        self._m_recv = self.metrics.recv_datagrams.labels("relay")
        # Why the last /ping of each relay failed, for problems().
        self._probe_errors: dict[RelayUrl, str] = {}
        self.home_changed = Notify()
        self._on_home_change = on_home_change
        self._home_connected = asyncio.Event()
        self._closed = False
        self._supervisor = asyncio.ensure_future(self._supervise())
        self._reaper = asyncio.ensure_future(self._reap_idle())

    # -- sending and receiving ----------------------------------------------------

    def send(self, path: RelayPath, data: bytes) -> None:
        client = self._client_for(path.url)
        if client is not None:
            self.metrics.send_relay.inc(len(data))
            self._m_sent.inc()
            client.send(path.endpoint_id, data)

    def _deliver(self, url: RelayUrl, src: PublicKey, datagrams: list[bytes]) -> None:
        path = RelayPath(url, src)
        nbytes = sum(map(len, datagrams))
        self.metrics.recv_data_relay.inc(nbytes)
        self._m_recv.inc(len(datagrams))
        self._on_packets([(d, path) for d in datagrams])

    def _client_for(self, url: RelayUrl) -> RelayClient | None:
        if self._closed:
            return None
        client = self._clients.get(url)
        if client is None:
            config = self._map.get(url)
            client = RelayClient(
                url, self._secret, self._session, self._deliver,
                auth_token=config.auth_token if config else None,
                on_state=self._on_client_state, metrics=self.client_metrics,
                recv_limits=self._recv_limits,
            )
            self._clients[url] = client
        return client

    @property
    def dropped_datagrams(self) -> int:
        """Datagrams refused by the receive limits, over the relays connected now."""
        return sum(c.dropped_datagrams for c in self._clients.values())

    def ensure(self, url: RelayUrl) -> None:
        """Connect to a peer's relay ahead of the first datagram."""
        self._client_for(url)

    # -- home relay ------------------------------------------------------------------

    def _on_client_state(self, client: RelayClient) -> None:
        if client.url == self.home:
            if client.is_connected:
                self._home_connected.set()
            else:
                self._home_connected.clear()
            self._home_changed()

    async def online(self) -> None:
        await self._home_connected.wait()

    async def _rank(self) -> list[RelayUrl]:
        urls = self._map.urls()
        results = await asyncio.gather(*(probe(self._session, u) for u in urls), return_exceptions=True)
        reachable: list[tuple[float, RelayUrl]] = []
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, BaseException):
                self._probe_errors[url] = str(result) or type(result).__name__
                continue
            self._probe_errors.pop(url, None)
            reachable.append((result.latency, url))
            if result.stun_port is not None:
                self.stun_ports[url] = result.stun_port
        return [u for _, u in sorted(reachable, key=lambda t: t[0])]

    async def _supervise(self) -> None:
        while not self._closed:
            ranked = await self._rank() if self._map else []
            self.ranked = ranked
            if self.on_ranked is not None:
                self.on_ranked()
            for url in ranked:
                client = self._client_for(url)
                if client is None or not await client.wait_connected(CONNECT_TIMEOUT):
                    continue
                self._set_home(url)
                await self._hold_home(client)
                break
            else:
                await asyncio.sleep(RETRY_RANKING)

    async def _hold_home(self, client: RelayClient) -> None:
        """Stay on ``client`` while it is up or comes back within the grace period."""
        while not self._closed:
            while client.is_connected:
                await self.home_changed.wait()
            if not await client.wait_connected(FAILOVER_GRACE) or client.url not in self._map.urls():
                log.info("home relay %s is down; looking for another", client.url)
                return

    def _set_home(self, url: RelayUrl) -> None:
        if url != self.home:
            log.info("home relay is now %s", url)
            if self.home is not None:
                self.metrics.relay_home_change.inc()
            self.home = url
        self._home_connected.set()
        self._home_changed()

    async def _reap_idle(self) -> None:
        while not self._closed:
            await asyncio.sleep(IDLE_CLOSE / 4)
            now = time.monotonic()
            for url, client in list(self._clients.items()):
                if url != self.home and now - client.last_used > IDLE_CLOSE:
                    del self._clients[url]
                    await client.close()

    # -- runtime changes ---------------------------------------------------------------

    def config(self, url: RelayUrl) -> RelayConfig | None:
        return self._map.get(url)

    def insert(self, relay: RelayConfig | RelayUrl | str) -> None:
        self._map.insert(relay)

    async def remove(self, url: RelayUrl) -> None:
        self._map.remove(url)
        client = self._clients.pop(url, None)
        if client is not None:
            await client.close()
        if url == self.home:
            self.home = None
            self._home_connected.clear()
            self._home_changed()

    def network_changed(self, local_ips: Collection[str]) -> None:
        """Our addresses moved (``local_ips``: those we have now): make sure every relay
        connection still works."""
        for client in self._clients.values():
            client.check_soon(local_ips)

    def _home_changed(self) -> None:
        self.home_changed.notify_all()
        if self._on_home_change is not None:
            self._on_home_change()

    def problems(self) -> list[RelayProblem]:
        """The relays of our map that are not connected, and why, as far as we know."""
        out = []
        for url in self._map.urls():
            client = self._clients.get(url)
            if client is not None and client.is_connected:
                continue
            if client is not None and client.last_error:
                out.append(RelayProblem(url, client.last_error, client.refused))
            elif url in self._probe_errors:
                out.append(RelayProblem(url, self._probe_errors[url]))
        return out

    def is_connected(self, url: RelayUrl) -> bool:
        client = self._clients.get(url)
        return client is not None and client.is_connected

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._supervisor, self._reaper):
            task.cancel()
        for task in (self._supervisor, self._reaper):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(c.close() for c in self._clients.values()), return_exceptions=True)
        self._clients.clear()
        await self._session.close()
        self._home_changed()

