"""The Endpoint: bind once, then dial and accept connections by EndpointId."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from irohpy.base.addr import EndpointAddr, TransportAddr
from irohpy.base.keys import EndpointId, SecretKey
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint import presets as _presets
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.endpoint.engine_socket import SocketBridge
from irohpy.endpoint.qad import QadClient
from irohpy.endpoint.hooks import ConnectionInfo, EndpointHooks, Reject
from irohpy.errors import (
    BindError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    EndpointClosed,
    LocallyRejected,
)
from irohpy.base.notify import Notify
from irohpy.base.relay_url import RelayUrl
from irohpy.relay.map import RelayConfig, RelayKind, RelayMap, RelayMode
from irohpy.relay.recv_limits import RelayRecvLimits
from irohpy.socket.paths import PathKey, RelayPath, describe_path
from irohpy.socket.relay_transport import RelayProblem, RelayTransport
from irohpy.lookup.base import AddressLookup, EndpointData
from irohpy.lookup.combined import CombinedLookup
from irohpy.lookup.dns import DnsAddressLookup
from irohpy.lookup.metrics import AddressLookupMetrics
from irohpy.metrics import Registry
from irohpy.relay.client_metrics import RelayClientMetrics
from irohpy.socket.metrics import SocketMetrics
from irohpy.lookup.pkarr_client import PkarrPublisher, PkarrResolver
from irohpy.socket.remote_map import RemoteMap, RemoteState
from irohpy.portmapper import Portmapper, PortmapperConfig
from irohpy.portmapper.metrics import PortmapMetrics
from irohpy.quic import connection as qc
from irohpy.quic.connection import QuicConfig
from irohpy.quic.endpoint import EndpointConfig, Offer, QuicEndpoint, always_retry, retry_under_load
from irohpy.socket.transport import Transport
from irohpy.socket.direct_addrs import DirectAddrs
from irohpy.tls.webpki import CaTlsConfig
from irohpy.tls.resumption import TicketCache, TicketStore

log = logging.getLogger(__name__)

DEFAULT_BIND = ("0.0.0.0:0", "[::]:0")
IDLE_TIMEOUT = 30.0
STREAM_WINDOW = 1_250_000
MAX_DATAGRAM_FRAME = 65535
CONNECT_TIMEOUT = 10.0
ACCEPT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 3.0
MAX_PENDING_INCOMING = 256
SERVER_TICKET_CACHE = 1024
CONNECTION_REFUSED = 0x2
KEEP_ALIVE = 5.0
#: Multipath: the highest path id a peer may open (iroh's MAX_MULTIPATH_PATHS, 8 paths).
MAX_PATH_ID = 7
#: Candidate addresses we take from a peer (iroh's MAX_QNT_ADDRESSES).
MAX_NAT_ADDRESSES = 32
MAX_HANDSHAKES = 128
RETRY_ABOVE = 32
#: Connections held at once: over three times the 10,000 idle ones an endpoint is built to
#: hold (closing connections count until their closing period ends), ~56 KiB each when idle.
MAX_CONNECTIONS = 32_768


@dataclass(frozen=True)
class HandshakeLimits:
    """How many incoming handshakes may run at once, and when dialers must pass a Retry first.

    ``max_handshakes`` counts offers not yet decided plus accepted connections
    whose handshake has not completed; Initials beyond it are dropped. Above
    ``retry_above`` (or always, with ``always_retry``) a new dialer gets a
    stateless Retry and is admitted once its second Initial returns the token.
    ``max_connections`` bounds the connections held at once, dialed ones and those
    still closing included; a new dialer's Initials beyond it are dropped too.
    """

    max_handshakes: int = MAX_HANDSHAKES
    retry_above: int = RETRY_ABOVE
    always_retry: bool = False
    max_connections: int = MAX_CONNECTIONS

    def apply(self, config: EndpointConfig) -> None:
        """Set these limits on the QUIC endpoint core's configuration."""
        config.max_handshakes = self.max_handshakes
        config.max_connections = self.max_connections
        config.retry_policy = always_retry if self.always_retry else retry_under_load(self.retry_above)

Target = EndpointAddr | EndpointId | EndpointTicket


def _parse_bind(spec: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(spec, tuple):
        return spec
    return TransportAddr.Ip.parse(spec).sockaddr


def _alpn_bytes(alpn: bytes | str) -> bytes:
    return alpn.encode() if isinstance(alpn, str) else bytes(alpn)


def _preset_lookups(preset: _presets.Preset, secret: SecretKey) -> list[AddressLookup]:
    """What a preset wires in: N0 publishes and resolves through number 0's DNS/pkarr servers."""
    lookups: list[AddressLookup] = []
    if preset.pkarr_relay:
        lookups += [PkarrPublisher(secret, preset.pkarr_relay), PkarrResolver(preset.pkarr_relay)]
    if preset.dns_origin:
        lookups.append(DnsAddressLookup(preset.dns_origin))
    return lookups


class Incoming:
    """A handshake someone started with us: accept, refuse, or ignore it."""

    def __init__(self, endpoint: Endpoint, offer: Offer) -> None:
        self._endpoint = endpoint
        self._offer = offer
        self._path: PathKey = offer.addr  # type: ignore[assignment]
        self._decided = False

    @property
    def remote_addr(self) -> PathKey:
        """Where the handshake came from: ``(host, port)``, or the relay it came through."""
        return self._path

    def remote_addr_validated(self) -> bool:
        """Whether the dialer proved it receives at :attr:`remote_addr` (it passed a Retry)."""
        return self._offer.validated

    def _decide(self) -> None:
        if self._decided:
            raise ConnectError("this incoming connection was already accepted, refused or ignored")
        self._decided = True

    async def accept(self, timeout: float = ACCEPT_TIMEOUT) -> Connection:
        """Complete the handshake and run the hooks; returns the connection."""
        self._decide()
        conn = self._endpoint._accept_incoming(self)
        return await self._endpoint._await_established(conn, timeout, f"accepting from {describe_path(self._path)}")

    def refuse(self) -> None:
        """Tell the dialer no (CONNECTION_REFUSED) without doing a handshake."""
        self._decide()
        self._endpoint._engine.refuse_offer(self._offer)

    def ignore(self) -> None:
        """Drop it silently; the dialer times out."""
        self._decide()
        self._endpoint._engine.ignore_offer(self._offer)

    def __repr__(self) -> str:
        return f"Incoming(from {describe_path(self._path)})"


class Endpoint:
    """One identity and its sockets; dials and accepts QUIC connections by key.

    Use ``await Endpoint.bind(...)``, ideally as ``async with``. Close it to
    end every connection gracefully and release the sockets.
    """

    def __init__(self) -> None:
        raise TypeError("use `await Endpoint.bind(...)`")

    @classmethod
    async def bind(
        cls,
        *,
        secret_key: SecretKey | None = None,
        alpns: Iterable[bytes | str] = (),
        preset: _presets.Preset = _presets.N0,
        relay_mode: RelayMode | None = None,
        bind_addrs: Sequence[str | tuple[str, int]] = DEFAULT_BIND,
        hooks: Iterable[EndpointHooks] = (),
        address_lookup: Iterable[AddressLookup] = (),
        idle_timeout: float = IDLE_TIMEOUT,
        keep_alive: float = KEEP_ALIVE,
        max_datagram_size: int = 1200,
        relay_only: bool = False,
        handshake_limits: HandshakeLimits = HandshakeLimits(),
        relay_recv_limits: RelayRecvLimits = RelayRecvLimits(),
        portmapper_config: PortmapperConfig | None = None,
        ca_tls_config: CaTlsConfig | None = None,
    ) -> Endpoint:
        """Bind the sockets and start the relay and lookup machinery.

        ``relay_only=True`` keeps our IP addresses private: no UDP sockets are bound, no
        direct address is published, and peers are reached through relays only.
        ``handshake_limits`` caps concurrent incoming handshakes and says when dialers
        must pass a stateless Retry first; ``relay_recv_limits`` meters, per sender, the
        datagrams that arrive through relays. ``portmapper_config`` (default enabled, as in
        iroh, unless ``IROHPY_PORTMAPPER=disabled``) has the default gateway map our IPv4 UDP
        port with PCP, NAT-PMP or UPnP IGD; the mapped address joins our direct addresses.
        ``ca_tls_config`` says which certificate authorities https relays (their websocket and
        their QUIC address discovery) must chain to; by default the system's.
        """
        self = object.__new__(cls)
        self._secret = secret_key if secret_key is not None else SecretKey.generate()
        self._id = self._secret.public()
        self._alpns = [_alpn_bytes(a) for a in alpns]
        self.preset = preset
        self.relay_mode = relay_mode if relay_mode is not None else preset.relay_mode
        self.relay_only = relay_only
        if relay_only and self.relay_mode.kind is RelayKind.DISABLED:
            raise ConfigError("relay_only needs relays: it cannot be combined with RelayMode.DISABLED")
        # Wakes watchers on a new home relay and on new local or public addresses.
        self._addr_changed = Notify()
        self._hooks = list(hooks)
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._incoming: deque[Incoming] = deque()
        self._incoming_ready = asyncio.Event()
        #: Our connections by the engine connection each wraps (the engine also runs QAD probes).
        self._conns: dict[EngineConnection, Connection] = {}
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._ticket_cache = TicketCache()
        self._socket_metrics = SocketMetrics()
        self._metrics = Registry()
        self._metrics.register(self._socket_metrics)
        relay_metrics = self._metrics.register(RelayClientMetrics())
        lookup_metrics = self._metrics.register(AddressLookupMetrics())
        self._remotes = RemoteMap(self._socket_metrics)
        self._transport = Transport(self._on_packets, self._socket_metrics)
        self._bridge = SocketBridge(self._transport, self._remotes)
        transport = QuicConfig(
            is_client=True,
            idle_timeout=idle_timeout,
            keep_alive=keep_alive,
            max_datagram_size=max_datagram_size,
            max_datagram_frame_size=MAX_DATAGRAM_FRAME,
            stream_window=STREAM_WINDOW,
            read_credit=True,
            max_path_id=MAX_PATH_ID,
            # A relay-only endpoint never tells a peer an IP address of ours.
            nat_traversal_addresses=None if relay_only else MAX_NAT_ADDRESSES,
        )
        config = EndpointConfig(
            transport=transport,
            # Derived (one-way) from our secret key: restarted with the same key, we compute the
            # old connections' reset tokens and so end our peers' stale connections at once.
            static_key=hmac.digest(b"irohpy endpoint static key", self._secret.to_bytes(), "sha256"),
            alpns=list(self._alpns),
            ticket_store=TicketStore(SERVER_TICKET_CACHE),
            ticket_cache=self._ticket_cache,
            offer_initials=True,
        )
        handshake_limits.apply(config)
        self._engine = QuicEngine(QuicEndpoint(self._secret.to_bytes(), config), self._bridge.send)
        self._bridge.attach(self._engine)
        self._engine.connection_type = self._new_connection
        self._engine.queue_accepted = False
        self._engine.on_offer = self._on_offer
        self._engine.on_gone = self._on_conn_removed
        if not relay_only:
            try:
                self._transport.bind([_parse_bind(a) for a in bind_addrs])
            except OSError as exc:
                raise BindError(exc.errno, f"cannot bind {list(bind_addrs)}: {exc.strerror or exc}") from exc
            self._remotes.source_ip = self._transport.source_ip
        if self.relay_mode.kind is not RelayKind.DISABLED:
            self._transport.relay = RelayTransport(
                self._secret, RelayMap(self.relay_mode.relay_map), self._transport.receive_relayed,
                self._addr_changed.notify_all, relay_recv_limits, self._socket_metrics, relay_metrics,
                ssl_context=ca_tls_config.ssl_context() if ca_tls_config is not None else None,
            )
        self._direct = (
            None if relay_only else DirectAddrs(self._transport, self._remotes, self._addr_changed.notify_all)
        )
        self.portmapper_config = portmapper_config or PortmapperConfig.default()
        self._portmapper = self._start_portmapper(self.portmapper_config)
        self._qad: QadClient | None = None
        direct = self._direct
        if direct is not None and self._transport.relay is not None:
            families = [s.family for s in self._transport.sockets]
            self._qad = QadClient(self._engine, self._transport.relay, ca_tls_config or CaTlsConfig.system(),
                                  families, direct.on_qad)
        self.address_lookup = CombinedLookup([*address_lookup, *_preset_lookups(preset, self._secret)],
                                             metrics=lookup_metrics)
        self._spawn(self._publish_loop())
        return self

    async def __aenter__(self) -> Endpoint:
        return self

    def _start_portmapper(self, config: PortmapperConfig) -> Portmapper | None:
        direct = self._direct
        if config is PortmapperConfig.DISABLED or direct is None:
            return None
        bound = next(((h, p) for h, p in self._transport.local_addrs()
                      if ":" not in h and p and not h.startswith("127.")), None)
        if bound is None:
            return None
        mapper: Portmapper | None = None

        def changed() -> None:
            if mapper is not None:
                direct.set_portmapped(mapper.external)

        mapper = Portmapper(bound[1], bound_ip=bound[0], on_change=changed,
                            metrics=self._metrics.register(PortmapMetrics()))
        return mapper

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- identity and addresses ------------------------------------------------

    @property
    def id(self) -> EndpointId:
        return self._id

    @property
    def secret_key(self) -> SecretKey:
        return self._secret

    def bound_sockets(self) -> list[tuple[str, int]]:
        return self._transport.local_addrs()

    def addr(self) -> EndpointAddr:
        """Our EndpointAddr: the id, the home relay, and every address the sockets are reachable at."""
        addrs: set[TransportAddr] = set()
        relay = self._transport.relay
        if relay is not None and relay.home is not None:
            addrs.add(TransportAddr.Relay(relay.home))
        if self._direct is not None:
            addrs.update(TransportAddr.Ip(host, port) for host, port in self._direct.local_candidates())
        return EndpointAddr(self._id, frozenset(addrs))

    async def online(self) -> None:
        """Wait until a home relay is connected (returns at once when relays are disabled).

        Wrap it in ``asyncio.timeout``: with unreachable relays it waits for ever.
        """
        relay = self._transport.relay
        if relay is not None:
            await relay.online()

    @property
    def home_relay(self) -> RelayUrl | None:
        relay = self._transport.relay
        if relay is None or relay.home is None or not relay.is_connected(relay.home):
            return None
        return relay.home

    def relay_problems(self) -> list[RelayProblem]:
        """Relays of our map that are not connected and why (unreachable, or refused us)."""
        relay = self._transport.relay
        return relay.problems() if relay is not None else []

    async def watch_addr(self) -> AsyncIterator[EndpointAddr]:
        """Our EndpointAddr now, then each time it changes (for example a new home relay)."""
        last = self.addr()
        yield last
        while not self._closed:
            await self._addr_changed.wait()
            current = self.addr()
            if current != last:
                last = current
                yield current

    def metrics(self) -> Registry:
        """The endpoint's metrics registry: the ``magicsock``, ``relay_client`` and ``address_lookup``
        groups, plus those protocols on this endpoint register (gossip, blobs, your own).

        Read a value with ``endpoint.metrics().group(SocketMetrics).send_relay.get()``; serve it
        all with :func:`irohpy.metrics.serve_metrics`.
        """
        return self._metrics

    def insert_relay(self, relay: RelayConfig | RelayUrl | str) -> None:
        """Add a relay to the map at run time; it competes for home relay from the next choice on."""
        if self._transport.relay is None:
            raise ConnectError("relays are disabled on this endpoint")
        self._transport.relay.insert(relay)

    async def remove_relay(self, url: RelayUrl | str) -> None:
        if self._transport.relay is not None:
            await self._transport.relay.remove(RelayUrl.parse(url) if isinstance(url, str) else url)

    def set_alpns(self, alpns: Iterable[bytes | str]) -> None:
        """The ALPNs we accept from now on; dialers offering none of them fail the handshake."""
        self._alpns = [_alpn_bytes(a) for a in alpns]
        self._engine.core.config.alpns = list(self._alpns)

    @property
    def alpns(self) -> list[bytes]:
        return list(self._alpns)

    def add_hooks(self, hooks: EndpointHooks) -> None:
        self._hooks.append(hooks)

    def remote_addr(self, endpoint_id: EndpointId) -> EndpointAddr | None:
        """What we know of a remote's addresses, from earlier dials and connections."""
        state = self._remotes.by_id.get(endpoint_id)
        if state is None:
            return None
        addrs = frozenset(
            TransportAddr.Relay(path.url) if isinstance(path, RelayPath) else TransportAddr.Ip(*path)
            for path in state.addrs
        )
        return EndpointAddr(endpoint_id, addrs)

    @property
    def connections(self) -> list[Connection]:
        return [c for c in self._conns.values() if not c.is_closed]

    # -- dialing ---------------------------------------------------------------

    async def connect(
        self, target: Target, alpn: bytes | str, *, timeout: float = CONNECT_TIMEOUT, zero_rtt: bool = False
    ) -> Connection:
        """Dial an endpoint and return the authenticated connection.

        ``target`` is an EndpointAddr, an EndpointTicket, or a bare EndpointId
        whose addresses we already know.

        With ``zero_rtt=True`` and a session ticket from an earlier connection
        to this peer, the connection is returned before the handshake ends, so
        data written now travels in the first flight (0-RTT). Such data has no
        forward secrecy and an attacker may replay it: send only idempotent
        requests before ``await conn.handshake_confirmed()``.
        """
        self._check_open()
        addr = self._target_addr(target)
        alpn = _alpn_bytes(alpn)
        if not alpn:
            raise ConnectError("an ALPN is required to connect")
        if addr.id == self._id:
            raise ConnectError("refusing to connect to ourselves")
        for hook in self._hooks:
            outcome = await hook.before_connect(addr, alpn)
            if isinstance(outcome, Reject):
                raise LocallyRejected(f"connection to {addr.id.fmt_short()} rejected by a before_connect hook")
        remote = self._remotes.for_id(addr.id)
        for ip in addr.ip_addrs() if not self.relay_only else ():
            remote.add_addr(ip.sockaddr, "dial")
        relay = self._transport.relay
        if relay is not None:
            for url in addr.relay_urls():
                remote.add_addr(RelayPath(url, addr.id), "dial")
                relay.ensure(url)
        if not remote.addrs:
            await self._resolve_into(remote, addr.id, timeout)
        if not remote.addrs:
            raise ConnectError(
                f"no addresses known for {addr.id.fmt_short()}: address lookup found nothing; give an "
                "EndpointAddr or ticket with direct addresses or a relay URL, or configure address lookup"
            )
        conn = self._conns[self._engine.dial(remote.mapped, bytes(addr.id), alpn)]
        if zero_rtt and conn.quic.early_data_state == qc.EARLY_DATA_ATTEMPTED:
            conn.remote_id = addr.id
            conn.alpn = alpn
            return conn
        return await self._await_established(conn, timeout, f"connecting to {addr.id.fmt_short()}")

    async def _resolve_into(self, remote: RemoteState, endpoint_id: EndpointId, timeout: float) -> None:
        """Ask the lookup services; the first answer with a usable path is enough to dial."""
        relay = self._transport.relay
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for item in self.address_lookup.resolve(endpoint_id):
                    log.debug("%s: %s has %s", item.provenance, endpoint_id.fmt_short(), item.info.data)
                    for ip in item.info.data.ip_addrs if not self.relay_only else ():
                        remote.add_addr(ip.sockaddr, item.provenance)
                    if relay is not None:
                        for url in item.info.data.relay_urls:
                            remote.add_addr(RelayPath(url, endpoint_id), item.provenance)
                            relay.ensure(url)
                    if remote.addrs:
                        return

    async def _publish_loop(self) -> None:
        """Publish our data through the lookup services now and on every address change."""
        published: EndpointData | None = None
        relay = self._transport.relay
        while not self._closed:
            data = EndpointData.from_addr(self.addr())
            if data != published and self.address_lookup.lookups:
                self.address_lookup.publish(data)
                published = data
            if relay is None and self._direct is None:
                return
            home = relay.home if relay is not None else None
            await self._addr_changed.wait()
            if self._direct is not None and relay is not None and relay.home != home:
                self._direct.stun_soon()

    def _target_addr(self, target: Target) -> EndpointAddr:
        if isinstance(target, EndpointTicket):
            return target.addr
        if isinstance(target, EndpointAddr):
            return target
        if isinstance(target, EndpointId):
            return EndpointAddr.from_id(target)
        raise TypeError(f"cannot connect to {type(target).__name__}: expected EndpointAddr, EndpointId or EndpointTicket")

    async def _await_established(self, conn: Connection, timeout: float, what: str) -> Connection:
        """Wait for the handshake and hooks; every failure is a ConnectError."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(conn._handshake)
        except TimeoutError:
            conn.fail_reason = "timeout"
            conn.close(0, b"handshake timeout")
            raise ConnectTimeout(f"handshake did not finish within {timeout:g} s") from None
        except asyncio.CancelledError:
            conn.close(0, b"")
            raise
        except ConnectionLost as exc:
            raise ConnectError(f"{what} failed: {exc}") from exc
        return conn

    # -- accepting -------------------------------------------------------------

    def _on_offer(self, offer: Offer) -> None:
        if self._closed or len(self._incoming) >= MAX_PENDING_INCOMING:
            self._engine.refuse_offer(offer)
            return
        self._incoming.append(Incoming(self, offer))
        self._incoming_ready.set()

    def _accept_incoming(self, incoming: Incoming) -> Connection:
        self._check_open()
        return self._conns[self._engine.accept_offer(incoming._offer)]

    def _new_connection(self, engine: QuicEngine, quic: qc.QuicConnection) -> EngineConnection:
        # Our candidates go with the first 1-RTT packets (ADD_ADDRESS) once the handshake
        # negotiates NAT traversal, not a flush later.
        quic.set_local_addresses(self._remotes.local_candidates)
        conn = Connection(engine, quic)
        conn._bridge = self._bridge
        conn._on_handshake = self._on_handshake
        self._conns[conn._inner] = conn
        self._all_closed.clear()
        return conn._inner

    async def accept(self) -> Incoming | None:
        """The next incoming connection attempt; None once the endpoint is closed."""
        while not self._incoming:
            if self._closed:
                return None
            self._incoming_ready.clear()
            await self._incoming_ready.wait()
        return self._incoming.popleft()

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        while (incoming := await self.accept()) is not None:
            yield incoming

    # -- connection lifecycle ----------------------------------------------------

    def _on_conn_removed(self, inner: EngineConnection) -> None:
        conn = self._conns.pop(inner, None)
        if conn is None:
            return  # not one of ours: a QAD probe's
        if conn._remote is not None:
            conn._remote.remove_connection(conn)
        conn._mark_terminated()
        metrics = self._socket_metrics
        if conn.counted_open:
            metrics.num_conns_closed.inc()
            metrics.connections.dec()
        else:
            metrics.num_conns_failed.labels(conn.fail_reason).inc()
        if not self._conns:
            self._all_closed.set()

    def _on_packets(self, batch: list[tuple[bytes, PathKey]]) -> None:
        self._engine.receive(batch)

    def _on_handshake(self, conn: Connection) -> None:
        if conn.peer_id is None or conn.alpn is None:
            conn.close(0, b"")
            return
        conn.remote_id = EndpointId.from_bytes(conn.peer_id)
        remote = self._remotes.for_id(conn.remote_id)
        conn._remote = remote
        remote.add_connection(conn, self._engine._clock())
        self._bridge.schedule(remote)
        if not self._hooks:
            self._count_open(conn)
            conn._handshake.set_result(None)
            return
        self._spawn(self._run_after_handshake(conn))

    async def _run_after_handshake(self, conn: Connection) -> None:
        info = ConnectionInfo(conn)
        for hook in self._hooks:
            try:
                outcome = await hook.after_handshake(info)
            except Exception:
                log.exception("after_handshake hook failed; rejecting the connection")
                outcome = Reject(0, b"")
            if isinstance(outcome, Reject):
                conn.fail_reason = "rejected"
                if not conn._handshake.done():
                    conn._handshake.set_exception(
                        LocallyRejected(f"connection with {info.remote_id.fmt_short()} rejected by a hook")
                    )
                conn.close(outcome.error_code, outcome.reason)
                return
        if not conn._handshake.done():
            self._count_open(conn)
            conn._handshake.set_result(None)

    def _count_open(self, conn: Connection) -> None:
        conn.counted_open = True
        self._socket_metrics.num_conns_opened.inc()
        self._socket_metrics.connections.inc()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_open(self) -> None:
        if self._closed:
            raise EndpointClosed("the endpoint is closed")

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Close every connection with code 0, wait (bounded) for them to drain, release sockets."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        self._incoming_ready.set()
        for incoming in list(self._incoming):
            with contextlib.suppress(ConnectError):
                incoming.ignore()
        self._incoming.clear()
        if self._qad is not None:
            await self._qad.close()
        for conn in list(self._conns.values()):
            conn.close(0, b"")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._all_closed.wait()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._engine.close()
        await self.address_lookup.close()
        if self._portmapper is not None:
            await self._portmapper.close()
        self._bridge.close()
        if self._direct is not None:
            await self._direct.close()
        if self._transport.relay is not None:
            await self._transport.relay.close()
        self._transport.close()
        self._addr_changed.notify_all()

    def __repr__(self) -> str:
        return f"Endpoint(id={self._id.fmt_short()})"
