"""A client connection to one relay server: the thin asyncio driver around
:mod:`irohpy.relay.protocol`.

It dials ``/relay`` over WebSocket, proves our key with the challenge
handshake, then carries datagrams both ways. It reconnects by itself with
backoff (10 ms to 16 s), follows the server's Restarting hint, answers the
server's pings and pings the server so a dead relay is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiohttp

from irohpy.base.keys import PublicKey, SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import RelayAuthError, RelayError, RelayProtocolError
from irohpy.relay import protocol as p
from irohpy.relay.client_metrics import RelayClientMetrics
from irohpy.relay.recv_limits import DatagramMeter, RelayRecvLimits
from irohpy.relay.stun import STUN_PORT_HEADER

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
PING_INTERVAL = 15.0
PING_TIMEOUT = 5.0
# After a network change the connection may be dead already: ask sooner.
CHECK_PING_TIMEOUT = 1.5
# A dead TCP connection never answers our close frame.
CLOSE_TIMEOUT = 1.0
BACKOFF_MIN = 0.01
BACKOFF_MAX = 16.0
# Datagrams queued while (re)connecting; older ones are stale for QUIC anyway.
QUEUE_MAX = 512
QUEUE_MAX_AGE = 3.0
PROBE_TIMEOUT = 3.0
# Datagrams per batch frame, as iroh writes them.
BATCH_MAX = 20

DatagramHandler = Callable[[RelayUrl, PublicKey, list[bytes]], None]


def ws_url(url: RelayUrl) -> str:
    scheme = "ws" if url.scheme == "http" else "wss"
    host = f"[{url.host}]" if ":" in url.host else url.host.rstrip(".")
    return f"{scheme}://{host}:{url.port}{p.RELAY_PATH}"


def http_url(url: RelayUrl, path: str) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host.rstrip(".")
    return f"{url.scheme}://{host}:{url.port}{path}"


@dataclass(frozen=True)
class RelayProbe:
    """What ``GET /ping`` tells us: the latency, and where the relay answers STUN (if it says)."""

    latency: float
    stun_port: int | None


async def probe(session: aiohttp.ClientSession, url: RelayUrl, timeout: float = PROBE_TIMEOUT) -> RelayProbe:
    """Time ``GET /ping``, iroh's relay latency probe; raises RelayError if unreachable."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with session.get(http_url(url, "/ping")) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RelayError(f"relay {url} answered /ping with {resp.status}")
                port_text = resp.headers.get(STUN_PORT_HEADER, "")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise RelayError(f"relay {url} is unreachable: {exc or type(exc).__name__}") from None
    stun_port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    return RelayProbe(time.perf_counter() - start, stun_port)


def _has_ip(ips: Collection[str], host: str) -> bool:
    """Whether ``host`` (a socket's address, maybe with a zone) is one of ``ips``."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return True  # not an address we can judge: keep the connection, ping it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for text in ips:
        try:
            if ipaddress.ip_address(text.partition("%")[0]) == ip:
                return True
        except ValueError:
            continue
    return False


class RelayClient:
    """One relay, kept connected until :meth:`close`."""

    def __init__(
        self,
        url: RelayUrl,
        secret: SecretKey,
        session: aiohttp.ClientSession,
        on_datagrams: DatagramHandler,
        *,
        auth_token: str | None = None,
        on_state: Callable[[RelayClient], None] | None = None,
        ping_interval: float = PING_INTERVAL,
        recv_limits: RelayRecvLimits = RelayRecvLimits(),
        metrics: RelayClientMetrics | None = None,
    ) -> None:
        self.url = url
        self._meter = DatagramMeter(recv_limits)
        self._secret = secret
        self._session = session
        self._on_datagrams = on_datagrams
        self._on_state = on_state
        self._auth_token = auth_token
        self._ping_interval = ping_interval
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._queue: deque[tuple[float, PublicKey, bytes]] = deque()
        self._queue_ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._closed = False
        self._last_pong: bytes | None = None
        self._ping_now = asyncio.Event()
        self.last_error: str | None = None
        # True while the relay's last answer was a refusal (no or a bad access token).
        self.refused = False
        self.status: int | None = None
        self.last_used = time.monotonic()
        self.connects = 0
        self.sent_datagrams = 0
        self.recv_datagrams = 0
        self.metrics = metrics or RelayClientMetrics()
        self._task = asyncio.ensure_future(self._run())

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    def check_soon(self, local_ips: Collection[str]) -> None:
        """Our network changed. A connection from an address we no longer have (``local_ips`` are
        the ones we do) is dropped and made again at once, as iroh does; any other is pinged with
        a short deadline and made again if the relay does not answer."""
        ws = self._ws
        if ws is not None:
            sockname = ws.get_extra_info("sockname")
            if sockname is not None and not _has_ip(local_ips, sockname[0]):
                log.info("relay %s: our address %s is gone; reconnecting", self.url, sockname[0])
                self.metrics.local_addr_gone.inc()
                sock = ws.get_extra_info("socket")
                if sock is not None:
                    # No close handshake: nothing comes back to an address we lost.
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
        self._ping_now.set()

    def send(self, dst: PublicKey, datagram: bytes) -> None:
        """Queue one QUIC datagram for ``dst``; dropped if the queue is full."""
        if self._closed or not datagram:
            return
        self.last_used = time.monotonic()
        if len(self._queue) >= QUEUE_MAX:
            self._queue.popleft()
            self.metrics.send_queue_dropped.inc()
        self._queue.append((self.last_used, dst, datagram))
        self._queue_ready.set()

    # -- the connection loop -------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._closed:
            delay = backoff
            try:
                delay = await self._session_once()
                backoff = BACKOFF_MIN
            except RelayAuthError as exc:
                # Warn once per reason: a refusal repeats on every retry.
                if not self.refused or self.last_error != str(exc):
                    log.warning("relay %s refused us: %s", self.url, exc)
                self.last_error = str(exc)
                self.metrics.connect_failures.labels("refused").inc()
                self.refused = True
                backoff = BACKOFF_MAX
            except (RelayError, RelayProtocolError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.debug("relay %s connection failed: %s", self.url, self.last_error)
                if not self._connected.is_set():
                    self.metrics.connect_failures.labels("error").inc()
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                self._set_disconnected()
            if not self._closed:
                await asyncio.sleep(delay)

    async def _session_once(self) -> float:
        """Connect, serve until the connection ends; returns how long to wait before retrying."""
        headers = {"Authorization": f"Bearer {self._auth_token}"} if self._auth_token else None
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await self._session.ws_connect(
                ws_url(self.url),
                protocols=p.SUBPROTOCOLS,
                max_msg_size=p.MAX_MESSAGE_SIZE,
                autoping=True,
                headers=headers,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            )
            try:
                version = p.version_of(ws.protocol or "")
                if ws.protocol not in p.SUBPROTOCOLS:
                    raise RelayProtocolError(f"relay {self.url} did not pick an iroh-relay subprotocol")
                await self._handshake(ws, version)
            except BaseException:
                await ws.close()
                raise
        self._ws = ws
        self.refused = False
        self.last_error = None
        self.connects += 1
        self.metrics.connects.inc()
        self.metrics.connected.inc()
        self._connected.set()
        if self._on_state is not None:
            self._on_state(self)
        writer = asyncio.ensure_future(self._write_loop(ws))
        pinger = asyncio.ensure_future(self._ping_loop(ws))
        try:
            return await self._read_loop(ws, version)
        finally:
            for task in (writer, pinger):
                task.cancel()
            await asyncio.gather(writer, pinger, return_exceptions=True)
            await ws.close()

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse, version: int) -> None:
        challenge = p.decode(await self._receive(ws), version=version)
        if isinstance(challenge, p.ServerConfirmsAuth):
            return
        if not isinstance(challenge, p.ServerChallenge):
            raise RelayProtocolError(f"expected a challenge from {self.url}, got {type(challenge).__name__}")
        await ws.send_bytes(p.encode(p.answer_challenge(self._secret, challenge)))
        answer = p.decode(await self._receive(ws), version=version)
        if isinstance(answer, p.ServerDeniesAuth):
            raise RelayAuthError(f"relay {self.url} denied us: {answer.reason}")
        if not isinstance(answer, p.ServerConfirmsAuth):
            raise RelayProtocolError(f"unexpected {type(answer).__name__} during the relay handshake")

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> bytes:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR):
                raise RelayError(f"relay {self.url} closed the connection ({ws.close_code})")

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse, version: int) -> float:
        while True:
            frame = p.decode(await self._receive(ws), version=version)
            if isinstance(frame, p.RelayToClient):
                dropped = self._meter.dropped
                datagrams = self._admit(frame)
                if self._meter.dropped != dropped:
                    self.metrics.recv_dropped.inc(self._meter.dropped - dropped)
                if datagrams:
                    self.recv_datagrams += len(datagrams)
                    self.metrics.recv_datagrams.inc(len(datagrams))
                    self.last_used = time.monotonic()
                    self._on_datagrams(self.url, frame.peer, datagrams)
            elif isinstance(frame, p.Ping):
                await ws.send_bytes(p.encode(p.Pong(frame.data)))
            elif isinstance(frame, p.Pong):
                self._last_pong = frame.data
            elif isinstance(frame, p.Restarting):
                log.info("relay %s is restarting; reconnecting in %d ms", self.url, frame.reconnect_in_ms)
                return frame.reconnect_in_ms / 1000
            elif isinstance(frame, p.StatusFrame):
                self.status = frame.status
                if frame.status == p.Status.SAME_ENDPOINT_ID_CONNECTED:
                    raise RelayError(f"another connection with our id took over at {self.url}")
            elif isinstance(frame, p.Health):
                log.info("relay %s health: %s", self.url, frame.problem)

    def _admit(self, frame: p.RelayToClient) -> list[bytes]:
        """The frame's datagrams that its sender's budget allows; only those are sliced out."""
        meter = self._meter
        count = meter.segments(len(frame.payload), frame.segment_size)
        if count is None:
            meter.dropped += 1
            return []
        allowed = meter.admit(frame.peer, count, time.monotonic())
        if frame.segment_size is None:
            return [frame.payload] if allowed else []
        size = frame.segment_size
        payload = frame.payload
        return [payload[i : i + size] for i in range(0, allowed * size, size)]

    @property
    def dropped_datagrams(self) -> int:
        """Datagrams refused by the receive limits (a refused batch frame counts once)."""
        return self._meter.dropped

    async def _write_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            deadline = time.monotonic() - QUEUE_MAX_AGE
            while self._queue:
                queued_at, dst, first = self._queue.popleft()
                if queued_at < deadline:
                    self.metrics.send_queue_dropped.inc()
                    continue
                batch = self._take_batch(dst, first)
                segment = len(first) if len(batch) > 1 else None
                await ws.send_bytes(p.encode(p.ClientToRelay(dst, 0, b"".join(batch), segment)))
                self.sent_datagrams += len(batch)
                self.metrics.send_frames.inc()
                self.metrics.send_datagrams.inc(len(batch))

    def _take_batch(self, dst: PublicKey, first: bytes) -> list[bytes]:
        """Queued datagrams for ``dst`` that fit one GSO-style batch frame after ``first``."""
        batch = [first]
        size = len(first)
        if size < p.MIN_SEGMENT_SIZE:  # relays refuse batches of segments no QUIC packet is
            return batch
        queue = self._queue
        while queue and len(batch) < BATCH_MAX and size * (len(batch) + 1) <= p.MAX_PACKET_SIZE:
            _, next_dst, data = queue[0]
            if next_dst != dst or len(data) > size:
                break
            queue.popleft()
            batch.append(data)
            if len(data) < size:
                break
        return batch

    async def _ping_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            # asyncio.wait's timeout never cancels, so it cannot swallow our
            # own cancellation (asyncio.timeout can, on Python 3.11).
            waiter = asyncio.ensure_future(self._ping_now.wait())
            try:
                await asyncio.wait([waiter], timeout=self._ping_interval)
            finally:
                waiter.cancel()
            timeout = CHECK_PING_TIMEOUT if self._ping_now.is_set() else PING_TIMEOUT
            self._ping_now.clear()
            data = os.urandom(8)
            self._last_pong = None
            await ws.send_bytes(p.encode(p.Ping(data)))
            self.metrics.pings_sent.inc()
            await asyncio.sleep(timeout)
            if self._last_pong != data:
                self.metrics.ping_timeouts.inc()
                log.info("relay %s missed a pong; reconnecting", self.url)
                await ws.close()
                return

    def _set_disconnected(self) -> None:
        self._ws = None
        if self._connected.is_set():
            self._connected.clear()
            self.metrics.disconnects.inc()
            self.metrics.connected.dec()
            if self._on_state is not None:
                self._on_state(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._set_disconnected()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"RelayClient({self.url}, {state})"
