"""The subject: irohpy's Endpoint with the minimal preset, bound to 127.0.0.1.

With `Options.relay_url` both endpoints use that relay server in relay-only
mode (no UDP sockets, so no hole punching), so every packet is relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench import common
from irohpy import Endpoint, EndpointAddr, EndpointTicket, RelayMode, presets
from irohpy.errors import IrohError
from irohpy.socket.paths import RelayPath


async def _bind(alpns: list[bytes], opts: common.Options) -> Endpoint:
    relay = RelayMode.custom([opts.relay_url]) if opts.relay_url else None
    extra: dict[str, Any] = {} if opts.keep_alive is None else {"keep_alive": opts.keep_alive}
    return await Endpoint.bind(preset=presets.MINIMAL, alpns=alpns, relay_mode=relay,
                               bind_addrs=[f"{common.HOST}:0"], max_datagram_size=opts.datagram_size,
                               relay_only=opts.relay_url is not None, **extra)


class _Stream:
    """irohpy's (send, recv) pair as one benchmark stream."""

    def __init__(self, pair: tuple[Any, Any]) -> None:
        self._send, self._recv = pair

    async def read(self, n: int) -> bytes:
        data: bytes = await self._recv.read(n)
        return data

    async def write(self, data: bytes) -> None:
        await self._send.write_all(data)

    async def finish(self) -> None:
        await self._send.finish()

    async def read_exact(self, n: int) -> bytes:
        data: bytes = await self._recv.read_exact(n)
        return data

    async def read_to_end(self, limit: int) -> bytes:
        data: bytes = await self._recv.read_to_end(limit)
        return data


def _spawn(tasks: set[asyncio.Task[None]], coro: Any) -> None:
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _serve_conn(incoming: Any, tasks: set[asyncio.Task[None]]) -> None:
    try:
        conn = await incoming.accept()
        while True:
            _spawn(tasks, _serve_stream(_Stream(await conn.accept_bi())))
    except IrohError:
        pass  # the client closed the connection


async def _serve_stream(stream: _Stream) -> None:
    with contextlib.suppress(IrohError):  # the connection went away mid-stream
        await common.serve_stream(stream)


async def serve(ready_cb: common.ReadyCallback, opts: common.Options) -> None:
    """Serve benchmark connections until cancelled."""
    ep = await _bind([common.ALPN], opts)
    tasks: set[asyncio.Task[None]] = set()
    try:
        addr = ep.addr()
        if opts.relay_url:
            addr = EndpointAddr.from_id(ep.id).with_relay_url(opts.relay_url)
        ready_cb({"ticket": str(EndpointTicket(addr))})
        while (incoming := await ep.accept()) is not None:
            _spawn(tasks, _serve_conn(incoming, tasks))
    finally:
        for task in list(tasks):
            task.cancel()
        await ep.close()


class _Conn:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def open_stream(self) -> _Stream:
        return _Stream(await self._conn.open_bi())

    def is_open(self) -> bool:
        return not self._conn.is_closed

    def path_name(self) -> str:
        """Which path the data took: the relay, or direct UDP."""
        path = self._conn.path
        return "relay" if isinstance(path, RelayPath) else "direct" if path else "none"

    async def close(self) -> None:
        self._conn.close(0, b"")


class _Dialer:
    """One client endpoint for every connection."""

    stream_per_connection = False

    def __init__(self, ep: Endpoint, ticket: str) -> None:
        self._ep = ep
        self._ticket = EndpointTicket.parse(ticket)

    async def connect(self) -> _Conn:
        return _Conn(await self._ep.connect(self._ticket, common.ALPN,
                                            timeout=common.CONNECT_TIMEOUT))

    async def connect_0rtt(self) -> _Conn:
        return _Conn(await self._ep.connect(self._ticket, common.ALPN,
                                            timeout=common.CONNECT_TIMEOUT, zero_rtt=True))

    async def aclose(self) -> None:
        await self._ep.close()


async def run_client(server_info: common.ServerInfo, args: common.Params,
                     opts: common.Options) -> dict[str, Any]:
    """Measure this server with the shared driver."""
    dialer = _Dialer(await _bind([], opts), server_info["ticket"])
    try:
        return await common.run_metrics(dialer, args)
    finally:
        await dialer.aclose()
