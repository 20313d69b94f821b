"""irohpy's own QUIC endpoint core and asyncio driver (irohpy.endpoint.engine) over real UDP.

Two runs, each of ``--megabytes`` per direction on one bidirectional stream (send all, then
receive all back), checked byte for byte:

- engine to engine, both in this process: MB/s and CPU seconds per 200 MB for both ends;
- engine to Rust iroh 1.2.0 (the official package, in this process too, so its CPU is counted
  with ours), both directions of dialing.

The Rust peer needs a loopback-only network namespace (``scripts/loopback-only``).
``python -m bench.quic_engine [--megabytes 100] [--skip-rust]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from typing import Any

from bench import common
from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.quic.endpoint import EndpointConfig
from irohpy.tls.keys import private_key, public_key_bytes

ALPN = b"bench/quic-engine/0"
SERVER_SECRET = hashlib.sha256(b"bench-engine-server").digest()
CLIENT_SECRET = hashlib.sha256(b"bench-engine-client").digest()
TIMEOUT = 600.0


def _payload(size: int) -> bytes:
    block = hashlib.sha256(b"bench").digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def _report(name: str, size: int, wall: float, cpu: float) -> None:
    moved = 2 * size
    print(f"{name:<34} {moved / wall / 1e6:8.1f} MB/s  {cpu * 200e6 / moved:6.2f} CPU-s per 200 MB")


async def _echo_ours(conn: EngineConnection, size: int) -> None:
    send, recv = await conn.accept_bi()
    await send.write_all(await recv.read_to_end(size))
    send.finish()
    await send.stopped()


async def _exchange_ours(conn: EngineConnection, data: bytes) -> None:
    send, recv = await conn.open_bi()
    await send.write_all(data)
    send.finish()
    if await recv.read_to_end(len(data)) != data:
        raise RuntimeError("echo differs")


async def engine_to_engine(size: int) -> None:
    data = _payload(size)
    server_id = public_key_bytes(private_key(SERVER_SECRET))
    async with await QuicEngine.bind(SERVER_SECRET, config=EndpointConfig(alpns=[ALPN])) as server:
        async with await QuicEngine.bind(CLIENT_SECRET) as client:
            conn = await client.connect(server.local_addr, server_id, ALPN)
            theirs = await asyncio.wait_for(server.accept(), TIMEOUT)
            echo = asyncio.create_task(_echo_ours(theirs, size))
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.wait_for(_exchange_ours(conn, data), TIMEOUT)
            _report("engine <-> engine", size, time.perf_counter() - wall, time.process_time() - cpu)
            await asyncio.wait_for(echo, TIMEOUT)


async def engine_and_rust(size: int) -> None:
    common.require_loopback_only("the official iroh package")
    import iroh

    from tests.refpeer import bind_ref, patch_fast_writes, ref_v4_port

    iroh.iroh_ffi.uniffi_set_event_loop(asyncio.get_running_loop())
    patch_fast_writes(iroh)
    data = _payload(size)
    ref = await bind_ref(iroh, [ALPN])
    try:
        async with await QuicEngine.bind(SERVER_SECRET, config=EndpointConfig(alpns=[ALPN])) as engine:

            async def rust_echo() -> None:
                inc = await ref.accept_next()
                conn = await (await inc.accept()).connect()
                bi = await conn.accept_bi()
                got = await bi.recv().read_to_end(size)
                await bi.send().write_all(got)
                await bi.send().finish()
                await conn.closed()

            task = asyncio.create_task(rust_echo())
            conn = await engine.connect(("127.0.0.1", ref_v4_port(ref)), ref.id().to_bytes(), ALPN)
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.wait_for(_exchange_ours(conn, data), TIMEOUT)
            _report("engine dials Rust iroh (echo)", size, time.perf_counter() - wall, time.process_time() - cpu)
            conn.close(0, b"")
            await asyncio.wait_for(task, TIMEOUT)

            host, port = engine.local_addr
            target = iroh.EndpointAddr(
                iroh.EndpointId.from_bytes(public_key_bytes(private_key(SERVER_SECRET))), None, [f"{host}:{port}"]
            )
            dial = asyncio.create_task(ref.connect(target, ALPN))
            ours = await asyncio.wait_for(engine.accept(), TIMEOUT)
            theirs: Any = await dial
            echo = asyncio.create_task(_echo_ours(ours, size))
            wall, cpu = time.perf_counter(), time.process_time()
            bi = await theirs.open_bi()
            await bi.send().write_all(data)
            await bi.send().finish()
            if bytes(await bi.recv().read_to_end(size)) != data:
                raise RuntimeError("echo differs")
            _report("Rust iroh dials engine (echo)", size, time.perf_counter() - wall, time.process_time() - cpu)
            await asyncio.wait_for(echo, TIMEOUT)
            theirs.close(0, b"")
    finally:
        await ref.close()


async def main(args: argparse.Namespace) -> None:
    size = args.megabytes << 20
    print(f"{args.megabytes} MB each way; CPU is this whole process (both ends)")
    await engine_to_engine(size)
    if not args.skip_rust:
        await engine_and_rust(size)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--skip-rust", action="store_true")
    asyncio.run(main(parser.parse_args()))
