"""Python ↔ Python endpoints over real UDP sockets on loopback."""

from __future__ import annotations

import asyncio
import os

import pytest

from irohpy import EndpointAddr, SecretKey
from irohpy.endpoint.connection import Side
from irohpy.errors import (
    ApplicationClosed,
    ConnectError,
    ConnectTimeout,
    DatagramError,
    EndpointClosed,
    IdleTimeout,
    LocallyClosed,
    ReadError,
    StreamReset,
    StreamStopped,
)
from tests.helpers import BOTH, V6, accept_one, bind, endpoints

ALPN = b"irohpy/test/0"


async def echo_server(ep, *, count: int = 1) -> None:  # type: ignore[no-untyped-def]
    for _ in range(count):
        conn = await accept_one(ep)
        send, recv = await conn.accept_bi()
        await send.write_all(await recv.read_to_end(1 << 24))
        await send.finish()
        await conn.closed()


async def test_connect_by_addr_and_echo_bi() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        server = asyncio.create_task(echo_server(b))
        conn = await a.connect(b.addr(), ALPN)
        assert conn.remote_id == b.id
        assert conn.alpn == ALPN
        assert conn.side is Side.CLIENT
        send, recv = await conn.open_bi()
        payload = os.urandom(300_000)
        await send.write_all(payload)
        await send.finish()
        assert await recv.read_to_end(1 << 20) == payload
        conn.close(0, b"bye")
        await asyncio.wait_for(server, 5)


async def test_acceptor_learns_dialer_id_and_side() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        server_conn = await accepted
        assert server_conn.remote_id == a.id
        assert server_conn.side is Side.SERVER
        assert server_conn.alpn == ALPN
        conn.close()


async def test_path_events_come_one_loop_iteration_after_the_change_and_end_with_the_connection() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        await accepted
        remote = conn._remote
        assert remote is not None and remote.selected is not None
        seen = []

        async def watch() -> None:
            async for event in conn.path_events():
                seen.append(event)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)  # subscribed, waiting
        remote._emit("selected", remote.selected, 0.0)  # what a change of the selection emits
        await asyncio.sleep(0)
        assert [e.kind for e in seen] == ["selected"]
        conn.close()
        await asyncio.wait_for(watcher, 5)
        assert not remote.subscribers


async def test_ipv6_loopback() -> None:
    async with endpoints(2, [ALPN], addrs=V6) as (a, b):
        server = asyncio.create_task(echo_server(b))
        conn = await a.connect(b.addr(), ALPN)
        send, recv = await conn.open_bi()
        await send.write_all(b"over v6")
        await send.finish()
        assert await recv.read_to_end(100) == b"over v6"
        conn.close()
        await asyncio.wait_for(server, 5)


async def test_dial_fans_out_to_all_addresses_and_settles_on_one() -> None:
    async with endpoints(2, [ALPN], addrs=BOTH) as (a, b):
        server = asyncio.create_task(echo_server(b))
        addr = b.addr()
        assert len(addr.ip_addrs()) == 2
        conn = await a.connect(addr, ALPN)
        send, recv = await conn.open_bi()
        await send.write_all(b"x" * 10_000)
        await send.finish()
        assert await recv.read_to_end(1 << 20) == b"x" * 10_000
        selected = conn.path
        assert selected in {ip.sockaddr for ip in addr.ip_addrs()}
        conn.close()
        await asyncio.wait_for(server, 5)


async def test_uni_streams_both_ways() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        out = await conn.open_uni()
        await out.write_all(b"to server")
        await out.finish()
        recv = await peer.accept_uni()
        assert await recv.read_to_end(100) == b"to server"
        back = await peer.open_uni()
        await back.write_all(b"to client")
        await back.finish()
        assert await (await conn.accept_uni()).read_to_end(100) == b"to client"
        conn.close()


async def test_datagrams() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        size = conn.max_datagram_size()
        assert size is not None and size >= 1100
        conn.send_datagram(b"d" * size)
        assert await asyncio.wait_for(peer.read_datagram(), 5) == b"d" * size
        with pytest.raises(DatagramError):
            conn.send_datagram(b"x" * (size + 1))
        conn.close()


async def test_unread_datagrams_are_bounded_and_later_ones_still_arrive() -> None:
    """Datagrams nobody reads are kept up to 256 or 1.25 MB, oldest dropped first. The count
    bound must release their bytes too: 1.5 MB of small datagrams dropped by count once left
    the byte bound full for good, and every later datagram was dropped on arrival."""
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        loop = asyncio.get_running_loop()
        sent = 0

        async def wave(count: int, size: int) -> None:
            nonlocal sent
            base = peer.stats().udp_rx_bytes
            for _ in range(count):
                conn.send_datagram(sent.to_bytes(4, "big") + bytes(size - 4))
                sent += 1
            deadline = loop.time() + 5.0
            while peer.stats().udp_rx_bytes < base + count * size and loop.time() < deadline:
                await asyncio.sleep(0.002)

        async def drain() -> list[int]:
            got = []
            while True:
                try:
                    data = await asyncio.wait_for(peer.read_datagram(), 0.5)
                except asyncio.TimeoutError:
                    return got
                got.append(int.from_bytes(data[:4], "big"))

        for _ in range(100):  # 20,000 datagrams of 100 bytes: 2 MB, all but 256 dropped by count
            await wave(200, 100)
        kept = await drain()
        assert 0 < len(kept) <= 256 and kept == sorted(kept) and kept[-1] >= sent - 50
        first = sent
        for _ in range(20):  # 1,000 of 1 kB, read after every 50: each wave fits both bounds
            await wave(50, 1000)
            kept += await drain()
        assert len([n for n in kept if n >= first]) > 900
        conn.close()


async def test_close_reason_reaches_peer_and_local_side() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        conn.close(42, b"done here")
        reason = await asyncio.wait_for(peer.closed(), 5)
        assert isinstance(reason, ApplicationClosed)
        assert (reason.error_code, reason.reason) == (42, b"done here")
        assert isinstance(await conn.closed(), LocallyClosed)
        with pytest.raises(ApplicationClosed):
            await peer.accept_bi()


async def test_stream_reset_and_stop() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        send, _ = await conn.open_bi()
        await send.write(b"partial")
        send.reset(7)
        _, precv = await peer.accept_bi()
        with pytest.raises(StreamReset) as info:
            await asyncio.wait_for(precv.read_to_end(100), 5)
        assert info.value.error_code == 7

        send2, _ = await conn.open_bi()
        await send2.write(b"hello")
        _, precv2 = await peer.accept_bi()
        assert await precv2.read(5) == b"hello"
        precv2.stop(9)
        assert await asyncio.wait_for(send2.stopped(), 5) == 9
        with pytest.raises(StreamStopped):
            await send2.write(b"more")
        conn.close()


async def test_stop_and_reset_after_the_stream_is_gone_are_harmless() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        send, recv = await conn.open_bi()
        await send.write_all(b"request")
        await send.finish()
        psend, precv = await peer.accept_bi()
        assert await precv.read_to_end(100) == b"request"
        psend.reset(3)  # the answer is refused; our FIN was acknowledged long ago
        with pytest.raises(StreamReset):
            await asyncio.wait_for(recv.read_to_end(100), 5)
        await asyncio.sleep(0.2)  # let aioquic discard the finished stream on both sides
        recv.stop(1)
        send.reset(1)
        psend.reset(4)
        precv.stop(2)
        assert not conn.is_closed and not peer.is_closed
        conn.close()


async def test_read_exact_and_limits() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        send, _ = await conn.open_bi()
        await send.write_all(b"0123456789")
        await send.finish()
        _, recv = await peer.accept_bi()
        assert await recv.read_exact(4) == b"0123"
        with pytest.raises(ReadError):
            await recv.read_exact(100)

        send, _ = await conn.open_bi()
        await send.write_all(b"z" * 1000)
        await send.finish()
        _, recv = await peer.accept_bi()
        with pytest.raises(ReadError):
            await recv.read_to_end(999)
        conn.close()


async def test_wrong_key_fails_cleanly() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        imposter = EndpointAddr(SecretKey.generate().public(), b.addr().addrs)
        accepted = asyncio.create_task(accept_one(b))
        with pytest.raises(ConnectError, match="0x12a|certificate"):
            await a.connect(imposter, ALPN, timeout=5)
        with pytest.raises(ConnectError):
            await accepted
        # b keeps serving real connections afterwards
        server = asyncio.create_task(echo_server(b))
        conn = await a.connect(b.addr(), ALPN)
        send, recv = await conn.open_bi()
        await send.write_all(b"still fine")
        await send.finish()
        assert await recv.read_to_end(100) == b"still fine"
        conn.close()
        await asyncio.wait_for(server, 5)


async def test_wrong_alpn_fails_on_both_sides() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        with pytest.raises(ConnectError, match="0x178"):
            await a.connect(b.addr(), b"not/offered", timeout=5)
        with pytest.raises(ConnectError):
            await accepted


async def test_refuse_and_ignore() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        async def refuse_one() -> None:
            incoming = await b.accept()
            assert incoming is not None
            incoming.refuse()

        task = asyncio.create_task(refuse_one())
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectError, match="0x2"):
            await a.connect(b.addr(), ALPN, timeout=5)
        assert loop.time() - start < 1.0
        await task

        async def ignore_one() -> None:
            incoming = await b.accept()
            assert incoming is not None
            incoming.ignore()

        task = asyncio.create_task(ignore_one())
        with pytest.raises(ConnectTimeout):
            await a.connect(b.addr(), ALPN, timeout=0.5)
        await task


async def test_self_connect_and_empty_alpn_refused() -> None:
    async with endpoints(1, [ALPN]) as (a,):
        with pytest.raises(ConnectError):
            await a.connect(a.addr(), ALPN)
        other = SecretKey.generate().public()
        with pytest.raises(ConnectError):
            await a.connect(EndpointAddr(other, a.addr().addrs), b"")
        with pytest.raises(ConnectError, match="no addresses"):
            await a.connect(other, ALPN)


async def test_closed_endpoint_raises() -> None:
    ep = await bind([ALPN])
    await ep.close()
    assert ep.is_closed
    with pytest.raises(EndpointClosed):
        await ep.connect(SecretKey.generate().public(), ALPN)
    assert await ep.accept() is None
    await ep.close()


async def test_endpoint_close_closes_connections_with_code_zero() -> None:
    a = await bind([ALPN])
    async with endpoints(1, [ALPN]) as (b,):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        await a.close()
        reason = await asyncio.wait_for(peer.closed(), 5)
        assert isinstance(reason, ApplicationClosed) and reason.error_code == 0
        assert conn.is_closed


async def test_hundred_concurrent_connections() -> None:
    async with endpoints(1, [ALPN]) as (server,):
        async def serve() -> None:
            async def one(incoming) -> None:  # type: ignore[no-untyped-def]
                conn = await incoming.accept()
                send, recv = await conn.accept_bi()
                await send.write_all(await recv.read_to_end(1000))
                await send.finish()
                await conn.closed()

            tasks = []
            for _ in range(100):
                incoming = await server.accept()
                tasks.append(asyncio.create_task(one(incoming)))
            await asyncio.gather(*tasks)

        server_task = asyncio.create_task(serve())
        clients = [await bind() for _ in range(10)]
        try:
            async def dial(i: int) -> bytes:
                conn = await clients[i % 10].connect(server.addr(), ALPN, timeout=20)
                send, recv = await conn.open_bi()
                await send.write_all(f"conn {i}".encode())
                await send.finish()
                data = await recv.read_to_end(100)
                conn.close()
                return data

            async with asyncio.timeout(60):
                results = await asyncio.gather(*(dial(i) for i in range(100)))
            assert results == [f"conn {i}".encode() for i in range(100)]
            await asyncio.wait_for(server_task, 10)
        finally:
            await asyncio.gather(*(c.close() for c in clients))


async def test_thousand_streams_on_one_connection() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted

        async def serve() -> None:
            async def one(send, recv) -> None:  # type: ignore[no-untyped-def]
                await send.write_all(await recv.read_to_end(100))
                await send.finish()

            tasks = []
            for _ in range(1000):
                send, recv = await peer.accept_bi()
                tasks.append(asyncio.create_task(one(send, recv)))
            await asyncio.gather(*tasks)

        server = asyncio.create_task(serve())

        async def one_stream(i: int) -> bytes:
            send, recv = await conn.open_bi()
            await send.write_all(i.to_bytes(4, "big"))
            await send.finish()
            return await recv.read_to_end(100)

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(one_stream(i) for i in range(1000)))
        assert results == [i.to_bytes(4, "big") for i in range(1000)]
        await asyncio.wait_for(server, 10)
        conn.close()


async def test_backpressure_bounds_memory() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        send, _ = await conn.open_bi()
        await send.write(b"start")
        _, recv = await peer.accept_bi()
        chunk = b"\xab" * 65536

        async def writer() -> int:
            written = 0
            while True:
                await send.write(chunk)
                written += len(chunk)

        task = asyncio.create_task(writer())
        await asyncio.sleep(1.0)
        # Nobody reads: the writer must be stuck with bounded buffers.
        assert not task.done()
        from irohpy.endpoint.endpoint import STREAM_WINDOW
        from irohpy.endpoint.streams import SEND_HIGH_WATER

        assert recv._buffered <= STREAM_WINDOW + 65536
        assert send._unacked() <= SEND_HIGH_WATER + len(chunk)
        # Reading releases it.
        got = 0
        async with asyncio.timeout(10):
            while got < 8 * 1024 * 1024:
                got += len(await recv.read(1 << 20))
        assert not task.done()
        task.cancel()
        conn.close()


async def test_keepalive_holds_idle_connection_open_and_idle_timeout_fires() -> None:
    async with endpoints(2, [ALPN], idle_timeout=1.0, keep_alive=0.3) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN)
        peer = await accepted
        await asyncio.sleep(2.5)
        assert not conn.is_closed and not peer.is_closed
        # The peer vanishes without a word: no more packets reach us.
        b._transport.close()
        reason = await asyncio.wait_for(conn.closed(), 5)
        assert isinstance(reason, IdleTimeout)


async def test_stats_count_traffic() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        server = asyncio.create_task(echo_server(b))
        conn = await a.connect(b.addr(), ALPN)
        send, recv = await conn.open_bi()
        await send.write_all(b"s" * 100_000)
        await send.finish()
        await recv.read_to_end(1 << 20)
        stats = conn.stats()
        assert stats.udp_tx_bytes > 100_000 and stats.udp_rx_bytes > 100_000
        assert stats.udp_tx_datagrams > 80 and stats.udp_rx_datagrams > 80
        assert 0 < stats.rtt < 0.1
        conn.close()
        await asyncio.wait_for(server, 5)


async def test_session_resumption_and_opt_in_zero_rtt() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        first = await a.connect(b.addr(), ALPN)
        await accepted
        # A session ticket arrives after the handshake; give it a moment.
        for _ in range(100):
            if len(a._ticket_cache):
                break
            await asyncio.sleep(0.01)
        first.close()
        assert len(a._ticket_cache)

        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN, zero_rtt=True)
        assert not conn._handshake.done()  # returned before the handshake ended
        send, recv = await conn.open_bi()
        await send.write_all(b"idempotent request")
        await send.finish()
        peer = await accepted
        psend, precv = await peer.accept_bi()
        assert await precv.read_to_end(100) == b"idempotent request"
        assert await asyncio.wait_for(conn.handshake_confirmed(), 5) is True
        assert peer.zero_rtt_accepted and peer.quic.session_resumed
        assert conn.remote_id == b.id
        conn.close()


async def test_zero_rtt_without_ticket_is_a_normal_connect() -> None:
    async with endpoints(2, [ALPN]) as (a, b):
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), ALPN, zero_rtt=True)
        assert conn._handshake.done()
        assert await conn.handshake_confirmed() is False
        await accepted
        conn.close()
