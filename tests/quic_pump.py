"""A minimal UDP driver for aioquic connections, for tests only.

One socket on loopback carries any number of dialed and accepted connections, routed by
destination connection ID; each connection's events are kept on a :class:`PumpedConnection`
that tests can await. The real socket layer is ``irohpy.socket``; this exists so the TLS layer
can be tested against the reference peer on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

CID_LENGTH = 8
MIN_INITIAL_SIZE = 1200
Addr = tuple[str, int]


class ConnectionClosed(Exception):
    """The connection ended before what a test waited for happened."""

    def __init__(self, event: events.ConnectionTerminated) -> None:
        super().__init__(f"closed with 0x{event.error_code:x}: {event.reason_phrase}")
        self.error_code = event.error_code
        self.reason = event.reason_phrase


class PumpedConnection:
    """One QuicConnection on a pump, with what it has received so far."""

    def __init__(self, pump: QuicPump, quic: QuicConnection, addr: Addr) -> None:
        self.pump = pump
        self.quic = quic
        self.addr = addr
        self.handshake: events.HandshakeCompleted | None = None
        self.terminated: events.ConnectionTerminated | None = None
        self.streams: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self._waiters: list[asyncio.Future[None]] = []

    def _on_event(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.handshake = event
        elif isinstance(event, events.StreamDataReceived):
            self.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.ended.add(event.stream_id)
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            if self.terminated is not None:
                raise ConnectionClosed(self.terminated)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def wait_handshake(self) -> events.HandshakeCompleted:
        await self._until(lambda: self.handshake is not None)
        assert self.handshake is not None
        return self.handshake

    async def wait_closed(self) -> events.ConnectionTerminated:
        while self.terminated is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self.terminated

    async def accept_stream(self) -> int:
        await self._until(lambda: bool(self.streams))
        return min(self.streams)

    async def read_stream(self, stream_id: int) -> bytes:
        """Everything the peer sent on ``stream_id``, once it finished the stream."""
        await self._until(lambda: stream_id in self.ended)
        return bytes(self.streams[stream_id])

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self.pump.service(self)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.pump.service(self)


class QuicPump(asyncio.DatagramProtocol):
    """Moves datagrams between one UDP socket and the connections using it."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._routes: dict[bytes, PumpedConnection] = {}
        self._timers: dict[PumpedConnection, asyncio.TimerHandle] = {}
        self._accept: Callable[[bytes], QuicConnection] | None = None
        self.incoming: asyncio.Queue[PumpedConnection] = asyncio.Queue()

    @classmethod
    async def bind(cls, host: str = "127.0.0.1") -> QuicPump:
        pump = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: pump, local_addr=(host, 0))
        return pump

    @property
    def addr(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def listen(self, factory: Callable[[bytes], QuicConnection]) -> None:
        """Accept connections: ``factory`` gets the client's original destination CID."""
        self._accept = factory

    def dial(self, quic: QuicConnection, addr: Addr) -> PumpedConnection:
        conn = PumpedConnection(self, quic, addr)
        self._routes[quic.host_cid] = conn
        quic.connect(addr, now=self._now())
        self.service(conn)
        return conn

    def datagram_received(self, data: bytes, addr: Addr) -> None:  # type: ignore[override]
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return
        conn = self._routes.get(header.destination_cid)
        if conn is None:
            if (
                self._accept is None
                or header.packet_type is not QuicPacketType.INITIAL
                or len(data) < MIN_INITIAL_SIZE
            ):
                return
            conn = PumpedConnection(self, self._accept(header.destination_cid), addr)
            self._routes[header.destination_cid] = conn
            self._routes[conn.quic.host_cid] = conn
            self.incoming.put_nowait(conn)
        conn.quic.receive_datagram(data, addr, now=self._now())
        self.service(conn)

    def service(self, conn: PumpedConnection) -> None:
        """Handle events, send what is due and rearm the timer, after anything touched ``conn``."""
        self._drain(conn)
        assert self._transport is not None
        for data, addr in conn.quic.datagrams_to_send(now=self._now()):
            self._transport.sendto(data, addr)
        self._drain(conn)
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if conn.terminated is None and (when := conn.quic.get_timer()) is not None:
            self._timers[conn] = asyncio.get_running_loop().call_at(when, self._on_timer, conn)
        conn._wake()

    def _on_timer(self, conn: PumpedConnection) -> None:
        self._timers.pop(conn, None)
        conn.quic.handle_timer(now=self._now())
        self.service(conn)

    def _drain(self, conn: PumpedConnection) -> None:
        while (event := conn.quic.next_event()) is not None:
            if isinstance(event, events.ConnectionIdIssued):
                self._routes[event.connection_id] = conn
            elif isinstance(event, events.ConnectionIdRetired):
                self._routes.pop(event.connection_id, None)
            elif isinstance(event, events.ConnectionTerminated):
                for cid in [cid for cid, c in self._routes.items() if c is conn]:
                    del self._routes[cid]
            conn._on_event(event)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._transport is not None:
            self._transport.close()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
