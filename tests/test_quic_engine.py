"""The asyncio driver of the QUIC endpoint core, two engines over real UDP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest

from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.errors import (
    ApplicationClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    LocallyClosed,
    StreamReset,
)
from irohpy.quic import connection as qc
from irohpy.quic.connection import CAUSE_RESET
from irohpy.quic.endpoint import EndpointConfig, Offer, QuicEndpoint
from irohpy.tls.keys import private_key, public_key_bytes
from irohpy.tls.resumption import TicketCache, TicketStore
from tests.engine_restart import Restartable

ALPN = b"irohpy/engine-test/0"
T = 20.0
SERVER_SECRET = hashlib.sha256(b"engine-server").digest()
SERVER_ID = public_key_bytes(private_key(SERVER_SECRET))
CLIENT_SECRET = hashlib.sha256(b"engine-client").digest()
CLIENT_ID = public_key_bytes(private_key(CLIENT_SECRET))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[QuicEngine, QuicEngine]]:
    async with await QuicEngine.bind(SERVER_SECRET, config=EndpointConfig(alpns=[ALPN])) as server:
        async with await QuicEngine.bind(CLIENT_SECRET) as client:
            yield server, client


async def connected(server: QuicEngine, client: QuicEngine) -> tuple[EngineConnection, EngineConnection]:
    ours = await client.connect(server.local_addr, SERVER_ID, ALPN, timeout=T)
    theirs = await asyncio.wait_for(server.accept(), T)
    return ours, theirs


async def echo_through(ours: EngineConnection, theirs: EngineConnection, data: bytes) -> None:
    """``data`` out on a fresh bi stream, echoed back by the peer, and checked."""

    async def echo() -> None:
        send, recv = await theirs.accept_bi()
        await send.write_all(await recv.read_to_end(len(data)))
        send.finish()

    task = asyncio.create_task(asyncio.wait_for(echo(), T))
    send, recv = await ours.open_bi()
    await send.write_all(data)
    send.finish()
    assert await asyncio.wait_for(recv.read_to_end(len(data)), T) == data
    await task


async def test_echo_and_batching(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    ours, theirs = await connected(server, client)
    assert ours.peer_id == SERVER_ID and theirs.peer_id == CLIENT_ID and theirs.alpn == ALPN
    await echo_through(ours, theirs, os.urandom(4 << 20))
    # Per-connection counters for the application's stats: one connection per engine here,
    # so they are what each socket sent.
    assert client.core.sent(ours.quic) == (client._socket.sent_datagrams, client._socket.sent_bytes)
    assert server.core.sent(theirs.quic) == (server._socket.sent_datagrams, server._socket.sent_bytes)
    # One core pass per receive burst, never one per datagram.
    assert server._socket is not None and client._socket is not None
    received = server._socket.recv_datagrams + client._socket.recv_datagrams
    assert server.passes + client.passes < received + 2 * 100
    # Sends went out in GSO runs where the kernel has it.
    if client._socket.gso:
        assert client._socket.sent_syscalls < client._socket.sent_datagrams


async def test_one_timer_follows_the_core_deadline(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    ours, _ = await connected(server, client)
    await asyncio.sleep(0.05)
    for engine in (server, client):
        assert engine._timer is not None
        assert engine._timer.when() == engine.core.deadline()


async def test_close_codes_reset_and_datagrams(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    ours, theirs = await connected(server, client)
    ours.send_datagram(b"ping")
    assert await asyncio.wait_for(theirs.read_datagram(), T) == b"ping"
    send, _ = await ours.open_bi()
    await send.write(b"x")
    _, recv = await asyncio.wait_for(theirs.accept_bi(), T)
    send.reset(9)
    with pytest.raises(StreamReset) as reset:
        await asyncio.wait_for(recv.read_to_end(10), T)
    assert reset.value.error_code == 9
    ours.close(77, b"enough")
    term = await asyncio.wait_for(theirs.closed(), T)
    assert term.error_code == 77 and term.reason == b"enough" and term.application
    with pytest.raises(ApplicationClosed):
        await theirs.open_bi()
    with pytest.raises(LocallyClosed):
        await ours.open_bi()
    # Both ends forget the connection once the closing and draining periods are over.
    async def forgotten() -> None:
        while client.core.connections or server.core.connections:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(forgotten(), T)
    assert client.core.routes() == {} and server.core.routes() == {}


async def test_closing_the_engine_closes_its_connections(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    ours, theirs = await connected(server, client)
    await client.close()
    term = await asyncio.wait_for(theirs.closed(), T)
    assert term.cause == "peer"
    with pytest.raises(ConnectionLost):
        await ours.accept_bi()


async def test_connect_timeout_when_nobody_answers() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        async with await QuicEngine.bind(CLIENT_SECRET) as client:
            with pytest.raises(ConnectTimeout):
                await client.connect(silent.getsockname(), SERVER_ID, ALPN, timeout=0.5)
    finally:
        silent.close()


async def test_restarted_server_resets_the_client_over_udp() -> None:
    key = os.urandom(32)
    config = EndpointConfig(alpns=[ALPN], static_key=key)
    first = Restartable.start(SERVER_SECRET, config)
    port = first.sock.local_addr[1]
    second: Restartable | None = None
    try:
        async with await QuicEngine.bind(CLIENT_SECRET) as client:
            ours = await client.connect(("127.0.0.1", port), SERVER_ID, ALPN, timeout=T)
            await first.crash()
            second = Restartable.start(SERVER_SECRET, config, port)
            send, _ = await ours.open_bi()
            await send.write(os.urandom(4000))
            term = await asyncio.wait_for(ours.closed(), T)
            assert term.cause == CAUSE_RESET
            assert second.engine.core.stats.resets_sent >= 1
    finally:
        await first.crash()
        if second is not None:
            await second.crash()


async def test_wrong_endpoint_id_or_alpn_fails_the_dial(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    with pytest.raises(ConnectError):
        await client.connect(server.local_addr, CLIENT_ID, ALPN, timeout=T)
    with pytest.raises(ConnectError):
        await client.connect(server.local_addr, SERVER_ID, b"irohpy/other/0", timeout=T)
    ours, theirs = await connected(server, client)
    assert theirs.peer_id == CLIENT_ID


async def test_a_junk_flood_allocates_nothing_and_a_client_still_gets_through() -> None:
    """Junk Initials, unknown versions and random short headers at full speed from one socket,
    while a well-behaved client connects and echoes 1 MB."""
    config = EndpointConfig(alpns=[ALPN], stateless_rate=100.0, stateless_burst=20)
    async with await QuicEngine.bind(SERVER_SECRET, config=config) as server:
        async with await QuicEngine.bind(CLIENT_SECRET) as client:
            attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            attacker.setblocking(False)
            attacker.bind(("127.0.0.1", 0))
            body = os.urandom(1200)
            heads = [
                b"\xc0\x00\x00\x00\x01\x08",  # a version 1 Initial that will not decrypt
                b"\xc0\x0a\x0a\x0a\x0a\x08",  # an unknown version
                b"\x40",  # a short header for no connection
            ]
            tails = [b"\x08" + body[:8] + b"\x00\x44\xb0" + body, b"\x08" + body[:8] + body, body[:292]]
            sent = 0
            stop = asyncio.Event()

            async def flood() -> None:
                nonlocal sent
                while not stop.is_set():
                    for _ in range(50):
                        try:
                            kind = sent % 3
                            attacker.sendto(heads[kind] + os.urandom(8) + tails[kind], server.local_addr)
                            sent += 1
                        except BlockingIOError:
                            break
                    await asyncio.sleep(0)

            task = asyncio.create_task(flood())
            loop = asyncio.get_running_loop()
            try:
                start = loop.time()
                ours, theirs = await connected(server, client)
                await echo_through(ours, theirs, os.urandom(1 << 20))
                elapsed = loop.time() - start
            finally:
                stop.set()
                await task
                attacker.close()
            stats = server.core.stats
            assert sent > 1000
            assert stats.connections == 1 and len(server.core.connections) == 1
            assert stats.initials_rejected > 100 and stats.stateless_limited > 100
            sent_stateless = stats.version_negotiations + stats.resets_sent + stats.retries
            assert sent_stateless <= 20 + 100 * elapsed + 1


async def test_streams_nobody_accepts_are_bounded_and_finished_ones_are_let_go(
    pair: tuple[QuicEngine, QuicEngine],
) -> None:
    from irohpy.endpoint import engine as engine_module

    server, client = pair
    ours, theirs = await connected(server, client)
    limit = engine_module.MAX_PENDING_STREAMS
    n = limit + 50
    for i in range(n):
        uni = await ours.open_uni()
        await uni.write(b"%d" % i)
        uni.finish()

    async def queued() -> None:
        while theirs._next_peer[1] < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(queued(), T)
    assert len(theirs._incoming_uni) == limit
    for i in range(limit):
        recv = await asyncio.wait_for(theirs.accept_uni(), T)
        assert await asyncio.wait_for(recv.read_to_end(100), T) == b"%d" % i
    # Every stream was read to its end or refused: the connection keeps no stream objects.
    assert theirs._recv == {} and theirs._send == {} and ours._send == {}


async def test_credit_follows_reads_so_a_reader_that_never_reads_holds_one_window(
    pair: tuple[QuicEngine, QuicEngine],
) -> None:
    server, client = pair
    ours, theirs = await connected(server, client)
    send, _ = await ours.open_bi()
    await send.write(b"x")
    _, recv = await asyncio.wait_for(theirs.accept_bi(), T)
    window = server.core.config.transport.stream_window
    chunk = os.urandom(1 << 16)
    written = 0

    async def writer() -> None:
        nonlocal written
        while True:
            await send.write(chunk)
            written += len(chunk)

    task = asyncio.create_task(writer())
    try:
        # The peer sends until the stream window is full, then the writer stalls on credit.
        ss = ours.quic.streams.send[send.id]
        async with asyncio.timeout(T):
            while recv._buffered < window or ss.max_data != window or not send._must_wait():
                await asyncio.sleep(0.01)
        # Everything sent is acknowledged and a later datagram from the reader arrived: any
        # credit it had granted would have come first. None came for unread data.
        async with asyncio.timeout(T):
            while ss._acked_prefix() < window:
                await asyncio.sleep(0.01)
            theirs.send_datagram(b"after")
            assert await ours.read_datagram() == b"after"
        assert recv._buffered == window and ss.max_data == window
        assert theirs.quic.streams.conn_recv.limit == server.core.config.transport.conn_window
        assert not task.done()
        # Reading releases credit: far more than both windows flows.
        got = 0
        async with asyncio.timeout(T):
            while got < 16 << 20:
                got += len(await recv.read(1 << 20))
        assert written >= 16 << 20 and recv.bytes_read == got
        assert ss.max_data > window
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stopping_or_refusing_unread_data_returns_its_credit(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    ours, theirs = await connected(server, client)
    data = os.urandom(900_000)
    for _ in range(8):  # more than the connection window in total
        send, _ = await ours.open_bi()
        await send.write(b"x")
        _, recv = await asyncio.wait_for(theirs.accept_bi(), T)
        await send.write_all(data)
        send.finish()
        async with asyncio.timeout(T):
            while recv._buffered < len(data):
                await asyncio.sleep(0.01)
        recv.stop(1)  # unread bytes go back as credit
    assert theirs.quic.streams.conn_recv.consumed >= 8 * len(data)


async def test_tickets_resume_and_zero_rtt_data_arrives_before_the_handshake_completes() -> None:
    store, cache = TicketStore(), TicketCache()
    server_config = EndpointConfig(alpns=[ALPN], ticket_store=store)
    async with await QuicEngine.bind(SERVER_SECRET, config=server_config) as server:
        async with await QuicEngine.bind(CLIENT_SECRET, config=EndpointConfig(ticket_cache=cache)) as client:
            # Without a ticket, zero_rtt=True is a plain dial.
            first = await client.connect(server.local_addr, SERVER_ID, ALPN, timeout=T, zero_rtt=True)
            assert first._established.done() and not first.quic.session_resumed
            theirs = await asyncio.wait_for(server.accept(), T)
            async with asyncio.timeout(T):
                while not len(cache):
                    await asyncio.sleep(0.01)
            first.close(0, b"")
            await asyncio.wait_for(theirs.closed(), T)

            second = await client.connect(server.local_addr, SERVER_ID, ALPN, timeout=T, zero_rtt=True)
            assert not second._established.done()  # returned before any reply: the data is 0-RTT
            send, recv = await second.open_bi()
            await send.write(b"early request")
            send.finish()
            peer = await asyncio.wait_for(server.accept(), T)
            psend, precv = await asyncio.wait_for(peer.accept_bi(), T)
            assert await asyncio.wait_for(precv.read_to_end(100), T) == b"early request"
            await psend.write(b"answer")
            psend.finish()
            assert await asyncio.wait_for(recv.read_to_end(100), T) == b"answer"
            assert await asyncio.wait_for(second.established(), T) is True
            assert second.quic.session_resumed and peer.quic.session_resumed
            second.close(0, b"")


async def test_offers_are_accepted_refused_or_ignored_before_any_handshake() -> None:
    config = EndpointConfig(alpns=[ALPN], offer_initials=True)
    async with await QuicEngine.bind(SERVER_SECRET, config=config) as server:
        offers: asyncio.Queue[Offer] = asyncio.Queue()
        server.on_offer = offers.put_nowait
        async with await QuicEngine.bind(CLIENT_SECRET) as client:
            refused = asyncio.create_task(client.connect(server.local_addr, SERVER_ID, ALPN, timeout=T))
            offer = await asyncio.wait_for(offers.get(), T)
            assert offer.addr == client.local_addr and server.core.connections == []
            server.refuse_offer(offer)
            with pytest.raises(ConnectError, match="code 2"):
                await refused
            assert server.core.stats.connections == 0

            ignored = asyncio.create_task(client.connect(server.local_addr, SERVER_ID, ALPN, timeout=0.5))
            server.ignore_offer(await asyncio.wait_for(offers.get(), T))
            with pytest.raises(ConnectTimeout):
                await ignored

            dial = asyncio.create_task(client.connect(server.local_addr, SERVER_ID, ALPN, timeout=T))
            theirs = server.accept_offer(await asyncio.wait_for(offers.get(), T))
            ours = await dial
            assert await asyncio.wait_for(server.accept(), T) is theirs
            assert theirs.peer_id == CLIENT_ID and ours.peer_id == SERVER_ID
            assert server.core.handshakes_under_way == 0


async def test_what_a_passs_events_queue_goes_out_in_that_pass() -> None:
    """A hook answering an event (the socket layer starting a NAT-traversal round when the
    handshake completes, say) sends within the pass that delivered the event, not a loop
    iteration later: here every datagram is carried by hand, with no loop iteration between."""
    client_addr, server_addr = ("192.0.2.1", 1), ("192.0.2.2", 2)
    sent: dict[str, list[bytes]] = {"client": [], "server": []}
    client = QuicEngine(QuicEndpoint(CLIENT_SECRET), lambda datagrams, addr: sent["client"].extend(datagrams))
    server = QuicEngine(QuicEndpoint(SERVER_SECRET, EndpointConfig(alpns=[ALPN])),
                        lambda datagrams, addr: sent["server"].extend(datagrams))
    received: list[bytes] = []

    def on_new(conn: EngineConnection) -> None:
        conn.on_event = lambda ev: received.append(ev.data) if isinstance(ev, qc.DatagramReceived) else None

    server.on_new = on_new
    ours = client.dial(server_addr, SERVER_ID, ALPN)
    ours.on_event = lambda ev: ours.send_datagram(b"hello") if isinstance(ev, qc.HandshakeCompleted) else None

    def carry(src: str, engine: QuicEngine, addr: tuple[str, int]) -> None:
        batch = [(data, addr) for data in sent[src]]
        sent[src].clear()
        engine.receive(batch)

    client.receive(())  # the dial's Initial
    carry("client", server, client_addr)
    carry("server", client, server_addr)  # the client's handshake completes; its hook queues
    carry("client", server, client_addr)
    assert received == [b"hello"]
    await client.close()
    await server.close()


async def test_write_waits_on_unacknowledged_bytes_and_ready_on_credit(pair: tuple[QuicEngine, QuicEngine]) -> None:
    from irohpy.endpoint.engine_streams import SEND_AHEAD, SEND_HIGH_WATER

    server, client = pair
    ours, theirs = await connected(server, client)
    send, _ = await ours.open_bi()
    await send.write(b"x")
    _, recv = await asyncio.wait_for(theirs.accept_bi(), T)
    window = server.core.config.transport.stream_window
    # Nobody reads: write() runs ahead of the peer's credit until SEND_HIGH_WATER is unacked...
    chunk = bytes(1 << 16)
    written = 1
    async with asyncio.timeout(T):
        while send._unacked() < SEND_HIGH_WATER:
            await send.write(chunk)
            written += len(chunk)
    assert written > window + SEND_AHEAD
    stalled = asyncio.create_task(send.write(chunk))
    ready = asyncio.create_task(send.ready())
    await asyncio.sleep(0)
    assert not stalled.done() and not ready.done()
    # ...and reading lets both go on.
    reader = asyncio.create_task(recv.read_to_end(1 << 30))
    try:
        await asyncio.wait_for(asyncio.gather(stalled, ready), T)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert send._unacked() < SEND_HIGH_WATER


async def test_a_written_buffer_may_change_afterwards(pair: tuple[QuicEngine, QuicEngine]) -> None:
    server, client = pair
    ours, theirs = await connected(server, client)
    buf = bytearray(b"a" * 300_000)
    send, _ = await ours.open_bi()
    await send.write_all(buf)  # memoryview slices of a bytearray
    await send.write(memoryview(buf)[:1000])
    buf[:] = b"b" * len(buf)
    send.finish()
    _, recv = await asyncio.wait_for(theirs.accept_bi(), T)
    assert await asyncio.wait_for(recv.read_to_end(1 << 20), T) == b"a" * 301_000
