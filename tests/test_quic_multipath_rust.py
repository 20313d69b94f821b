"""Multipath against Rust iroh 1.x (the official `iroh` package, noq) and between two irohpy
engines, over real UDP on loopback (IPv4 and IPv6) in a loopback-only namespace.

Our engines offer multipath (initial_max_path_id 7, as iroh) and listen on 127.0.0.1 and ::1,
both sockets feeding one engine core: a path's address is the socket address it uses.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.quic import connection as qc
from irohpy.quic.connection import QuicConfig
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint
from irohpy.socket.udp import UdpSocket
from irohpy.tls.keys import private_key, public_key_bytes
from tests.refpeer import bulk_ref, ref_v4_port, ref_v6_port

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/multipath-interop/0"
T = 30.0
SIZE = 4 << 20
PY_SECRET = hashlib.sha256(b"multipath-interop-py").digest()
PY_ID = public_key_bytes(private_key(PY_SECRET))
PY2_SECRET = hashlib.sha256(b"multipath-interop-py2").digest()


def pattern(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


class DualStack:
    """One engine core behind two real sockets, 127.0.0.1 and ::1."""

    def __init__(self, secret: bytes) -> None:
        config = EndpointConfig(alpns=[ALPN], transport=QuicConfig(is_client=True, max_path_id=7))
        self.socks: dict[bool, UdpSocket] = {}
        self.engine = QuicEngine(QuicEndpoint(secret, config), self._send)
        self.socks[False] = UdpSocket.bind("127.0.0.1", 0, self.engine.receive)
        self.socks[True] = UdpSocket.bind("::1", 0, self.engine.receive)

    def _send(self, datagrams: list[bytes], addr: Any) -> None:
        self.socks[":" in addr[0]].send_batch(datagrams, addr)

    def addr(self, v6: bool) -> tuple[str, int]:
        host, port = self.socks[v6].local_addr[:2]
        return host, port

    async def close(self) -> None:
        await self.engine.close()
        for sock in self.socks.values():
            sock.close()


@pytest.fixture
async def ours() -> AsyncIterator[DualStack]:
    stack = DualStack(PY_SECRET)
    try:
        yield stack
    finally:
        await stack.close()


@pytest.fixture
async def ref(iroh_loop: Any) -> AsyncIterator[Any]:
    async with bulk_ref(iroh_loop, [ALPN], T) as ep:
        yield ep


def target(iroh: Any, stack: DualStack, *, both: bool) -> Any:
    addrs = ["%s:%d" % stack.addr(False)]
    if both:
        addrs.append("[%s]:%d" % stack.addr(True))
    return iroh.EndpointAddr(iroh.EndpointId.from_bytes(PY_ID), None, addrs)


async def rust_dials(iroh: Any, stack: DualStack, ref: Any, *, both: bool = False) -> tuple[Any, EngineConnection]:
    dial = asyncio.create_task(asyncio.wait_for(ref.connect(target(iroh, stack, both=both), ALPN), T))
    conn = await asyncio.wait_for(stack.engine.accept(), T)
    return await dial, conn


async def exchange_with_rust(theirs: Any, conn: EngineConnection, up: bytes, down: bytes) -> None:
    """``up`` from Rust to us and ``down`` back on one bi stream, then ``down`` on a uni of ours."""

    async def serve() -> bytes:
        send, recv = await conn.accept_bi()
        got = await recv.read_to_end(len(up))
        await send.write_all(down)
        send.finish()
        uni = await conn.open_uni()
        await uni.write_all(down)
        uni.finish()
        return got

    task = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    bi = await theirs.open_bi()
    await bi.send().write_all(up)
    await bi.send().finish()
    got_down = bytes(await asyncio.wait_for(bi.recv().read_to_end(len(down)), 4 * T))
    uni = await asyncio.wait_for(theirs.accept_uni(), T)
    got_uni = bytes(await asyncio.wait_for(uni.read_to_end(len(down)), 4 * T))
    assert await task == up
    assert got_down == down and got_uni == down


async def test_we_dial_rust_with_multipath_and_streams_work_both_ways(iroh_loop: Any, ours: DualStack, ref: Any) -> None:
    up, down = pattern(SIZE, 1), pattern(SIZE, 2)

    async def serve() -> tuple[bytes, bytes]:
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()
        bi = await conn.accept_bi()
        got = bytes(await bi.recv().read_to_end(SIZE))
        await bi.send().write_all(down)
        await bi.send().finish()
        uni = await conn.accept_uni()
        got_uni = bytes(await uni.read_to_end(SIZE))
        conn.close(0, b"got it")
        return got, got_uni

    server = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    conn = await ours.engine.connect(("127.0.0.1", ref_v4_port(ref)), ref.id().to_bytes(), ALPN, timeout=T)
    assert conn.quic.multipath
    theirs_tp = conn.quic.peer_transport_parameters
    assert theirs_tp is not None and theirs_tp.initial_max_path_id == 7
    send, recv = await conn.open_bi()
    await send.write_all(up)
    send.finish()
    assert await asyncio.wait_for(recv.read_to_end(SIZE), 4 * T) == down
    uni = await conn.open_uni()
    await uni.write_all(up)
    uni.finish()
    assert await server == (up, up)
    ended = await asyncio.wait_for(conn.closed(), T)
    assert ended.cause == qc.CAUSE_PEER and ended.reason == b"got it"


async def test_rust_dials_us_with_multipath_and_streams_work_both_ways(iroh_loop: Any, ours: DualStack, ref: Any) -> None:
    theirs, conn = await rust_dials(iroh_loop, ours, ref)
    assert conn.quic.multipath
    await exchange_with_rust(theirs, conn, pattern(SIZE, 3), pattern(SIZE, 4))
    assert conn.terminated is None
    theirs.close(0, b"bye")
    await asyncio.wait_for(conn.closed(), T)


async def test_rust_dialing_both_our_addresses_stays_on_one_path(iroh_loop: Any, ours: DualStack, ref: Any) -> None:
    # Without n0's NAT traversal negotiated iroh opens no second IP path by itself: its path
    # selector only knows paths that exist, and new ones come from hole punching.
    theirs, conn = await rust_dials(iroh_loop, ours, ref, both=True)
    assert conn.quic.multipath
    await exchange_with_rust(theirs, conn, pattern(SIZE, 5), pattern(SIZE, 6))
    await asyncio.sleep(2.0)
    assert list(conn.quic.paths) == [0] and not conn.multipath_events
    assert conn.terminated is None
    theirs.close(0, b"bye")
    await asyncio.wait_for(conn.closed(), T)


async def test_rust_accepts_a_second_path_we_open_and_the_connection_survives(
    iroh_loop: Any, ours: DualStack, ref: Any
) -> None:
    up, down = pattern(SIZE, 7), pattern(SIZE, 8)
    ready = asyncio.Event()

    async def serve() -> bytes:
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()
        bi = await conn.accept_bi()
        got = bytes(await bi.recv().read_to_end(SIZE))
        await ready.wait()
        await bi.send().write_all(down)
        await bi.send().finish()
        await conn.closed()
        return got

    server = asyncio.create_task(asyncio.wait_for(serve(), 4 * T))
    conn = await ours.engine.connect(("127.0.0.1", ref_v4_port(ref)), ref.id().to_bytes(), ALPN, timeout=T)
    v6 = ref_v6_port(ref)
    assert v6 is not None
    pid = await asyncio.wait_for(conn.open_path(("::1", v6)), T)
    assert await asyncio.wait_for(conn.path_outcome(pid), T)
    # Data now moves over IPv6 only: the IPv4 path becomes backup.
    conn.set_path_status(0, False)
    before = conn.quic.paths[pid].recovery.bytes_sent
    send, recv = await conn.open_bi()
    await send.write_all(up)
    send.finish()
    ready.set()
    assert await asyncio.wait_for(recv.read_to_end(SIZE), 4 * T) == down
    assert conn.quic.paths[pid].recovery.bytes_sent - before > SIZE
    # Then the IPv4 path goes; the connection carries on over the new one.
    conn.close_path(0)
    await asyncio.sleep(1.0)
    assert conn.terminated is None and conn.quic.peer_address[0] == "::1"
    conn.close(0, b"done")
    assert await server == up


async def test_two_irohpy_engines_move_data_to_a_second_path(ours: DualStack) -> None:
    other = DualStack(PY2_SECRET)
    try:
        dial = asyncio.create_task(other.engine.connect(ours.addr(False), PY_ID, ALPN, timeout=T))
        server = await asyncio.wait_for(ours.engine.accept(), T)
        client = await dial
        assert client.quic.multipath and server.quic.multipath
        pid = await asyncio.wait_for(client.open_path(ours.addr(True)), T)
        assert await asyncio.wait_for(client.path_outcome(pid), T)
        assert await asyncio.wait_for(server.path_outcome(pid), T)
        client.set_path_status(0, False)
        server.set_path_status(0, False)
        before = [p.recovery.bytes_received for p in (server.quic.paths[0], server.quic.paths[pid])]
        data = pattern(SIZE, 9)

        async def receive() -> bytes:
            _, recv = await server.accept_bi()
            return await recv.read_to_end(SIZE)

        task = asyncio.create_task(asyncio.wait_for(receive(), 4 * T))
        send, _ = await client.open_bi()
        await send.write_all(data)
        send.finish()
        assert await task == data
        moved = [p.recovery.bytes_received - b for p, b in zip((server.quic.paths[0], server.quic.paths[pid]), before)]
        assert moved[1] > SIZE and moved[0] < SIZE // 20
        assert server.quic.paths[pid].addr[0] == "::1"
        # The IPv4 path goes; the connection lives on over IPv6.
        client.close_path(0)
        assert not await asyncio.wait_for(server.path_outcome(0), T)
        task = asyncio.create_task(asyncio.wait_for(receive(), 4 * T))
        send, _ = await client.open_bi()
        await send.write_all(data[: 1 << 20])
        send.finish()
        assert await task == data[: 1 << 20]
        assert server.quic.peer_address[0] == "::1"
        client.close(0, b"bye")
        await asyncio.wait_for(server.closed(), T)
    finally:
        await other.close()
