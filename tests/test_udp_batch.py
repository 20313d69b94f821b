"""UdpSocket.send_batch: GSO runs arrive as the datagrams they were, in order, and the fallback matches."""

from __future__ import annotations

import asyncio
import os

import pytest

from irohpy.socket.udp import GSO_MAX_SEGMENTS, UdpSocket
from tests.helpers import accept_one, bind

Batch = list[tuple[bytes, tuple[str, int]]]


async def _exchange(datagrams: list[bytes], gso: bool) -> tuple[list[bytes], UdpSocket]:
    received: list[bytes] = []
    arrived = asyncio.Event()

    def on_batch(batch: Batch, sock: UdpSocket) -> None:
        received.extend(data for data, _ in batch)
        if len(received) >= len(datagrams):
            arrived.set()

    rx = UdpSocket.bind("127.0.0.1", 0, on_batch)
    tx = UdpSocket.bind("127.0.0.1", 0, lambda batch, sock: None)
    try:
        tx.gso = tx.gso and gso
        tx.send_batch(datagrams, rx.local_addr)
        async with asyncio.timeout(5):
            await arrived.wait()
    finally:
        rx.close()
        tx.close()
    return received, tx


@pytest.mark.parametrize("gso", [True, False])
async def test_batch_arrives_as_separate_datagrams_in_order(gso: bool) -> None:
    sizes = [1200] * (GSO_MAX_SEGMENTS + 5) + [700, 1200, 1200, 90, 1452, 1452, 1200, 1452]
    datagrams = [os.urandom(n) for n in sizes]
    received, tx = await _exchange(datagrams, gso)
    assert received == datagrams
    assert tx.sent_datagrams == len(datagrams)
    assert tx.sent_bytes == sum(sizes)
    if tx.gso:
        assert tx.sent_syscalls < len(datagrams) // 4
    else:
        assert tx.sent_syscalls == len(datagrams)


async def test_endpoint_bulk_uses_batched_sends() -> None:
    a, b = await bind([b"t"]), await bind([b"t"])
    try:
        conn, peer = await asyncio.gather(a.connect(b.addr(), b"t", timeout=5), accept_one(b))
        send, _ = await conn.open_bi()
        payload = os.urandom(2_000_000)
        await send.write_all(payload)
        await send.finish()
        _, recv = await peer.accept_bi()
        async with asyncio.timeout(10):
            assert await recv.read_to_end(len(payload)) == payload
        sock = a._transport.sockets[0]
        if sock.gso:
            assert sock.sent_syscalls < sock.sent_datagrams
        conn.close(0, b"")
    finally:
        await asyncio.gather(a.close(), b.close())
