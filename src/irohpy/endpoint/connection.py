"""A QUIC connection to one remote endpoint, authenticated by its key."""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from irohpy.base.keys import EndpointId
from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import (
    ApplicationClosed,
    ConnectError,
    ConnectionLost,
    DatagramError,
    IdleTimeout,
    LocallyClosed,
    TransportError,
)
from irohpy.quic import connection as qc
from irohpy.quic.pmtud import BASE_MTU
from irohpy.socket.paths import PathEvent, PathInfo, PathKey, is_relay, offer

if TYPE_CHECKING:
    from irohpy.endpoint.engine_socket import SocketBridge
    from irohpy.socket.remote_map import RemoteState

# QUIC short header (a CID of up to 20 bytes, a 4-byte packet number) + AEAD tag + DATAGRAM
# frame header: datagrams are not split, so one must fit QUIC's base 1200 bytes.
DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 3

_stable_ids = itertools.count(1)


class Side(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class ConnectionStats:
    udp_tx_datagrams: int
    udp_tx_bytes: int
    udp_rx_datagrams: int
    udp_rx_bytes: int
    lost_packets: int
    lost_bytes: int
    rtt: float
    cwnd: int


class Connection:
    """An open connection; the same object on the dialing and accepting side.

    It wraps the engine's :class:`EngineConnection` rather than subclassing it: the engine's
    driver may be compiled (docs/build.md), and a compiled class has no Python subclasses.
    """

    def __init__(self, engine: QuicEngine, quic: qc.QuicConnection) -> None:
        inner = EngineConnection(engine, quic)
        inner.send_stream_type = SendStream
        inner.recv_stream_type = RecvStream
        inner.on_event = self._on_event
        self._inner = inner
        self._engine = engine
        self.quic = quic
        self.side = Side.CLIENT if quic.is_client else Side.SERVER
        self.stable_id = next(_stable_ids)
        self.remote_id: EndpointId | None = None
        self.alpn: bytes | None = None
        loop = asyncio.get_running_loop()
        #: Done once the handshake and the after_handshake hooks passed.
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._closed_fut: asyncio.Future[ConnectionLost] = loop.create_future()
        self.zero_rtt_accepted = False
        # For the endpoint's metrics: whether this connection counted as opened, and why
        # it failed if it never did.
        self.counted_open = False
        self.fail_reason = "handshake_failed"
        self._local_close: tuple[int, bytes] | None = None
        #: Set by the endpoint: the socket layer (paths, traffic) and its handshake callback.
        self._bridge: SocketBridge | None = None
        self._on_handshake: Callable[[Connection], None] | None = None
        #: The remote's state, once the handshake named the remote.
        self._remote: RemoteState | None = None
        #: The path-event queues our path_events() iterators read; each gets None at the end.
        self._path_queues: list[asyncio.Queue[PathEvent | None]] = []

    @property
    def peer_id(self) -> bytes | None:
        """The peer's key as the handshake authenticated it; None before."""
        return self._inner.peer_id

    @property
    def terminated(self) -> qc.ConnectionTerminated | None:
        """How the QUIC connection ended, once it did."""
        return self._inner.terminated

    # -- streams ----------------------------------------------------------------------------

    async def open_bi(self) -> tuple[SendStream, RecvStream]:
        send, recv = await self._inner.open_bi()
        return cast(SendStream, send), cast(RecvStream, recv)

    async def open_uni(self) -> SendStream:
        return cast(SendStream, await self._inner.open_uni())

    async def accept_bi(self) -> tuple[SendStream, RecvStream]:
        send, recv = await self._inner.accept_bi()
        return cast(SendStream, send), cast(RecvStream, recv)

    async def accept_uni(self) -> RecvStream:
        return cast(RecvStream, await self._inner.accept_uni())

    # -- datagrams ------------------------------------------------------------------------

    def max_datagram_size(self) -> int | None:
        """Largest datagram payload the peer accepts now; None if it takes none."""
        tp = self.quic.peer_transport_parameters
        if tp is None or not tp.max_datagram_frame_size:
            return None
        return min(tp.max_datagram_frame_size, BASE_MTU - DATAGRAM_OVERHEAD)

    def send_datagram(self, data: bytes) -> None:
        """Unreliable, unordered; dropped rather than queued when the path is busy."""
        self._check_open()
        limit = self.max_datagram_size()
        if limit is None:
            raise DatagramError("the peer does not accept datagrams")
        if len(data) > limit:
            raise DatagramError(f"datagram of {len(data)} bytes exceeds the maximum of {limit}")
        self._inner.send_datagram(bytes(data))

    async def read_datagram(self) -> bytes:
        return await self._inner.read_datagram()

    # -- lifecycle ------------------------------------------------------------------------

    async def handshake_confirmed(self) -> bool:
        """Wait for the handshake (and hooks) to finish; True if 0-RTT data was accepted.

        Only needed after ``connect(..., zero_rtt=True)``; other connections
        are returned complete.
        """
        try:
            await asyncio.shield(self._handshake)
        except ConnectionLost as exc:
            raise ConnectError(f"handshake failed: {exc}") from exc
        return self.zero_rtt_accepted

    def close(self, error_code: int = 0, reason: bytes = b"") -> None:
        """Close now with an application code; pending data is abandoned."""
        if self.terminated is not None or self._closed_fut.done():
            return
        self._local_close = (error_code, bytes(reason))
        self._inner.close(error_code, bytes(reason))
        self._mark_terminated()

    async def closed(self) -> ConnectionLost:
        """Wait until the connection ends; the error says why."""
        return await asyncio.shield(self._closed_fut)

    def close_reason(self) -> ConnectionLost | None:
        return self._closed_fut.result() if self._closed_fut.done() else None

    @property
    def is_closed(self) -> bool:
        return self.terminated is not None or self._local_close is not None

    # -- paths and stats ------------------------------------------------------------------

    @property
    def path(self) -> PathKey | None:
        """The path datagrams take now: ``(host, port)`` for direct UDP, or a RelayPath."""
        remote = self._remote
        return remote.selected if remote is not None else None

    @property
    def is_direct(self) -> bool:
        """True while traffic takes a direct UDP path rather than a relay."""
        path = self.path
        return path is not None and not is_relay(path)

    def paths(self) -> list[PathInfo]:
        """This connection's open paths: kind, address, RTT, whether selected, bytes."""
        remote = self._remote
        return remote.infos(self) if remote is not None else []

    async def path_events(self) -> AsyncIterator[PathEvent]:
        """Path changes of the remote as they happen (selected, validated, lost, fallback),
        until the connection ends."""
        remote = self._remote
        if remote is None:
            return
        queue = remote.subscribe()
        self._path_queues.append(queue)
        try:
            # Awaited directly: an event reaches us one loop iteration after it happened.
            while not self._closed_fut.done() and (event := await queue.get()) is not None:
                yield event
        finally:
            remote.unsubscribe(queue)
            self._path_queues.remove(queue)

    @property
    def rtt(self) -> float:
        """Smoothed round-trip time in seconds."""
        return self.quic.recovery.rtt.smoothed

    def stats(self) -> ConnectionStats:
        quic = self.quic
        tx_datagrams, tx_bytes = self._engine.core.sent(quic)
        rx_datagrams, rx_bytes = self._engine.core.received(quic)
        return ConnectionStats(
            udp_tx_datagrams=tx_datagrams,
            udp_tx_bytes=tx_bytes,
            udp_rx_datagrams=rx_datagrams,
            udp_rx_bytes=rx_bytes,
            lost_packets=quic.lost_packets,
            lost_bytes=quic.lost_bytes,
            rtt=self.rtt,
            cwnd=int(quic.recovery.cc.window),
        )

    # -- keys -----------------------------------------------------------------------------

    def request_key_update(self) -> None:
        """Move to fresh 1-RTT keys now (RFC 9001 §6); QuicError while the last update is unconfirmed."""
        self._inner.request_key_update()

    # -- driven by the engine -------------------------------------------------------------

    def _on_event(self, ev: qc.Event) -> None:
        """The engine connection's hook: every event but stream data, after it handled it."""
        if isinstance(ev, (qc.PathEstablished, qc.PathAbandoned, qc.RemoteCandidatesChanged)):
            if self._remote is not None:
                self._remote.on_event(self, ev, self._engine._clock())
                if self._bridge is not None:
                    self._bridge.schedule(self._remote)
        elif isinstance(ev, qc.HandshakeCompleted):
            self.alpn = ev.alpn
            self.zero_rtt_accepted = ev.early_data_accepted
            if self._on_handshake is not None and self.terminated is None:
                self._on_handshake(self)
        elif isinstance(ev, qc.ConnectionTerminated):
            self._mark_terminated()

    def _mark_terminated(self) -> None:
        if self._closed_fut.done():
            return
        error = self._describe_close()
        self._closed_fut.set_result(error)
        for queue in self._path_queues:
            offer(queue, None)
        self._inner.failure = error
        if not self._handshake.done():
            self._handshake.set_exception(error)
            self._handshake.exception()

    def _check_open(self) -> None:
        self._inner._check_open()

    def _wake(self) -> None:
        self._inner._wake()

    def _describe_close(self) -> ConnectionLost:
        if self._local_close is not None:
            code, reason = self._local_close
            return LocallyClosed(f"closed locally (code {code})", error_code=code, reason=reason)
        t = self.terminated
        if t is None:
            return LocallyClosed("connection closed")
        if t.cause == qc.CAUSE_IDLE:
            return IdleTimeout("connection timed out: nothing heard from the peer")
        if t.cause == qc.CAUSE_RESET:
            return ConnectionLost("connection reset by the peer (stateless reset)")
        text = t.reason.decode("utf-8", "replace")
        if t.cause == qc.CAUSE_PEER and t.application:
            return ApplicationClosed(
                f"closed by peer: {text} (code {t.error_code})" if text else f"closed by peer (code {t.error_code})",
                error_code=t.error_code,
                reason=t.reason,
            )
        who = "by peer" if t.cause == qc.CAUSE_PEER else "locally"
        return TransportError(
            f"connection aborted {who}: error 0x{t.error_code:x}: {text}", error_code=t.error_code, reason=t.reason
        )

    def __repr__(self) -> str:
        remote = self.remote_id.fmt_short() if self.remote_id else "?"
        return f"Connection(remote={remote}, alpn={self.alpn!r}, side={self.side.value})"
