"""irohpy's own QUIC endpoint core and driver against Rust iroh 1.2.0 (the official `iroh`
package, noq) over real UDP on loopback, both directions, in a loopback-only namespace."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.errors import ApplicationClosed, IdleTimeout, QuicError
from irohpy.quic.connection import QuicConfig
from irohpy.quic.endpoint import EndpointConfig
from irohpy.tls.keys import private_key, public_key_bytes
from tests.engine_restart import Restartable
from tests.refpeer import bulk_ref, datagrams_both_ways, ref_v4_port

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/engine-interop/0"
T = 30.0
PY_SECRET = hashlib.sha256(b"engine-interop-py").digest()
PY_ID = public_key_bytes(private_key(PY_SECRET))


def pattern(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    reps = size // len(block) + 1
    return (block * reps)[:size]


@pytest.fixture
async def engine() -> AsyncIterator[QuicEngine]:
    async with await QuicEngine.bind(PY_SECRET, config=EndpointConfig(alpns=[ALPN])) as eng:
        yield eng


@pytest.fixture
async def ref(iroh_loop: Any) -> AsyncIterator[Any]:
    async with bulk_ref(iroh_loop, [ALPN], T) as ep:
        yield ep


def ref_addr(iroh: Any, ep: Any) -> tuple[str, int]:
    return ("127.0.0.1", ref_v4_port(ep))


def py_target(iroh: Any, engine: QuicEngine) -> Any:
    host, port = engine.local_addr
    return iroh.EndpointAddr(iroh.EndpointId.from_bytes(PY_ID), None, [f"{host}:{port}"])


async def dial_rust(iroh: Any, engine: QuicEngine, ref: Any) -> EngineConnection:
    return await engine.connect(ref_addr(iroh, ref), ref.id().to_bytes(), ALPN, timeout=T)


async def test_we_dial_rust_and_echo_a_bi_stream(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    async def serve() -> bytes:
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()
        bi = await conn.accept_bi()
        data = await bi.recv().read_to_end(1 << 20)
        await bi.send().write_all(data)
        await bi.send().finish()
        await conn.closed()
        return bytes(conn.remote_id().to_bytes())

    server = asyncio.create_task(asyncio.wait_for(serve(), T))
    conn = await dial_rust(iroh_loop, engine, ref)
    assert conn.peer_id == ref.id().to_bytes() and conn.alpn == ALPN
    # Rust offers multipath and n0's NAT traversal; we do not, so the connection is single-path.
    theirs = conn.quic.peer_transport_parameters
    assert theirs is not None and theirs.initial_max_path_id is not None
    assert theirs.max_remote_nat_traversal_addresses is not None
    send, recv = await conn.open_bi()
    await send.write(b"hello rust")
    send.finish()
    assert await asyncio.wait_for(recv.read_to_end(1 << 20), T) == b"hello rust"
    conn.close(0, b"done")
    assert await server == PY_ID


async def rust_dials(iroh: Any, engine: QuicEngine, ref: Any) -> tuple[Any, EngineConnection]:
    dial = asyncio.create_task(asyncio.wait_for(ref.connect(py_target(iroh, engine), ALPN), T))
    ours = await asyncio.wait_for(engine.accept(), T)
    return await dial, ours


async def test_rust_dials_us_and_we_echo(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    theirs, ours = await rust_dials(iroh_loop, engine, ref)
    assert ours.peer_id == ref.id().to_bytes() and ours.alpn == ALPN
    assert bytes(theirs.remote_id().to_bytes()) == PY_ID

    async def echo() -> None:
        send, recv = await ours.accept_bi()
        await send.write(await recv.read_to_end(1 << 20))
        send.finish()

    task = asyncio.create_task(asyncio.wait_for(echo(), T))
    bi = await theirs.open_bi()
    await bi.send().write_all(b"hello python")
    await bi.send().finish()
    assert await asyncio.wait_for(bi.recv().read_to_end(1 << 20), T) == b"hello python"
    await task
    theirs.close(0, b"bye")
    await asyncio.wait_for(ours.closed(), T)


SIZE = 20 << 20


async def test_large_bi_and_uni_transfers_both_ways_when_we_dial(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    up, down, uni_up, uni_down = (pattern(SIZE, i) for i in range(4))

    async def serve() -> tuple[bytes, bytes]:
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()
        bi = await conn.accept_bi()
        uni_in = await conn.accept_uni()
        uni_out = await conn.open_uni()
        await uni_out.write_all(uni_down)
        await uni_out.finish()
        got_bi = bytes(await bi.recv().read_to_end(SIZE))
        await bi.send().write_all(down)
        await bi.send().finish()
        got_uni = bytes(await uni_in.read_to_end(SIZE))
        await conn.closed()
        return got_bi, got_uni

    server = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    conn = await dial_rust(iroh_loop, engine, ref)
    send, recv = await conn.open_bi()
    await send.write(b"")  # Rust sees a stream only once it carries something
    uni = await conn.open_uni()

    async def push(stream: Any, data: bytes) -> None:
        await stream.write_all(data)
        stream.finish()

    async def pull_uni() -> bytes:
        uni_in = await conn.accept_uni()
        return await uni_in.read_to_end(SIZE)

    # Rust writes its uni stream to the end before it reads ours: credit follows reads on both
    # sides, so we must read while we push.
    _, _, got_down, got_uni_down = await asyncio.wait_for(
        asyncio.gather(push(send, up), push(uni, uni_up), recv.read_to_end(SIZE), pull_uni()), 4 * T
    )
    assert got_down == down and got_uni_down == uni_down
    # Everything we sent is acknowledged before we close.
    assert await asyncio.wait_for(send.stopped(), T) is None
    assert await asyncio.wait_for(uni.stopped(), T) is None
    conn.close(0, b"done")
    got_up, got_uni_up = await server
    assert got_up == up and got_uni_up == uni_up


async def test_large_transfers_both_ways_when_rust_dials(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    up, down = pattern(SIZE, 5), pattern(SIZE, 6)
    theirs, ours = await rust_dials(iroh_loop, engine, ref)

    async def serve() -> bytes:
        send, recv = await ours.accept_bi()
        got = await recv.read_to_end(SIZE)
        await send.write_all(down)
        send.finish()
        uni = await ours.open_uni()
        await uni.write_all(down)
        uni.finish()
        return got

    task = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    bi = await theirs.open_bi()
    await bi.send().write_all(up)
    await bi.send().finish()
    got_down = bytes(await asyncio.wait_for(bi.recv().read_to_end(SIZE), 4 * T))
    uni = await asyncio.wait_for(theirs.accept_uni(), T)
    got_uni = bytes(await asyncio.wait_for(uni.read_to_end(SIZE), 4 * T))
    assert await task == up
    assert got_down == down and got_uni == down
    theirs.close(0, b"bye")
    await asyncio.wait_for(ours.closed(), T)


async def test_datagrams_both_ways(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    theirs, ours = await rust_dials(iroh_loop, engine, ref)
    got_ours, got_theirs = await datagrams_both_ways(ours, theirs, 20, T)
    wanted = {b"dgram-%d" % i for i in range(20)}
    assert got_ours == wanted and got_theirs == wanted
    theirs.close(0, b"")


async def test_thousand_concurrent_streams(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    n = 1000

    async def serve() -> int:
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()

        async def echo(bi: Any) -> None:
            data = await bi.recv().read_to_end(1024)
            await bi.send().write_all(data)
            await bi.send().finish()

        tasks = [asyncio.create_task(echo(await conn.accept_bi())) for _ in range(n)]
        await asyncio.gather(*tasks)
        await conn.closed()
        return len(tasks)

    server = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    conn = await dial_rust(iroh_loop, engine, ref)

    async def one(i: int) -> bytes:
        send, recv = await conn.open_bi()
        await send.write(b"stream %d" % i)
        send.finish()
        return await recv.read_to_end(1024)

    replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 4 * T)
    assert replies == [b"stream %d" % i for i in range(n)]
    conn.close(0, b"done")
    assert await server == n


async def test_close_codes_both_ways(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    theirs, ours = await rust_dials(iroh_loop, engine, ref)
    ours.close(42, b"python says bye")
    text = await asyncio.wait_for(theirs.closed(), T)
    assert "python says bye" in text and "42" in text
    await asyncio.wait_for(ours.closed(), T)

    theirs, ours = await rust_dials(iroh_loop, engine, ref)
    theirs.close(7, b"rust says bye")
    term = await asyncio.wait_for(ours.closed(), T)
    assert term.application and term.error_code == 7 and term.reason == b"rust says bye"
    with pytest.raises(ApplicationClosed) as err:
        await ours.open_bi()
    assert err.value.error_code == 7


async def test_idle_timeout_against_rust(iroh_loop: Any, ref: Any) -> None:
    idle = 1.0
    config = EndpointConfig(alpns=[ALPN], transport=QuicConfig(is_client=True, idle_timeout=idle))
    async with await QuicEngine.bind(PY_SECRET, config=config) as engine:
        loop = asyncio.get_running_loop()
        theirs, ours = await rust_dials(iroh_loop, engine, ref)
        start = loop.time()
        term = await asyncio.wait_for(ours.closed(), T)
        elapsed = loop.time() - start
        # The timer started with the last packet, a moment before we started the clock.
        assert term.cause == "idle" and 0.5 * idle <= elapsed < T
        text = await asyncio.wait_for(theirs.closed(), T)
        assert "timed out" in text.lower() or "idle" in text.lower(), text
        with pytest.raises(IdleTimeout):
            await ours.accept_bi()


async def test_key_update_we_force_mid_transfer(iroh_loop: Any, engine: QuicEngine, ref: Any) -> None:
    data = pattern(SIZE, 9)

    async def serve() -> bytes:
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()
        uni = await conn.accept_uni()
        got = bytes(await uni.read_to_end(SIZE))
        await conn.closed()
        return got

    server = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    conn = await dial_rust(iroh_loop, engine, ref)
    uni = await conn.open_uni()
    half = SIZE // 2
    await uni.write_all(memoryview(data)[:half])
    # Wait until the peer acknowledged something under the current keys, then update.
    async def update() -> None:
        while True:
            before = conn.quic.key_phase
            try:
                conn.request_key_update()
            except QuicError:
                await asyncio.sleep(0.01)
                continue
            assert conn.quic.key_phase != before
            return

    await asyncio.wait_for(update(), T)
    await uni.write_all(memoryview(data)[half:])
    uni.finish()
    # The second half went under the new keys: Rust read it, so it followed the update (noq
    # may update again on its own, so the phase bit itself proves nothing now).
    assert await asyncio.wait_for(uni.stopped(), 4 * T) is None
    conn.close(0, b"done")
    assert await server == data


async def test_restarted_python_endpoint_resets_rust(iroh_loop: Any, ref: Any) -> None:
    key = os.urandom(32)
    config = EndpointConfig(alpns=[ALPN], static_key=key)
    first = Restartable.start(PY_SECRET, config)
    port = first.sock.local_addr[1]
    second: Restartable | None = None
    try:
        target = iroh_loop.EndpointAddr(iroh_loop.EndpointId.from_bytes(PY_ID), None, [f"127.0.0.1:{port}"])
        dial = asyncio.create_task(asyncio.wait_for(ref.connect(target, ALPN), T))
        await asyncio.wait_for(first.engine.accept(), T)
        theirs = await dial
        await first.crash()
        second = Restartable.start(PY_SECRET, config, port)
        uni = await theirs.open_uni()
        await uni.write_all(b"x" * 4000)
        text = await asyncio.wait_for(theirs.closed(), T)
        assert "reset" in text.lower(), text
        assert second.engine.core.stats.resets_sent >= 1
    finally:
        await first.crash()
        if second is not None:
            await second.crash()
