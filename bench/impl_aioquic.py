"""Baseline: raw aioquic 1.7.2, the QUIC engine irohpy is built on, with no iroh layer.

Streams are handled at the event level: aioquic's asyncio stream adapter
half-closes a stream when its unreferenced writer is garbage-collected
(aioquic-notes §3.5), and it would also add a reader/writer pair per stream.
Settings are aioquic's defaults (1 MiB flow-control windows, Reno) except the
datagram size, which is `Options.datagram_size` like irohpy's, with an Ed25519
self-signed certificate and no client auth.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from cryptography.hazmat.primitives import serialization

from bench import common

SERVER_NAME = "localhost"
SEND_BUFFER = 2 << 20
"""Unacknowledged bytes a writer may leave queued before `write` waits.

aioquic queues any amount without back-pressure; this bound makes its `write`
behave like a flow-controlled one, as in the aioquic-notes §6 baseline.
"""


class _ServerProtocol(QuicConnectionProtocol):
    """Feeds stream events straight into the shared sans-IO server state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._states: dict[int, common.ServerStream] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if not isinstance(event, events.StreamDataReceived):
            return
        state = self._states.setdefault(event.stream_id, common.ServerStream())
        out, finish = state.feed(event.data, event.end_stream)
        if out or finish:
            self._quic.send_stream_data(event.stream_id, out, end_stream=finish)
        if event.end_stream:
            del self._states[event.stream_id]


async def serve(ready_cb: common.ReadyCallback, opts: common.Options) -> None:
    """Serve benchmark connections until cancelled."""
    key, cert = common.self_signed_ed25519()
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[common.ALPN.decode()],
        certificate=cert,
        private_key=key,
        max_datagram_size=opts.datagram_size,
    )
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: QuicServer(configuration=config, create_protocol=_ServerProtocol),
        local_addr=(common.HOST, 0),
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        ready_cb({"host": common.HOST, "port": port, "cert_pem": cert_pem})
        await asyncio.Future()
    finally:
        server.close()


class _ClientProtocol(QuicConnectionProtocol):
    """One client connection with per-stream receive buffers and one wake-up future all streams share."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self._rx: dict[int, bytearray] = {}
        self._eof: set[int] = set()
        self._terminated: events.ConnectionTerminated | None = None
        self._wakeup: asyncio.Future[None] | None = None

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._rx.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self._eof.add(event.stream_id)
            self._wake()
        elif isinstance(event, events.ConnectionTerminated):
            self._terminated = event
            self._wake()

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        super().datagram_received(data, addr)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _progress(self) -> None:
        """Wait for the next datagram or event, failing once the connection is gone."""
        if self._terminated is not None:
            raise ConnectionError(f"connection closed: {self._terminated.reason_phrase}")
        if self._wakeup is None or self._wakeup.done():
            self._wakeup = self._loop.create_future()
        await asyncio.shield(self._wakeup)  # shared by every waiting stream

    def _unacked(self, stream_id: int) -> int:
        # aioquic exposes no send-buffer level; the sender's private offsets are
        # the acknowledged prefix and the end of the queued data.
        sender = self._quic._streams[stream_id].sender
        return sender._buffer_stop - sender._buffer_start

    async def write(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()
        while self._unacked(stream_id) > SEND_BUFFER:
            await self._progress()

    async def read(self, stream_id: int, n: int, exact: bool) -> bytes:
        buf = self._rx.setdefault(stream_id, bytearray())
        while len(buf) < n and stream_id not in self._eof:
            await self._progress()
        if exact and len(buf) < n:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        data = bytes(buf[:n])
        del buf[:n]
        return data


class _Stream:
    def __init__(self, proto: _ClientProtocol, stream_id: int) -> None:
        self._proto = proto
        self._id = stream_id

    async def write(self, data: bytes) -> None:
        await self._proto.write(self._id, data)

    async def finish(self) -> None:
        await self._proto.write(self._id, b"", end=True)

    async def read_exact(self, n: int) -> bytes:
        return await self._proto.read(self._id, n, exact=True)

    async def read_to_end(self, limit: int) -> bytes:
        data = await self._proto.read(self._id, limit + 1, exact=False)
        if len(data) > limit:
            raise ValueError(f"reply longer than {limit} bytes")
        return data


class _Conn:
    def __init__(self, proto: _ClientProtocol) -> None:
        self._proto = proto

    async def open_stream(self) -> _Stream:
        quic = self._proto._quic
        stream_id = quic.get_next_available_stream_id()
        quic._get_or_create_stream_for_send(stream_id)  # so the next call picks a new id
        return _Stream(self._proto, stream_id)

    def is_open(self) -> bool:
        return self._proto._terminated is None

    async def close(self) -> None:
        """Send CONNECTION_CLOSE; draining finishes on the connection's own timer."""
        self._proto.close()


class _Mux(asyncio.DatagramProtocol):
    """The client socket: datagrams go to the connection their destination CID names.

    Every connection uses aioquic's 8-byte CIDs; the map learns the CIDs a
    connection issues later when a datagram names one it does not know yet.
    """

    def __init__(self) -> None:
        self.protocols: list[_ClientProtocol] = []
        self._by_cid: dict[bytes, _ClientProtocol] = {}

    def add(self, proto: _ClientProtocol) -> None:
        self.protocols.append(proto)
        self._by_cid[proto._quic.host_cid] = proto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data:
            return
        cid = data[6 : 6 + data[5]] if data[0] & 0x80 and len(data) > 6 else data[1:9]
        proto = self._by_cid.get(cid)
        if proto is None:
            self.protocols = [p for p in self.protocols if p._terminated is None]
            self._by_cid = {c.cid: p for p in self.protocols for c in p._quic._host_cids}
            proto = self._by_cid.get(cid)
        if proto is not None:
            proto.datagram_received(data, addr)


class _Dialer:
    """One UDP socket shared by every connection, like an endpoint."""

    stream_per_connection = False

    def __init__(self, info: common.ServerInfo, transport: asyncio.DatagramTransport,
                 mux: _Mux, opts: common.Options) -> None:
        self._addr = (info["host"], info["port"])
        self._transport = transport
        self._mux = mux
        self._config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[common.ALPN.decode()],
            server_name=SERVER_NAME,
            verify_mode=ssl.CERT_REQUIRED,
            cadata=info["cert_pem"].encode(),
            max_datagram_size=opts.datagram_size,
        )

    @classmethod
    async def bind(cls, info: common.ServerInfo, opts: common.Options) -> _Dialer:
        transport, mux = await asyncio.get_running_loop().create_datagram_endpoint(
            _Mux, local_addr=(common.HOST, 0)
        )
        return cls(info, transport, mux, opts)

    async def connect(self) -> _Conn:
        proto = _ClientProtocol(QuicConnection(configuration=self._config))
        proto.connection_made(self._transport)
        self._mux.add(proto)
        proto.connect(self._addr)
        await proto.wait_connected()
        return _Conn(proto)

    async def connect_0rtt(self) -> None:
        """Not measured: the baseline keeps aioquic's defaults, which store no session tickets."""

    async def aclose(self) -> None:
        self._transport.close()


async def run_client(server_info: common.ServerInfo, args: common.Params,
                     opts: common.Options) -> dict[str, Any]:
    """Measure this server with the shared driver."""
    dialer = await _Dialer.bind(server_info, opts)
    try:
        return await common.run_metrics(dialer, args)
    finally:
        await dialer.aclose()
