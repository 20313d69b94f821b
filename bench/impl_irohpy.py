"""The subject: irohpy's Endpoint with the minimal preset, bound to 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench import common
from irohpy import Endpoint, EndpointTicket, presets
from irohpy.errors import IrohError


async def _bind(alpns: list[bytes] | None) -> Endpoint:
    if alpns is None:
        return await Endpoint.bind(preset=presets.MINIMAL, bind_addrs=[f"{common.HOST}:0"])
    return await Endpoint.bind(preset=presets.MINIMAL, alpns=alpns,
                               bind_addrs=[f"{common.HOST}:0"])


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


async def serve(ready_cb: common.ReadyCallback) -> None:
    """Serve benchmark connections until cancelled."""
    ep = await _bind([common.ALPN])
    tasks: set[asyncio.Task[None]] = set()
    try:
        ready_cb({"ticket": str(EndpointTicket(ep.addr()))})
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

    async def close(self) -> None:
        self._conn.close(0, b"")


class _Dialer:
    """One client endpoint for every connection."""

    def __init__(self, ep: Endpoint, ticket: str) -> None:
        self._ep = ep
        self._ticket = EndpointTicket.parse(ticket)

    async def connect(self) -> _Conn:
        return _Conn(await self._ep.connect(self._ticket, common.ALPN,
                                            timeout=common.CONNECT_TIMEOUT))

    async def aclose(self) -> None:
        await self._ep.close()


async def run_client(server_info: common.ServerInfo, args: common.Params) -> dict[str, Any]:
    """Measure this server with the shared driver."""
    dialer = _Dialer(await _bind(None), server_info["ticket"])
    try:
        return await common.run_metrics(dialer, args)
    finally:
        await dialer.aclose()
