"""Garbage at a bound endpoint: it keeps serving, and nothing grows."""

from __future__ import annotations

import asyncio
import os
import random
import socket

from irohpy.tls import IrohQuicConnection, quic_configuration
from tests.helpers import accept_one, bind

ALPN = b"test/bad/0"


def _mutations(valid: bytes, rng: random.Random) -> bytes:
    data = bytearray(valid)
    choice = rng.randrange(4)
    if choice == 0:
        return bytes(data[: rng.randrange(len(data))])
    if choice == 1:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if choice == 2:
        return bytes(data) + os.urandom(rng.randrange(1, 64))
    return bytes([data[0]]) + os.urandom(len(data) - 1)


def _valid_initial(server_id: bytes) -> bytes:
    quic = IrohQuicConnection(
        configuration=quic_configuration(os.urandom(32), is_client=True, alpns=[ALPN], expected_peer=server_id),
        expected_peer=server_id,
    )
    quic.connect(("127.0.0.1", 9), 0.0)
    return quic.datagrams_to_send(0.0)[0][0]


async def test_random_and_truncated_datagrams_leave_endpoint_serving() -> None:
    server = await bind([ALPN])
    client = await bind()
    rng = random.Random(1234)
    try:
        target = server.bound_sockets()[0]
        tasks_before = len(asyncio.all_tasks())
        valid = _valid_initial(bytes(server.id))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        sent = 0
        try:
            while loop.time() < deadline:
                for _ in range(200):
                    kind = rng.randrange(3)
                    if kind == 0:
                        data = os.urandom(rng.randrange(1, 1500))
                    elif kind == 1:
                        data = _mutations(valid, rng)
                    else:
                        data = bytes([rng.choice([0xC0, 0xC3, 0x40, 0x00, 0x80])]) + os.urandom(rng.randrange(0, 40))
                    if data:
                        try:
                            sock.sendto(data, target)
                        except BlockingIOError:
                            pass
                        sent += 1
                await asyncio.sleep(0.01)
        finally:
            sock.close()
        assert sent > 10_000
        await asyncio.sleep(0.2)

        # Mutated Initials that still parse become offers; refuse them all.
        offers = 0
        while server._incoming:
            incoming = await server.accept()
            assert incoming is not None
            incoming.ignore()
            offers += 1
        assert len(server._engine.core.connections) == 0
        assert server._engine.core.handshakes_under_way == 0

        accepted = asyncio.create_task(accept_one(server))
        conn = await client.connect(server.addr(), ALPN, timeout=5)
        peer = await accepted
        send, recv = await conn.open_bi()
        await send.write_all(b"after the storm")
        await send.finish()
        _, precv = await peer.accept_bi()
        assert await precv.read_to_end(100) == b"after the storm"
        assert len(server._engine.core.connections) == 1
        assert len(asyncio.all_tasks()) <= tasks_before + 2
        conn.close()
    finally:
        await client.close()
        await server.close()
