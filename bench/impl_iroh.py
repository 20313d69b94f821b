"""The reference: Rust iroh 1.4.1 through the official `iroh` package (uniffi bindings).

iroh-stock is the package as shipped; iroh-patched applies `patch_fast_writes`
in both processes (reference-peer.md §10). Endpoints use `preset_minimal()`,
no relays and a 127.0.0.1 bind; the Rust stack still adds an IPv6 wildcard
socket and may probe the gateway, hence the loopback-only namespace check
the orchestrator does before importing this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from typing import Any, cast

import iroh

from bench import common


def patch_fast_writes() -> None:
    """Lower bytes into Rust buffers with one memmove instead of a per-byte Python loop.

    uniffi's generated glue copies every `bytes` argument byte by byte, which
    caps `SendStream.write*` at ~7 MB/s; patched is roughly Rust iroh itself.
    """

    def write(self: Any, value: bytes) -> None:
        n = len(value)
        with self._reserve(n):
            dst = ctypes.cast(self.rbuf.data, ctypes.c_void_p).value + self.rbuf.len
            ctypes.memmove(dst, bytes(value), n)

    iroh.iroh_ffi._UniffiRustBufferBuilder.write = write  # type: ignore[method-assign]


async def _bind(alpns: list[bytes] | None) -> Any:
    iroh.iroh_ffi.uniffi_set_event_loop(cast(asyncio.BaseEventLoop, asyncio.get_running_loop()))
    iroh.set_log_level(iroh.LogLevel.WARN)
    return await iroh.Endpoint.bind(iroh.EndpointOptions(
        preset=iroh.preset_minimal(),
        relay_mode=iroh.RelayMode.disabled(),
        bind_addr=f"{common.HOST}:0",
        alpns=alpns,
    ))


def _v4_ticket(ep: Any) -> str:
    """A ticket with only the 127.0.0.1 socket, so the client never tries [::1]."""
    sock = next(s for s in ep.bound_sockets() if s.startswith(common.HOST + ":"))
    addr = iroh.EndpointAddr(ep.id(), None, [sock])
    return str(iroh.EndpointTicket.from_addr(addr))


class _Stream:
    """A BiStream's halves, fetched once (each accessor call crosses the FFI)."""

    def __init__(self, bi: Any) -> None:
        self._send = bi.send()
        self._recv = bi.recv()

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


async def _serve_conn(incoming: Any, tasks: set[asyncio.Task[None]]) -> None:
    try:
        conn = await (await incoming.accept()).connect()
        while True:
            stream = _Stream(await conn.accept_bi())
            task = asyncio.create_task(_serve_stream(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except iroh.IrohError:
        pass  # the client closed the connection


async def _serve_stream(stream: _Stream) -> None:
    with contextlib.suppress(iroh.IrohError):  # the connection went away mid-stream
        await common.serve_stream(stream)


async def serve(ready_cb: common.ReadyCallback, opts: common.Options) -> None:
    """Serve benchmark connections until cancelled."""
    ep = await _bind([common.ALPN])
    tasks: set[asyncio.Task[None]] = set()
    try:
        ready_cb({"ticket": _v4_ticket(ep)})
        while (incoming := await ep.accept_next()) is not None:
            task = asyncio.create_task(_serve_conn(incoming, tasks))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
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
        return self._conn.close_reason() is None

    async def close(self) -> None:
        self._conn.close(0, b"")


class _Dialer:
    """One client endpoint for every connection."""

    stream_per_connection = False

    def __init__(self, ep: Any, ticket: str) -> None:
        self._ep = ep
        self._addr = iroh.EndpointTicket.from_string(ticket).endpoint_addr()

    async def connect(self) -> _Conn:
        return _Conn(await self._ep.connect(self._addr, common.ALPN))

    async def connect_0rtt(self) -> None:
        """Not measured: the bindings expose no 0-RTT dial."""

    async def aclose(self) -> None:
        await self._ep.close()


async def run_client(server_info: common.ServerInfo, args: common.Params,
                     opts: common.Options) -> dict[str, Any]:
    """Measure this server with the shared driver."""
    dialer = _Dialer(await _bind(None), server_info["ticket"])
    try:
        return await common.run_metrics(dialer, args)
    finally:
        await dialer.aclose()
