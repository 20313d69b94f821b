"""Router: ALPN dispatch, several versions, failing handlers, shutdown order."""

from __future__ import annotations

import asyncio

import pytest

from irohpy import Router
from irohpy.endpoint import Connection
from irohpy.errors import ConnectError, EndpointClosed
from tests.helpers import bind

A = b"test/a/1"
B = b"test/b/1"
B_OLD = b"test/b/0"


class Tag:
    """Answers every stream with its tag and the ALPN the connection used."""

    def __init__(self, tag: bytes, log: list[str]) -> None:
        self.tag = tag
        self.log = log

    async def accept(self, conn: Connection) -> None:
        send, recv = await conn.accept_bi()
        await recv.read_to_end(100)
        await send.write_all(self.tag + b":" + (conn.alpn or b""))
        await send.finish()
        await conn.closed()

    async def shutdown(self) -> None:
        self.log.append(f"shutdown {self.tag.decode()}")


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    async def accept(self, conn: Connection) -> None:
        self.calls += 1
        raise RuntimeError("handler bug")


async def ask(client, server, alpn: bytes) -> bytes:  # type: ignore[no-untyped-def]
    conn = await client.connect(server.addr(), alpn, timeout=5)
    send, recv = await conn.open_bi()
    await send.write_all(b"?")
    await send.finish()
    reply = await recv.read_to_end(100)
    conn.close()
    return reply


async def test_routes_two_alpns_and_versions() -> None:
    log: list[str] = []
    server = await bind()
    b_handler = Tag(b"b", log)  # one handler serving two versions: shut down once
    router = (
        Router.builder(server)
        .accept(A, Tag(b"a", log))
        .accept(B, b_handler)
        .accept(B_OLD, b_handler)
        .spawn()
    )
    assert set(server.alpns) == {A, B, B_OLD}
    client = await bind()
    try:
        assert await ask(client, server, A) == b"a:" + A
        assert await ask(client, server, B) == b"b:" + B
        assert await ask(client, server, B_OLD) == b"b:" + B_OLD
        with pytest.raises(ConnectError, match="0x178"):
            await ask(client, server, b"test/unknown/1")
    finally:
        await client.close()
        await router.shutdown()
    assert sorted(log) == ["shutdown a", "shutdown b"]
    assert server.is_closed


async def test_failing_handler_does_not_take_router_down() -> None:
    server = await bind()
    boom = Exploding()
    router = Router.builder(server).accept(A, boom).accept(B, Tag(b"b", [])).spawn()
    client = await bind()
    try:
        for _ in range(3):
            conn = await client.connect(server.addr(), A, timeout=5)
            conn.close()
        assert await ask(client, server, B) == b"b:" + B
        assert boom.calls == 3
    finally:
        await client.close()
        await router.shutdown()


async def test_shutdown_cancels_running_handlers_then_closes_endpoint() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Forever:
        async def accept(self, conn: Connection) -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    server = await bind()
    async with Router.builder(server).accept(A, Forever()).spawn() as router:
        client = await bind()
        conn = await client.connect(server.addr(), A, timeout=5)
        await asyncio.wait_for(started.wait(), 5)
    assert router.is_shutdown and cancelled.is_set() and server.is_closed
    reason = await asyncio.wait_for(conn.closed(), 5)
    assert reason.error_code == 0
    await client.close()


async def test_spawn_on_closed_endpoint_fails() -> None:
    server = await bind()
    await server.close()
    with pytest.raises(EndpointClosed):
        Router.builder(server).accept(A, Tag(b"a", [])).spawn()
    with pytest.raises(ValueError):
        Router.builder(server).accept(b"", Tag(b"a", []))
