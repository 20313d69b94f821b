"""Test helpers: endpoints bound to loopback only, so no packet leaves the host."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from irohpy import presets
from irohpy.endpoint.endpoint import Endpoint

V4 = ["127.0.0.1:0"]
V6 = ["[::1]:0"]
BOTH = ["127.0.0.1:0", "[::1]:0"]


async def bind(alpns: list[bytes] | None = None, addrs: list[str] = V4, **kwargs) -> Endpoint:  # type: ignore[no-untyped-def]
    return await Endpoint.bind(preset=presets.MINIMAL, alpns=alpns or [], bind_addrs=addrs, **kwargs)


@contextlib.asynccontextmanager
async def endpoints(n: int = 2, alpns: list[bytes] | None = None, **kwargs) -> AsyncIterator[list[Endpoint]]:  # type: ignore[no-untyped-def]
    eps = [await bind(alpns, **kwargs) for _ in range(n)]
    try:
        yield eps
    finally:
        await asyncio.gather(*(ep.close() for ep in eps))


async def accept_one(ep: Endpoint, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        incoming = await ep.accept()
        assert incoming is not None
        return await incoming.accept()
