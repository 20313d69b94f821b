"""The QUIC engine over the socket layer: a dial fans out from the mapped address, then every\npath is a real network path, direct or relayed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from irohpy.base.keys import SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.endpoint.engine_socket import SocketBridge
from irohpy.quic.connection import CAUSE_RESET
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint
from irohpy.relay.map import RelayMap
from irohpy.socket.paths import RelayPath
from irohpy.socket.relay_transport import RelayTransport
from irohpy.socket.remote_map import RemoteMap
from irohpy.socket.transport import Transport
from tests.engine_restart import Restartable
from tests.relay_fixture import relay_server

ALPN = b"irohpy/engine-socket-test/0"
T = 20.0


@dataclass
class Node:
    secret: SecretKey
    remotes: RemoteMap
    transport: Transport
    bridge: SocketBridge
    engine: QuicEngine

    @property
    def id(self) -> bytes:
        return bytes(self.secret.public())


@contextlib.asynccontextmanager
async def node(*, relay: RelayUrl | None = None, udp: bool = True) -> AsyncIterator[Node]:
    secret = SecretKey.generate()
    remotes = RemoteMap()
    engine: QuicEngine
    transport = Transport(lambda batch: engine.receive(batch))
    bridge = SocketBridge(transport, remotes)
    engine = QuicEngine(QuicEndpoint(secret.to_bytes(), EndpointConfig(alpns=[ALPN])), bridge.send)
    bridge.attach(engine)
    if udp:
        transport.bind([("127.0.0.1", 0)])
    if relay is not None:
        transport.relay = RelayTransport(secret, RelayMap([relay]), transport.receive_relayed)
    try:
        yield Node(secret, remotes, transport, bridge, engine)
    finally:
        await engine.close()
        if transport.relay is not None:
            await transport.relay.close()
        transport.close()


async def echo_once(conn: EngineConnection, peer: EngineConnection, size: int) -> None:
    data = os.urandom(size)

    async def echo() -> None:
        send, recv = await peer.accept_bi()
        await send.write_all(await recv.read_to_end(size))
        send.finish()

    task = asyncio.create_task(echo())
    try:
        send, recv = await conn.open_bi()
        await send.write_all(data)
        send.finish()
        assert await asyncio.wait_for(recv.read_to_end(size), T) == data
        await asyncio.wait_for(task, T)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_dial_fans_out_and_goes_on_where_the_server_answered() -> None:
    async with node() as server, node() as client:
        server_addr = server.transport.local_addrs()[0]
        client_addr = client.transport.local_addrs()[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
            hole.bind(("127.0.0.1", 0))
            black_hole = hole.getsockname()
            remote = client.remotes.for_id(server.secret.public())
            remote.add_addr(black_hole, "dial")
            remote.add_addr(server_addr, "dial")
            conn = await client.engine.connect(remote.mapped, server.id, ALPN, timeout=T)
            peer = await asyncio.wait_for(server.engine.accept(), T)
            assert hole.recv(2000)  # the first flight went to every address
        # The dial went on on the path the server answered from; the server names the client's.
        assert conn.quic.peer_address == server_addr
        assert peer.quic.peer_address == client_addr
        await echo_once(conn, peer, 2 << 20)
        datagrams, nbytes = client.engine.core.received(conn.quic)
        assert datagrams > 100 and nbytes > 2 << 20
        # A datagram with the connection's CID from another address does not authenticate:
        # it opens no path and moves none.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
            spoofer.bind(("127.0.0.1", 0))
            cid = peer.quic.host_cids[0]
            spoofer.sendto(bytes([0x40]) + cid + os.urandom(60), server_addr)
            marker = os.urandom(8)
            conn.send_datagram(marker)  # lands after the spoof: then the spoof was handled
            assert await asyncio.wait_for(peer.read_datagram(), T) == marker
        assert [p.addr for p in peer.quic.paths.values()] == [client_addr]
        assert not peer.terminated
        conn.close(0, b"done")
        await asyncio.wait_for(peer.closed(), T)


async def test_relayed_connection_without_udp() -> None:
    async with relay_server() as relay:
        url = RelayUrl.parse(relay.url)
        async with node(relay=url, udp=False) as server, node(relay=url, udp=False) as client:
            assert server.transport.relay is not None
            await asyncio.wait_for(server.transport.relay.online(), T)
            remote = client.remotes.for_id(server.secret.public())
            remote.add_addr(RelayPath(url, server.secret.public()), "dial")
            conn = await client.engine.connect(remote.mapped, server.id, ALPN, timeout=T)
            peer = await asyncio.wait_for(server.engine.accept(), T)
            assert conn.quic.peer_address == RelayPath(url, server.secret.public())
            assert peer.quic.peer_address == RelayPath(url, client.secret.public())
            await echo_once(conn, peer, 1 << 20)
            assert relay.forwarded_bytes(relay.metrics()) > 2 << 20
            conn.close(0, b"done")
            await asyncio.wait_for(peer.closed(), T)


async def test_a_restarted_peers_stateless_reset_reaches_the_connection_by_its_path() -> None:
    server_secret = SecretKey.generate()
    config = EndpointConfig(alpns=[ALPN], static_key=os.urandom(32))
    first = Restartable.start(server_secret.to_bytes(), config)
    port = first.sock.local_addr[1]
    second: Restartable | None = None
    try:
        async with node() as client:
            remote = client.remotes.for_id(server_secret.public())
            remote.add_addr(("127.0.0.1", port), "dial")
            conn = await client.engine.connect(remote.mapped, bytes(server_secret.public()), ALPN, timeout=T)
            await first.crash()
            second = Restartable.start(server_secret.to_bytes(), config, port)
            send, _ = await conn.open_bi()
            await send.write(os.urandom(4000))
            # The reset carries no CID of ours: only the path it came on names the connection.
            term = await asyncio.wait_for(conn.closed(), T)
            assert term.cause == CAUSE_RESET
            assert second.engine.core.stats.resets_sent >= 1
    finally:
        await first.crash()
        if second is not None:
            await second.crash()
