"""Our endpoint and Rust iroh 1.x (the official `iroh` package) through OUR relay, both ways.

Our endpoint is relay-only: it binds no UDP socket, so every packet between the two goes
through the relay process, whose forwarded-bytes counter confirms it. Each test runs with
us dialing and with Rust dialing; streams are opened from both sides either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from irohpy import Endpoint, EndpointAddr, EndpointId, RelayMode, presets
from irohpy.base.addr import TransportAddr
from irohpy.endpoint.connection import Connection
from irohpy.errors import ApplicationClosed, QuicError
from tests.helpers import accept_one
from tests.refpeer import bind_ref, datagrams_both_ways, patch_fast_writes
from tests.relay_fixture import RelayProcess, relay_server

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/relay-path-interop/0"
SIZE = 10_000_000
T = 15.0  # one handshake or small exchange; transfers get 8x this


def pattern(size: int, seed: int) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@contextlib.asynccontextmanager
async def peers(iroh: Any) -> AsyncIterator[tuple[RelayProcess, Endpoint, Any]]:
    patch_fast_writes(iroh)
    async with relay_server() as relay:
        ours = await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.custom([relay.url]),
                                   alpns=[ALPN], relay_only=True)
        ref = None
        try:
            ref = await bind_ref(iroh, [ALPN], relay_mode=iroh.RelayMode.custom_from_urls([relay.url]))
            async with asyncio.timeout(T):
                await asyncio.gather(ours.online(), ref.online())
            yield relay, ours, ref
        finally:
            await ours.close()
            if ref is not None:
                await asyncio.wait_for(ref.close(), T)


async def pair(iroh: Any, relay: RelayProcess, ours: Endpoint, ref: Any, we_dial: bool) -> tuple[Connection, Any]:
    """(our connection, theirs), relay addresses only on both sides."""
    async with asyncio.timeout(T):
        if we_dial:
            async def their_accept() -> Any:
                return await (await (await ref.accept_next()).accept()).connect()

            accepted = asyncio.create_task(their_accept())
            their_id = EndpointId.from_bytes(ref.id().to_bytes())
            target = EndpointAddr(their_id, frozenset({TransportAddr.Relay(relay.url)}))
            conn = await ours.connect(target, ALPN)
            theirs = await accepted
        else:
            accepted = asyncio.create_task(accept_one(ours, T))
            theirs = await ref.connect(iroh.EndpointAddr(iroh.EndpointId.from_bytes(bytes(ours.id)), relay.url, []),
                                       ALPN)
            conn = await accepted
    assert conn.remote_id == EndpointId.from_bytes(ref.id().to_bytes())
    assert theirs.remote_id().to_bytes() == bytes(ours.id)
    return conn, theirs


both_ways = pytest.mark.parametrize("we_dial", [True, False], ids=["we-dial", "rust-dials"])


@both_ways
async def test_bi_and_uni_streams_both_ways(iroh_loop: Any, we_dial: bool) -> None:
    up, down, uni_up, uni_down = (pattern(SIZE, i) for i in range(4))
    async with peers(iroh_loop) as (relay, ours, ref):
        conn, theirs = await pair(iroh_loop, relay, ours, ref, we_dial)
        before = relay.forwarded_bytes()

        async def serve() -> tuple[bytes, bytes]:
            bi = await theirs.accept_bi()
            uni_in = await theirs.accept_uni()
            uni_out = await theirs.open_uni()
            await uni_out.write_all(uni_down)
            await uni_out.finish()
            got_bi = bytes(await bi.recv().read_to_end(SIZE))
            await bi.send().write_all(down)
            await bi.send().finish()
            return got_bi, bytes(await uni_in.read_to_end(SIZE))

        server = asyncio.create_task(asyncio.wait_for(serve(), 8 * T))
        send, recv = await conn.open_bi()
        uni = await conn.open_uni()

        async def push(stream: Any, data: bytes) -> None:
            await stream.write_all(data)
            await stream.finish()

        async def pull_uni() -> bytes:
            return await (await conn.accept_uni()).read_to_end(SIZE)

        # Rust writes its uni stream to the end before it reads ours: read while pushing.
        _, _, got_down, got_uni_down = await asyncio.wait_for(
            asyncio.gather(push(send, up), push(uni, uni_up), recv.read_to_end(SIZE), pull_uni()), 8 * T)
        assert got_down == down and got_uni_down == uni_down
        assert await server == (up, uni_up)
        conn.close(0, b"done")
        assert relay.forwarded_bytes() - before >= 4 * SIZE


@both_ways
async def test_datagrams_both_ways(iroh_loop: Any, we_dial: bool) -> None:
    wanted = {b"dgram-%d" % i for i in range(20)}
    async with peers(iroh_loop) as (relay, ours, ref):
        conn, theirs = await pair(iroh_loop, relay, ours, ref, we_dial)
        got_ours, got_theirs = await datagrams_both_ways(conn, theirs, len(wanted), T)
        assert got_ours == wanted and got_theirs == wanted
        conn.close(0, b"")


@both_ways
async def test_thousand_concurrent_streams(iroh_loop: Any, we_dial: bool) -> None:
    n = 1000
    async with peers(iroh_loop) as (relay, ours, ref):
        conn, theirs = await pair(iroh_loop, relay, ours, ref, we_dial)

        async def serve() -> int:
            async def echo(bi: Any) -> None:
                await bi.send().write_all(await bi.recv().read_to_end(1024))
                await bi.send().finish()

            tasks = [asyncio.create_task(echo(await theirs.accept_bi())) for _ in range(n)]
            await asyncio.gather(*tasks)
            return len(tasks)

        server = asyncio.create_task(asyncio.wait_for(serve(), 8 * T))

        async def one(i: int) -> bytes:
            send, recv = await conn.open_bi()
            await send.write_all(b"stream %d" % i)
            await send.finish()
            return await recv.read_to_end(1024)

        replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 8 * T)
        assert replies == [b"stream %d" % i for i in range(n)]
        assert await server == n
        conn.close(0, b"done")


@both_ways
async def test_close_codes_both_ways(iroh_loop: Any, we_dial: bool) -> None:
    async with peers(iroh_loop) as (relay, ours, ref):
        conn, theirs = await pair(iroh_loop, relay, ours, ref, we_dial)
        conn.close(42, b"python says bye")
        text = await asyncio.wait_for(theirs.closed(), T)
        assert "python says bye" in text and "42" in text

        conn, theirs = await pair(iroh_loop, relay, ours, ref, we_dial)
        theirs.close(7, b"rust says bye")
        reason = await asyncio.wait_for(conn.closed(), T)
        assert isinstance(reason, ApplicationClosed)
        assert reason.error_code == 7 and reason.reason == b"rust says bye"


async def test_key_update_we_force_mid_transfer(iroh_loop: Any) -> None:
    data = pattern(SIZE, 9)
    async with peers(iroh_loop) as (relay, ours, ref):
        conn, theirs = await pair(iroh_loop, relay, ours, ref, True)

        async def their_read() -> bytes:
            return bytes(await (await theirs.accept_uni()).read_to_end(SIZE))

        reading = asyncio.create_task(asyncio.wait_for(their_read(), 8 * T))
        uni = await conn.open_uni()
        await uni.write_all(memoryview(data)[: SIZE // 2])
        phase = conn.quic.key_phase
        async with asyncio.timeout(T):
            while True:  # an update is allowed once the peer acknowledged the current keys
                try:
                    conn.request_key_update()
                    break
                except QuicError:
                    await asyncio.sleep(0.01)
        assert conn.quic.key_phase != phase
        await uni.write_all(memoryview(data)[SIZE // 2:])
        await uni.finish()
        # The second half went under the new keys: Rust reading it all proves it followed.
        assert await reading == data
        conn.close(0, b"done")
