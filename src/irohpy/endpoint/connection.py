"""A QUIC connection to one remote endpoint, authenticated by its key."""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from aioquic.quic import events

from irohpy.base.keys import EndpointId
from irohpy.base.notify import Notify
from irohpy.endpoint.quic import EndpointQuic
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
from irohpy.socket.mapped import MappedAddr
from irohpy.socket.paths import PathEvent, PathInfo, PathKey, is_relay

if TYPE_CHECKING:
    from irohpy.endpoint.dispatch import Dispatcher

# Received datagrams the application has not read yet (iroh: 1.25 MB).
DATAGRAM_RECV_BUFFER = 1_250_000
# QUIC short header + AEAD tag + DATAGRAM frame header, with our 8-byte CIDs.
DATAGRAM_OVERHEAD = 1 + 8 + 4 + 16 + 1 + 4

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
    """An open connection; the same object on the dialing and accepting side."""

    def __init__(self, dispatcher: Dispatcher, quic: EndpointQuic, mapped: MappedAddr, side: Side) -> None:
        self._dispatcher = dispatcher
        self._quic = quic
        self._mapped = mapped
        self.side = side
        self.stable_id = next(_stable_ids)
        self.remote_id: EndpointId | None = None
        self.alpn: bytes | None = None
        self._send: dict[int, SendStream] = {}
        self._recv: dict[int, RecvStream] = {}
        self._incoming_bi: deque[int] = deque()
        self._incoming_uni: deque[int] = deque()
        self._accept = Notify()
        self._waiting_send: set[SendStream] = set()
        self._datagrams: deque[bytes] = deque()
        self._datagram_bytes = 0
        self._datagram_notify = Notify()
        loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[ConnectionLost] = loop.create_future()
        self._terminated = False
        self.zero_rtt_accepted = False
        # For the endpoint's metrics: whether this connection counted as opened, and why
        # it failed if it never did.
        self.counted_open = False
        self.fail_reason = "handshake_failed"
        self._local_close: tuple[int, bytes] | None = None
        self._keepalive_at: float | None = None
        self._timer_at: float | None = None
        self._pinned: PathKey | None = None
        self.tx_datagrams = 0
        self.tx_bytes = 0
        self.rx_datagrams = 0
        self.rx_bytes = 0

    # -- streams --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._terminated:
            raise self._close_error()

    async def open_bi(self) -> tuple[SendStream, RecvStream]:
        self._check_open()
        sid = self._quic.get_next_available_stream_id(is_unidirectional=False)
        self._quic._get_or_create_stream_for_send(sid)
        send, recv = SendStream(self, sid), RecvStream(self, sid)
        self._send[sid], self._recv[sid] = send, recv
        return send, recv

    async def open_uni(self) -> SendStream:
        self._check_open()
        sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic._get_or_create_stream_for_send(sid)
        send = self._send[sid] = SendStream(self, sid)
        return send

    async def accept_bi(self) -> tuple[SendStream, RecvStream]:
        while not self._incoming_bi:
            self._check_open()
            await self._accept.wait()
        sid = self._incoming_bi.popleft()
        return self._send[sid], self._recv[sid]

    async def accept_uni(self) -> RecvStream:
        while not self._incoming_uni:
            self._check_open()
            await self._accept.wait()
        return self._recv[self._incoming_uni.popleft()]

    # -- datagrams ------------------------------------------------------------

    def max_datagram_size(self) -> int | None:
        """Largest datagram payload the peer accepts now; None if it takes none."""
        remote = self._quic._remote_max_datagram_frame_size
        if remote is None:
            return None
        return min(remote, self._quic._max_datagram_size - DATAGRAM_OVERHEAD)

    def send_datagram(self, data: bytes) -> None:
        """Unreliable, unordered; dropped rather than queued when the path is busy."""
        self._check_open()
        limit = self.max_datagram_size()
        if limit is None:
            raise DatagramError("the peer does not accept datagrams")
        if len(data) > limit:
            raise DatagramError(f"datagram of {len(data)} bytes exceeds the maximum of {limit}")
        self._quic.send_datagram_frame(bytes(data))
        self._wake()

    async def read_datagram(self) -> bytes:
        while not self._datagrams:
            self._check_open()
            await self._datagram_notify.wait()
        data = self._datagrams.popleft()
        self._datagram_bytes -= len(data)
        return data

    # -- lifecycle ------------------------------------------------------------

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
        if self._terminated:
            return
        self._local_close = (error_code, bytes(reason))
        self._quic.close(error_code=error_code, reason_phrase=bytes(reason).decode("utf-8", "replace"))
        self._wake()
        self._mark_terminated()

    async def closed(self) -> ConnectionLost:
        """Wait until the connection ends; the error says why."""
        return await asyncio.shield(self._closed)

    def close_reason(self) -> ConnectionLost | None:
        return self._closed.result() if self._closed.done() else None

    @property
    def is_closed(self) -> bool:
        return self._terminated

    @property
    def path(self) -> PathKey | None:
        """The path datagrams take now: ``(host, port)`` for direct UDP, or a RelayPath."""
        remote = self._dispatcher.remotes.get(self._mapped)
        return remote.paths.selected if remote is not None else None

    @property
    def is_direct(self) -> bool:
        """True while traffic takes a direct UDP path rather than a relay."""
        path = self.path
        return path is not None and not is_relay(path)

    def paths(self) -> list[PathInfo]:
        """Every path we know to the remote: kind, address, RTT, whether selected, bytes."""
        remote = self._dispatcher.remotes.get(self._mapped)
        if remote is None:
            return []
        infos = remote.paths.infos()
        return [replace(i, rtt=self.rtt) if i.selected and i.rtt is None else i for i in infos]

    async def path_events(self) -> AsyncIterator[PathEvent]:
        """Path changes as they happen (selected, validated, lost, fallback), until the connection ends."""
        remote = self._dispatcher.remotes.get(self._mapped)
        if remote is None:
            return
        queue = remote.subscribe()
        try:
            while not self._closed.done():
                getter = asyncio.ensure_future(queue.get())
                try:
                    await asyncio.wait([getter, self._closed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()
                if getter.cancelled():
                    break
                yield getter.result()
        finally:
            current = self._dispatcher.remotes.get(self._mapped)
            for state in {id(remote): remote, id(current): current}.values():
                if state is not None:
                    state.unsubscribe(queue)

    @property
    def rtt(self) -> float:
        """Smoothed round-trip time in seconds."""
        loss = self._quic._loss
        return loss._rtt_smoothed if loss._rtt_initialized else loss._rtt_initial

    def stats(self) -> ConnectionStats:
        return ConnectionStats(
            udp_tx_datagrams=self.tx_datagrams,
            udp_tx_bytes=self.tx_bytes,
            udp_rx_datagrams=self.rx_datagrams,
            udp_rx_bytes=self.rx_bytes,
            lost_packets=self._quic.lost_packets,
            lost_bytes=self._quic.lost_bytes,
            rtt=self.rtt,
            cwnd=self._quic._loss.congestion_window,
        )

    # -- driven by the dispatcher ----------------------------------------------

    def _wake(self) -> None:
        self._dispatcher.wake(self)

    def _consumed(self, stream_id: int, nbytes: int) -> None:
        if self._quic.consume(stream_id, nbytes):
            self._wake()

    def _close_error(self) -> ConnectionLost:
        if self._closed.done():
            return self._closed.result()
        return LocallyClosed("connection closed")

    def _mark_terminated(self) -> None:
        if self._terminated:
            return
        self._terminated = True
        self._closed.set_result(self._describe_close())
        if not self._handshake.done():
            self._handshake.set_exception(self._closed.result())
            self._handshake.exception()
        for recv in self._recv.values():
            recv._on_conn_closed()
        self._wake_writers()
        self._accept.notify_all()
        self._datagram_notify.notify_all()

    def _describe_close(self) -> ConnectionLost:
        if self._local_close is not None:
            code, reason = self._local_close
            return LocallyClosed(f"closed locally (code {code})", error_code=code, reason=reason)
        quic = self._quic
        if quic.idle_timed_out:
            return IdleTimeout("connection timed out: nothing heard from the peer")
        event = quic._close_event
        if event is None:
            return LocallyClosed("connection closed")
        reason = event.reason_phrase.encode()
        who = "by peer" if quic.closed_by_peer else "locally"
        if event.frame_type is None and quic.closed_by_peer:
            text = event.reason_phrase
            return ApplicationClosed(
                f"closed by peer: {text} (code {event.error_code})" if text else
                f"closed by peer (code {event.error_code})",
                error_code=event.error_code, reason=reason)
        return TransportError(
            f"connection aborted {who}: error 0x{event.error_code:x}: {event.reason_phrase}",
            error_code=event.error_code, reason=reason)

    def _handle_events(self) -> None:
        quic = self._quic
        while (event := quic.next_event()) is not None:
            kind = type(event)
            if kind is events.StreamDataReceived:
                self._on_stream_data(event.stream_id, event.data, event.end_stream)
            elif kind is events.DatagramFrameReceived:
                self._on_datagram(event.data)
            elif kind is events.StreamReset:
                self._recv_for(event.stream_id)._on_reset(event.error_code)
            elif kind is events.StopSendingReceived:
                send = self._send.get(event.stream_id)
                if send is not None:
                    send._on_stop_sending(event.error_code)
            elif kind is events.HandshakeCompleted:
                self._dispatcher.on_handshake(self, event)
            elif kind is events.ConnectionIdIssued:
                self._dispatcher.add_cid(event.connection_id, self)
            elif kind is events.ConnectionIdRetired:
                self._dispatcher.remove_cid(event.connection_id)
            elif kind is events.ConnectionTerminated:
                self._mark_terminated()
                self._dispatcher.remove(self)
        if not self._terminated and quic._close_event is not None:
            self._mark_terminated()
        if self._waiting_send:
            self._wake_writers()
        if len(self._send) + len(self._recv) > 2 * len(quic._streams) + 32:
            self._prune_streams()

    def _wake_writers(self) -> None:
        waiting, self._waiting_send = self._waiting_send, set()
        for send in waiting:
            send._on_progress()

    def _prune_streams(self) -> None:
        """Forget routing for streams aioquic has discarded; their objects live on."""
        live = self._quic._streams
        pending = set(self._incoming_bi) | set(self._incoming_uni)
        for table in (self._send, self._recv):
            for sid in [sid for sid in table if sid not in live and sid not in pending]:
                del table[sid]

    def _recv_for(self, stream_id: int) -> RecvStream:
        recv = self._recv.get(stream_id)
        if recv is None:
            recv = self._recv[stream_id] = RecvStream(self, stream_id)
            is_bi = not (stream_id & 2)
            if is_bi:
                self._send[stream_id] = SendStream(self, stream_id)
                self._incoming_bi.append(stream_id)
            else:
                self._incoming_uni.append(stream_id)
            self._accept.notify_all()
        return recv

    def _on_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self._recv_for(stream_id)._on_data(data, end_stream)

    def _on_datagram(self, data: bytes) -> None:
        self._datagrams.append(data)
        self._datagram_bytes += len(data)
        while self._datagram_bytes > DATAGRAM_RECV_BUFFER:
            self._datagram_bytes -= len(self._datagrams.popleft())
        self._datagram_notify.notify_all()

    def __repr__(self) -> str:
        remote = self.remote_id.fmt_short() if self.remote_id else "?"
        return f"Connection(remote={remote}, alpn={self.alpn!r}, side={self.side.value})"
