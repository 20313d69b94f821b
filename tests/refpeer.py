"""Driving the reference peer (official iroh package) safely in tests.

Always preset_minimal, bound to 127.0.0.1 only, with relays disabled unless a
test points it at OUR relay on loopback; the tests that use it run in a
loopback-only network namespace (conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import AsyncIterator
from typing import Any


def patch_fast_writes(iroh: Any) -> None:
    """Lower bytes into Rust buffers with memmove instead of a per-byte Python loop."""
    builder = iroh.iroh_ffi._UniffiRustBufferBuilder
    if getattr(builder, "_irohpy_patched", False):
        return

    def _write(self: Any, value: bytes) -> None:
        n = len(value)
        with self._reserve(n):
            dst = ctypes.cast(self.rbuf.data, ctypes.c_void_p).value + self.rbuf.len
            ctypes.memmove(dst, bytes(value), n)

    builder.write = _write
    builder._irohpy_patched = True


async def bind_ref(iroh: Any, alpns: list[bytes] | None = None, secret: bytes | None = None,
                   protocols: dict[bytes, Any] | None = None, *, relay_mode: Any = None) -> Any:
    """``relay_mode`` defaults to disabled; pass a custom mode for OUR relay on loopback only."""
    opts = dict(
        preset=iroh.preset_minimal(),
        relay_mode=iroh.RelayMode.disabled() if relay_mode is None else relay_mode,
        bind_addr="127.0.0.1:0",
        alpns=alpns,
        secret_key=secret,
    )
    if protocols is not None:
        opts["protocols"] = protocols
    return await iroh.Endpoint.bind(iroh.EndpointOptions(**opts))


@contextlib.asynccontextmanager
async def bulk_ref(iroh: Any, alpns: list[bytes], close_timeout: float) -> AsyncIterator[Any]:
    """A reference endpoint for bulk transfers (fast writes), closed within ``close_timeout``."""
    patch_fast_writes(iroh)
    ep = await bind_ref(iroh, alpns)
    try:
        yield ep
    finally:
        await asyncio.wait_for(ep.close(), close_timeout)


def ref_v4_port(ep: Any) -> int:
    sock = next(s for s in ep.bound_sockets() if s.startswith("127."))
    return int(sock.rsplit(":", 1)[1])


def ref_v6_port(ep: Any) -> int | None:
    for s in ep.bound_sockets():
        if s.startswith("["):
            return int(s.rsplit(":", 1)[1])
    return None


async def datagrams_both_ways(ours: Any, theirs: Any, count: int, timeout: float) -> tuple[set[bytes], set[bytes]]:
    """Exchange ``count`` distinct datagrams each way between our connection and a reference
    one; returns (what we got, what they got). Datagrams may be lost even on loopback, so each
    side resends what the other has not seen yet until both have all, or ``timeout``."""
    wanted = {b"dgram-%d" % i for i in range(count)}
    got_ours: set[bytes] = set()
    got_theirs: set[bytes] = set()

    async def collect_ours() -> None:
        while got_ours != wanted:
            got_ours.add(await ours.read_datagram())

    async def collect_theirs() -> None:
        while got_theirs != wanted:
            got_theirs.add(bytes(await theirs.read_datagram()))

    tasks = [asyncio.create_task(collect_ours()), asyncio.create_task(collect_theirs())]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while (got_ours != wanted or got_theirs != wanted) and loop.time() < deadline:
            for d in wanted - got_theirs:
                ours.send_datagram(d)
            for d in wanted - got_ours:
                theirs.send_datagram(d)
            await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return got_ours, got_theirs
