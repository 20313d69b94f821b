"""The asyncio driver of irohpy's own QUIC endpoint core (:mod:`irohpy.quic.endpoint`).

It does the I/O the sans-IO core leaves out, and nothing else:

- one core pass per receive burst: the socket layer hands over everything it drained, the core
  routes it, runs due timers and returns what to send;
- one ``loop.call_at`` for the core's single next deadline;
- transmits go out per burst through the socket layer's batch send (GSO runs);
- application calls (writes, closes) mark their connection and schedule one flush with
  ``call_soon``, so many writes in one loop iteration cost one pass; what a pass's own events
  queue (a NAT-traversal round, a path's status) goes out before the pass ends, not a loop
  iteration later behind whatever else is ready.

It owns no tasks, only callbacks, so closing it leaves nothing behind. ``Endpoint`` runs one on
its socket layer (relay and hole-punched paths) through :mod:`irohpy.endpoint.engine_socket`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from irohpy.base.notify import Notify
from irohpy.endpoint.engine_streams import EngineRecvStream, EngineSendStream
from irohpy.errors import (
    ApplicationClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    EndpointClosed,
    IdleTimeout,
    LocallyClosed,
    PathError,
    StreamError,
    TransportError,
)
from irohpy.quic import connection as qc
from irohpy.quic.address_discovery import ObservedAddressReceived
from irohpy.quic.endpoint import EndpointConfig, Offer, QuicEndpoint
from irohpy.quic.handshake import Handshake
from irohpy.socket.udp import SockAddr, UdpSocket

#: Received datagrams a connection keeps for the application, by count and by bytes (iroh's
#: 1.25 MB); past either the oldest go first.
MAX_DATAGRAMS = 256
DATAGRAM_RECV_BUFFER = 1_250_000
#: Peer streams waiting for accept_bi() / accept_uni() each; more are stopped.
MAX_PENDING_STREAMS = 1024
#: The application error code a refused stream is stopped with.
STREAM_REFUSED = 0
#: Established connections waiting for accept(); more are refused.
MAX_ACCEPT_QUEUE = 128
CONNECTION_REFUSED = 0x02
#: Sends a pass makes after its events for what they queued; a hook that queues something on
#: every event gets the rest through a flush, so it cannot hold the loop.
FOLLOW_UPS = 2

Sender = Callable[[list[bytes], Any], None]
"""Sends datagrams to one address in order (``UdpSocket.send_batch``, or the socket layer's
:meth:`~irohpy.endpoint.engine_socket.SocketBridge.send` for mapped addresses)."""


class EngineConnection:
    """One QUIC connection of a :class:`QuicEngine`: streams, datagrams, close."""

    def __init__(self, engine: QuicEngine, quic: qc.QuicConnection) -> None:
        self._engine = engine
        self.quic = quic
        #: What streams are made as (a wrapper sets the application's stream classes).
        self.send_stream_type: type[EngineSendStream] = EngineSendStream
        self.recv_stream_type: type[EngineRecvStream] = EngineRecvStream
        self.peer_id: bytes | None = None
        self.alpn: bytes | None = None
        self.terminated: qc.ConnectionTerminated | None = None
        self._established = asyncio.get_running_loop().create_future()
        self._send: dict[int, EngineSendStream] = {}
        self._recv: dict[int, EngineRecvStream] = {}
        self._incoming_bi: deque[tuple[EngineSendStream, EngineRecvStream]] = deque()
        self._incoming_uni: deque[EngineRecvStream] = deque()
        self._datagrams: deque[bytes] = deque()
        self._datagram_bytes = 0
        #: Index of the next stream the peer may open, bidi and uni.
        self._next_peer = [0, 0]
        self._arrivals = Notify()
        self._progress = Notify()
        self._closed = Notify()
        #: Multipath: what became of each path (PathEstablished, PathAbandoned), newest last.
        self.multipath_events: list[qc.PathEstablished | qc.PathAbandoned] = []
        self._paths_changed = Notify()
        #: Told of each new address the peer reports seeing us at (QUIC Address Discovery).
        self.on_observed_address: Callable[[ObservedAddressReceived], None] | None = None
        #: NAT traversal (client): told of each change of the server's candidate addresses.
        self.on_remote_candidates: Callable[[qc.RemoteCandidatesChanged], None] | None = None
        #: NAT traversal (client): the backup paths opened on traversed 4-tuples, oldest first.
        self.traversal_paths: list[qc.TraversalPathOpened] = []
        #: Told of every event but stream data, after this connection handled it (the hook of
        #: a wrapper such as :class:`~irohpy.endpoint.connection.Connection`).
        self.on_event: Callable[[qc.Event], None] | None = None
        #: Set by a wrapper once the connection ended in its terms: what every later call on
        #: the connection and its streams raises.
        self.failure: ConnectionLost | None = None

    @property
    def remote_addr(self) -> object:
        return self.quic.peer_address

    # -- events from the core -----------------------------------------------------------

    def _on_event(self, ev: qc.Event) -> None:
        if isinstance(ev, qc.StreamDataReceived):
            recv = self._recv_stream(ev.stream_id)
            if recv is not None:
                recv._on_data(ev.data, ev.fin)
            elif ev.data:
                self._consumed(ev.stream_id, len(ev.data))  # nobody will read it
            return
        if isinstance(ev, qc.DatagramReceived):
            datagrams = self._datagrams
            datagrams.append(ev.data)
            self._datagram_bytes += len(ev.data)
            while len(datagrams) > MAX_DATAGRAMS or self._datagram_bytes > DATAGRAM_RECV_BUFFER:
                self._datagram_bytes -= len(datagrams.popleft())
            self._arrivals.notify_all()
        elif isinstance(ev, qc.StreamReset):
            recv = self._recv_stream(ev.stream_id)
            if recv is not None:
                recv._on_reset(ev.error_code)
        elif isinstance(ev, qc.StopSendingReceived):
            send = self._send.get(ev.stream_id)
            if send is not None:
                send.stop_code = ev.error_code
        elif isinstance(ev, ObservedAddressReceived):
            if self.on_observed_address is not None:
                self.on_observed_address(ev)
        elif isinstance(ev, qc.HandshakeCompleted):
            self.peer_id = ev.peer_id
            self.alpn = ev.alpn
            if not self._established.done():
                self._established.set_result(None)
        elif isinstance(ev, (qc.PathEstablished, qc.PathAbandoned)):
            self.multipath_events.append(ev)
            self._paths_changed.notify_all()
        elif isinstance(ev, qc.RemoteCandidatesChanged):
            if self.on_remote_candidates is not None:
                self.on_remote_candidates(ev)
        elif isinstance(ev, qc.TraversalPathOpened):
            self.traversal_paths.append(ev)
            self._paths_changed.notify_all()
        elif isinstance(ev, qc.ConnectionTerminated):
            if self.terminated is None:
                self.terminated = ev
            if not self._established.done():
                self._established.set_exception(self._close_error())
                self._established.exception()  # retrieved: a dial that nobody awaits is fine
            for recv in self._recv.values():
                recv._wake()
            self._arrivals.notify_all()
            self._closed.notify_all()
            self._paths_changed.notify_all()
        if self.on_event is not None:
            self.on_event(ev)

    def _recv_stream(self, sid: int) -> EngineRecvStream | None:
        """The stream an event names; a peer's first use of a stream opens it and every lower
        one of its kind (RFC 9000 §3.2), in order. None for streams already let go."""
        recv = self._recv.get(sid)
        if recv is not None:
            return recv
        if bool(sid & 1) != self.quic.is_client:
            return None  # ours, and done with
        uni = sid & 2
        kind = 1 if uni else 0
        index = sid >> 2
        for i in range(self._next_peer[kind], index + 1):
            new = (i << 2) | (sid & 3)
            if len(self._incoming_uni if uni else self._incoming_bi) >= MAX_PENDING_STREAMS:
                self._refuse(new)
                continue
            stream = self.recv_stream_type(self, new)
            self._recv[new] = stream
            if uni:
                self._incoming_uni.append(stream)
            else:
                send = self.send_stream_type(self, new)
                self._send[new] = send
                self._incoming_bi.append((send, stream))
        if index >= self._next_peer[kind]:
            self._next_peer[kind] = index + 1
            self._arrivals.notify_all()
        return self._recv.get(sid)

    def _refuse(self, sid: int) -> None:
        """A stream the application has no room to accept: stop it (and reset our half)."""
        streams = self.quic.streams
        if sid in streams.recv:
            self.quic.stop_stream(sid, STREAM_REFUSED)
        if sid in streams.send:
            self.quic.reset_stream(sid, STREAM_REFUSED)
        self._wake()

    def _consumed(self, sid: int, n: int) -> None:
        """The application read (or dropped) ``n`` bytes: their credit goes back to the peer."""
        if self.terminated is None and self.quic.consume(sid, n, self._engine._clock()):
            self._wake()

    def _forget(self, sid: int, *, send: bool) -> None:
        """The application is done with one half of a stream."""
        if send:
            self._send.pop(sid, None)
        else:
            self._recv.pop(sid, None)

    # -- application API ----------------------------------------------------------------

    def _wake(self) -> None:
        self._engine._wake(self.quic)

    def _check_open(self) -> None:
        if self.failure is not None or self.terminated is not None:
            raise self._close_error()

    def _close_error(self) -> ConnectionLost:
        if self.failure is not None:
            return self.failure
        t = self.terminated
        if t is None:
            return LocallyClosed("connection closed locally")
        text = f"{t.reason.decode(errors='replace')} (code {t.error_code})"
        if t.cause == qc.CAUSE_LOCAL:
            return LocallyClosed(f"closed locally: {text}", error_code=t.error_code, reason=t.reason)
        if t.cause == qc.CAUSE_IDLE:
            return IdleTimeout("idle timeout")
        if t.cause == qc.CAUSE_RESET:
            return ConnectionLost("stateless reset by peer")
        if t.application:
            return ApplicationClosed(f"closed by peer: {text}", error_code=t.error_code, reason=t.reason)
        return TransportError(f"closed by peer: {text}", error_code=t.error_code, reason=t.reason)

    async def _open(self, uni: bool) -> int:
        while True:
            self._check_open()
            try:
                return self.quic.open_stream(uni)
            except StreamError:
                self._wake()  # STREAMS_BLOCKED goes out
                await self._progress.wait()

    async def open_bi(self) -> tuple[EngineSendStream, EngineRecvStream]:
        """A new bidirectional stream; waits while the peer's stream limit is reached."""
        sid = await self._open(False)
        send = self.send_stream_type(self, sid)
        recv = self.recv_stream_type(self, sid)
        self._send[sid] = send
        self._recv[sid] = recv
        return send, recv

    async def open_uni(self) -> EngineSendStream:
        sid = await self._open(True)
        send = self.send_stream_type(self, sid)
        self._send[sid] = send
        return send

    async def accept_bi(self) -> tuple[EngineSendStream, EngineRecvStream]:
        while not self._incoming_bi:
            self._check_open()
            await self._arrivals.wait()
        return self._incoming_bi.popleft()

    async def accept_uni(self) -> EngineRecvStream:
        while not self._incoming_uni:
            self._check_open()
            await self._arrivals.wait()
        return self._incoming_uni.popleft()

    async def established(self) -> bool:
        """Wait for the handshake; True if the server accepted our 0-RTT data."""
        await asyncio.shield(self._established)
        return self.quic.early_data_accepted

    def send_datagram(self, data: bytes) -> None:
        self._check_open()
        self.quic.send_datagram(data)
        self._wake()

    async def read_datagram(self) -> bytes:
        while not self._datagrams:
            self._check_open()
            await self._arrivals.wait()
        data = self._datagrams.popleft()
        self._datagram_bytes -= len(data)
        return data

    async def open_path(self, addr: object, *, available: bool = True, relay: bool = False) -> int:
        """Open a multipath path to ``addr``; waits while the peer's IDs for it are on their
        way (right after the handshake), else PathError if the connection cannot."""
        while True:
            self._check_open()
            try:
                pid = self.quic.open_path(addr, self._engine._clock(), available=available, relay=relay)
            except PathError as exc:
                if exc.kind != "cids-blocked":
                    raise
                self._wake()  # PATH_CIDS_BLOCKED goes out
                await self._progress.wait()
                continue
            self._wake()
            return pid

    def close_path(self, path_id: int) -> None:
        self._check_open()
        self.quic.close_path(path_id, self._engine._clock())
        self._wake()

    def set_path_status(self, path_id: int, available: bool) -> None:
        self._check_open()
        self.quic.set_path_status(path_id, available)
        self._wake()

    async def path_outcome(self, path_id: int) -> bool:
        """Wait until path ``path_id`` validated (True) or was abandoned (False)."""
        while True:
            for ev in self.multipath_events:
                if ev.path_id == path_id:
                    return isinstance(ev, qc.PathEstablished)
            self._check_open()
            await self._paths_changed.wait()

    def set_local_addresses(self, addrs: list[tuple[str, int]]) -> None:
        """Our NAT-traversal candidates (a server announces them, a client names them in rounds)."""
        self._check_open()
        self.quic.set_local_addresses(addrs)
        self._wake()

    def initiate_nat_traversal_round(self) -> list[tuple[str, int]]:
        """Client: start a NAT-traversal round now; returns the server candidates probed."""
        self._check_open()
        probed = self.quic.initiate_nat_traversal_round(self._engine._clock())
        self._wake()
        return probed

    async def traversal_path(self) -> qc.TraversalPathOpened:
        """Client: wait for the first backup path NAT traversal opens."""
        while not self.traversal_paths:
            self._check_open()
            await self._paths_changed.wait()
        return self.traversal_paths[0]

    def request_key_update(self) -> None:
        """Move to fresh 1-RTT keys now (RFC 9001 §6); QuicError while the last update is unconfirmed."""
        self._check_open()
        self.quic.request_key_update()
        self._wake()

    def close(self, error_code: int = 0, reason: bytes = b"") -> None:
        """Close with an application error code; the peer sees code and reason."""
        if self.terminated is None:
            self.quic.close(error_code, reason)
            self._wake()

    async def closed(self) -> qc.ConnectionTerminated:
        """Wait until the connection ended, however it ended."""
        while self.terminated is None:
            await self._closed.wait()
        return self.terminated

    def __repr__(self) -> str:
        peer = self.peer_id.hex()[:10] if self.peer_id else "?"
        return f"EngineConnection(peer={peer}, remote={self.remote_addr})"


class QuicEngine:
    """Drives a :class:`QuicEndpoint` from asyncio over one UDP socket (or any batch sender)."""

    def __init__(self, core: QuicEndpoint, sender: Sender) -> None:
        # Credit follows the application's reads, so one that never reads holds at most the
        # receive windows (the streams here report what was read).
        core.config.transport = replace(core.config.transport, read_credit=True)
        self.core = core
        self._sender = sender
        self._loop = asyncio.get_running_loop()
        self._conns: dict[qc.QuicConnection, EngineConnection] = {}
        self._accept: deque[EngineConnection] = deque()
        self._accepted = Notify()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = -1.0
        self._now = 0.0
        self._flush_scheduled = False
        self._closed = False
        #: Inside a pass's event dispatch, and whether it woke a connection.
        self._dispatching = False
        self._woken = False
        self._socket: UdpSocket | None = None
        #: Core passes run, for tests and benches to see batching at work.
        self.passes = 0
        #: What connections are made as (a subclass adds an application's API).
        self.connection_type: Callable[[QuicEngine, qc.QuicConnection], EngineConnection] = EngineConnection
        #: Established server connections wait for accept(); False: the owner takes them itself.
        self.queue_accepted = True
        #: Told of each connection an Initial created, before anything reads its events.
        self.on_new: Callable[[EngineConnection], None] | None = None
        #: Told of each connection the core let go (closed and drained).
        self.on_gone: Callable[[EngineConnection], None] | None = None
        #: With ``offer_initials``: told of each new offer, to decide on with
        #: :meth:`accept_offer`, :meth:`refuse_offer` or :meth:`ignore_offer` (else all are accepted).
        self.on_offer: Callable[[Offer], None] | None = None

    @classmethod
    async def bind(
        cls, secret_key: bytes, *, host: str = "127.0.0.1", port: int = 0, config: EndpointConfig | None = None
    ) -> QuicEngine:
        """An engine on a fresh UDP socket of its own."""
        engine = cls(QuicEndpoint(secret_key, config), lambda datagrams, addr: None)
        sock = UdpSocket.bind(host, port, engine.receive)
        engine._socket = sock
        engine._sender = sock.send_batch
        return engine

    @property
    def local_addr(self) -> SockAddr:
        if self._socket is None:
            raise EndpointClosed("the engine has no socket of its own")
        return self._socket.local_addr

    async def __aenter__(self) -> QuicEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the core passes ----------------------------------------------------------------

    def receive(self, batch: Sequence[tuple[bytes, object]], sock: object = None) -> None:
        """A receive burst from the socket layer: one core pass."""
        if not self._closed:
            self._pass(batch)

    def _pass(self, batch: Sequence[tuple[bytes, object]]) -> None:
        now = self._loop.time()
        if self._timer_at >= 0.0 and now < self._timer_at <= now + 1e-3:
            # The loop may run a timer a hair early; a pass at the deadline runs what is due.
            now = self._timer_at
        if now < self._now:
            now = self._now  # never backwards, or an RTT sample could go negative
        self._now = now
        self.passes += 1
        core = self.core
        transmits, created, deadline = core.poll(batch, now)
        on_new = self.on_new
        for quic in created:
            conn = self._conns[quic] = self.connection_type(self, quic)
            if on_new is not None:
                on_new(conn)
        send = self._sender
        for t in transmits:
            send(t.datagrams, t.addr)
        self._dispatching = True
        try:
            self._dispatch()
            for offer in core.offers():
                if self.on_offer is not None:
                    self.on_offer(offer)
                else:
                    self.accept_offer(offer)
            for _ in range(FOLLOW_UPS):
                if not self._woken:
                    break
                self._woken = False
                for t in core.transmits(now):
                    send(t.datagrams, t.addr)
                self._dispatch()
        finally:
            self._dispatching = False
        if self._woken:
            self._woken = False
            self._schedule_flush()
        self._arm(core.deadline())

    def _dispatch(self) -> None:
        conns = self._conns
        for quic in self.core.touched():
            conn = conns.get(quic)
            if conn is None:
                continue
            was_established = conn._established.done()
            while (ev := quic.next_event()) is not None:
                conn._on_event(ev)
            conn._progress.notify_all()
            if (
                self.queue_accepted
                and not was_established
                and not quic.is_client
                and conn.terminated is None
                and conn._established.done()
            ):
                if len(self._accept) < MAX_ACCEPT_QUEUE:
                    self._accept.append(conn)
                    self._accepted.notify_all()
                else:
                    quic.close(CONNECTION_REFUSED, b"accept queue full", application=False)
                    self._wake(quic)
            if quic.is_closed:
                del conns[quic]
                if self.on_gone is not None:
                    self.on_gone(conn)

    def _arm(self, deadline: float | None) -> None:
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = -1.0
        if deadline is not None and not self._closed:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _clock(self) -> float:
        """Now, never before the last core pass."""
        now = self._loop.time()
        return now if now > self._now else self._now

    def _on_timer(self) -> None:
        self._timer = None
        self._pass(())

    def _wake(self, quic: qc.QuicConnection) -> None:
        self.core.wake(quic)
        if self._dispatching:
            self._woken = True
        else:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._closed:
            self._pass(())

    # -- application API ----------------------------------------------------------------

    async def connect(
        self, addr: object, endpoint_id: bytes, alpn: bytes, *, timeout: float = 10.0, zero_rtt: bool = False
    ) -> EngineConnection:
        """Dial ``addr``, authenticating the peer as ``endpoint_id``.

        ``zero_rtt``: when the config's ticket cache holds a ticket for the peer, return at once
        so what is written now goes as 0-RTT data (replayable: idempotent requests only);
        :meth:`EngineConnection.established` then says whether the server took it.
        """
        conn = self.dial(addr, endpoint_id, alpn)
        quic = conn.quic
        if zero_rtt and quic.early_data_state == qc.EARLY_DATA_ATTEMPTED:
            return conn
        try:
            await asyncio.wait_for(asyncio.shield(conn._established), timeout)
        except asyncio.TimeoutError:
            conn.close(0, b"connect timeout")
            raise ConnectTimeout(f"no handshake with {addr} within {timeout} s") from None
        except ConnectionLost as exc:
            raise ConnectError(f"connecting to {addr} failed: {exc}") from exc
        return conn

    def dial(self, addr: object, endpoint_id: bytes, alpn: bytes) -> EngineConnection:
        """Start dialing and return at once; :meth:`connect` is this and the wait."""
        if self._closed:
            raise EndpointClosed("engine is closed")
        quic = self.core.connect(addr, endpoint_id, [alpn], self._clock())
        conn = self._conns[quic] = self.connection_type(self, quic)
        self._wake(quic)
        return conn

    def dial_with(self, addr: object, handshake: Handshake, transport: qc.QuicConfig) -> EngineConnection:
        """Dial with other TLS and transport settings than the endpoint's (a relay's QAD
        service, say); the connection is a plain :class:`EngineConnection`."""
        if self._closed:
            raise EndpointClosed("engine is closed")
        quic = self.core.connect(addr, b"", [], self._clock(), handshake=handshake, transport=transport)
        conn = self._conns[quic] = EngineConnection(self, quic)
        self._wake(quic)
        return conn

    def accept_offer(self, offer: Offer) -> EngineConnection:
        """Start the handshake an offer asked for; the connection is accept()ed once established."""
        if self._closed:
            raise EndpointClosed("engine is closed")
        quic = self.core.accept(offer, self._clock())
        conn = self._conns[quic] = self.connection_type(self, quic)
        if self.on_new is not None:
            self.on_new(conn)
        self._wake(quic)
        return conn

    def refuse_offer(self, offer: Offer) -> None:
        """Answer CONNECTION_REFUSED without a handshake."""
        if not self._closed:
            self.core.refuse(offer, self._clock())
            self._schedule_flush()

    def ignore_offer(self, offer: Offer) -> None:
        if not self._closed:
            self.core.ignore(offer, self._clock())

    async def accept(self) -> EngineConnection:
        """The next established incoming connection."""
        while not self._accept:
            if self._closed:
                raise EndpointClosed("engine is closed")
            await self._accepted.wait()
        return self._accept.popleft()

    async def close(self) -> None:
        """Close every connection, send their CONNECTION_CLOSE frames, then the socket."""
        if self._closed:
            return
        for conn in list(self._conns.values()):
            conn.close(0, b"")
        self._pass(())
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._accepted.notify_all()
        for conn in self._conns.values():
            if conn.terminated is None:
                conn.terminated = qc.ConnectionTerminated(0, b"engine closed", 0, True, qc.CAUSE_LOCAL)
                conn._on_event(conn.terminated)
            if self.on_gone is not None:
                self.on_gone(conn)
        self._conns.clear()
        if self._socket is not None:
            self._socket.close()
        await asyncio.sleep(0)
