"""Endpoints through OUR relay server (a separate process): relay-only dialing,
many connections, restarts and failover."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess

import aiohttp
import pytest

from irohpy import Endpoint, EndpointAddr, RelayMode, RelayUrl, SecretKey, presets
from irohpy.base.addr import TransportAddr
from irohpy.relay.client import RelayClient
from irohpy.socket.paths import RelayPath
from tests.helpers import accept_one
from tests.relay_fixture import relay_server

ALPN = b"test/relay/0"
T = 10


async def relay_endpoint(urls: list[str], alpns: list[bytes] | None = None, relay_only: bool = False) -> Endpoint:
    return await Endpoint.bind(
        preset=presets.MINIMAL, relay_mode=RelayMode.custom(urls), alpns=alpns or [], bind_addrs=["127.0.0.1:0"],
        relay_only=relay_only,
    )


def relay_addr(ep: Endpoint) -> EndpointAddr:
    """The address with nothing but the home relay: no way to go direct."""
    home = ep.home_relay
    assert home is not None
    return EndpointAddr(ep.id, frozenset({TransportAddr.Relay(home)}))


async def test_relay_only_streams_and_datagrams() -> None:
    async with relay_server() as relay:
        a = await relay_endpoint([relay.url], relay_only=True)
        b = await relay_endpoint([relay.url], [ALPN], relay_only=True)
        try:
            async with asyncio.timeout(T):
                await a.online()
                await b.online()
            assert TransportAddr.Relay(RelayUrl.parse(relay.url)) in b.addr().addrs
            before = relay.metrics()
            accepted = asyncio.create_task(accept_one(b, T))
            conn = await a.connect(relay_addr(b), ALPN, timeout=T)
            peer = await accepted
            assert peer.remote_id == a.id and conn.remote_id == b.id
            payload = os.urandom(500_000)
            send, recv = await conn.open_bi()
            await send.write_all(payload)
            await send.finish()
            psend, precv = await peer.accept_bi()
            assert await precv.read_to_end(1 << 20) == payload
            await psend.write_all(b"ok")
            await psend.finish()
            assert await recv.read_to_end(10) == b"ok"
            conn.send_datagram(b"via relay")
            assert await asyncio.wait_for(peer.read_datagram(), T) == b"via relay"
            assert isinstance(conn.path, RelayPath) and isinstance(peer.path, RelayPath)
            after = relay.metrics()
            assert relay.forwarded_bytes(after) - relay.forwarded_bytes(before) >= len(payload)
            conn.close()
        finally:
            await a.close()
            await b.close()


async def test_fifty_concurrent_connections_through_relay() -> None:
    async with relay_server() as relay:
        server = await relay_endpoint([relay.url], [ALPN])
        clients = [await relay_endpoint([relay.url]) for _ in range(5)]
        try:
            async with asyncio.timeout(T):
                await server.online()
                await asyncio.gather(*(c.online() for c in clients))

            async def serve() -> None:
                async def one(incoming) -> None:  # type: ignore[no-untyped-def]
                    conn = await incoming.accept()
                    send, recv = await conn.accept_bi()
                    await send.write_all(await recv.read_to_end(1000))
                    await send.finish()
                    await conn.closed()

                tasks = [asyncio.create_task(one(await server.accept())) for _ in range(50)]
                await asyncio.gather(*tasks)

            serving = asyncio.create_task(serve())
            target = relay_addr(server)

            async def dial(i: int) -> bytes:
                conn = await clients[i % 5].connect(target, ALPN, timeout=30)
                send, recv = await conn.open_bi()
                await send.write_all(b"n%d" % i)
                await send.finish()
                data = await recv.read_to_end(100)
                conn.close()
                return data

            async with asyncio.timeout(60):
                results = await asyncio.gather(*(dial(i) for i in range(50)))
                await serving
            assert results == [b"n%d" % i for i in range(50)]
        finally:
            await asyncio.gather(server.close(), *(c.close() for c in clients))


async def echo_once(ep: Endpoint) -> None:
    conn = await accept_one(ep, T)
    send, recv = await conn.accept_bi()
    await send.write_all(await recv.read_to_end(1000))
    await send.finish()
    await conn.closed()


async def round_trip(client: Endpoint, target: EndpointAddr, data: bytes) -> bytes:
    conn = await client.connect(target, ALPN, timeout=T)
    send, recv = await conn.open_bi()
    await send.write_all(data)
    await send.finish()
    reply = await recv.read_to_end(1000)
    conn.close()
    return reply


async def test_relay_restart_reconnects_and_new_connection_within_5s() -> None:
    async with relay_server() as relay:
        a = await relay_endpoint([relay.url])
        b = await relay_endpoint([relay.url], [ALPN])
        try:
            async with asyncio.timeout(T):
                await asyncio.gather(a.online(), b.online())
            target = relay_addr(b)
            await relay.restart()
            loop = asyncio.get_running_loop()
            start = loop.time()
            server = asyncio.create_task(echo_once(b))
            async with asyncio.timeout(5):
                while True:
                    try:
                        reply = await round_trip(a, target, b"after restart")
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
            assert reply == b"after restart"
            assert loop.time() - start < 5
            await asyncio.wait_for(server, T)
        finally:
            await a.close()
            await b.close()


async def _until(check: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_network_change_remakes_a_relay_connection_whose_local_address_is_gone() -> None:
    """As iroh's CheckConnection: a connection from an address we still have is only pinged;
    one from an address we lost is dropped and made again at once, with no ping deadline and
    no close handshake to wait out."""
    async with relay_server() as relay, aiohttp.ClientSession() as session:
        client = RelayClient(RelayUrl.parse(relay.url), SecretKey.generate(), session, lambda *_: None)
        try:
            assert await client.wait_connected(T)
            m = client.metrics
            client.check_soon(["192.0.2.7", "127.0.0.1"])
            await _until(lambda: m.pings_sent.get() == 1, T)
            client.check_soon(["192.0.2.7", "::1"])
            await _until(lambda: client.connects == 2 and client.is_connected, T)
            assert m.local_addr_gone.get() == 1
            assert m.ping_timeouts.get() == 0 and m.pings_sent.get() == 1, "it went by the ping deadline"
            assert m.disconnects.get() == 1
        finally:
            await client.close()


async def test_failover_to_second_relay_when_home_dies() -> None:
    async with relay_server() as r1, relay_server() as r2:
        ep = await relay_endpoint([r1.url, r2.url])
        try:
            async with asyncio.timeout(T):
                await ep.online()
            first = ep.home_relay
            assert str(first) in (r1.url, r2.url)
            dying, other = (r1, r2) if str(first) == r1.url else (r2, r1)
            watcher = ep.watch_addr()
            assert (await anext(watcher)).relay_urls() == [first]
            await dying.stop()
            async with asyncio.timeout(15):
                while True:
                    addr = await anext(watcher)
                    if addr.relay_urls() == [RelayUrl.parse(other.url)]:
                        break
            assert ep.home_relay == RelayUrl.parse(other.url)
            await watcher.aclose()
        finally:
            await ep.close()


@pytest.mark.netns
async def test_udp_blocked_entirely_falls_back_to_relay_over_tcp() -> None:
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nft (nftables) is not installed; it is needed to block UDP")
    table = f"irohpy_no_udp_{os.getpid()}"
    rules = (f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
             "  meta l4proto udp counter drop\n }\n}\n")
    async with relay_server() as relay:
        a = await relay_endpoint([relay.url])
        b = await relay_endpoint([relay.url], [ALPN])
        subprocess.run([nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
        try:
            async with asyncio.timeout(T):
                await asyncio.gather(a.online(), b.online())
            full = b.addr()
            assert full.ip_addrs() and full.relay_urls()  # both kinds offered; only TCP works
            server = asyncio.create_task(echo_once(b))
            assert await round_trip(a, full, b"no udp at all") == b"no udp at all"
            await asyncio.wait_for(server, T)
            assert isinstance(a._remotes.for_id(b.id).selected, RelayPath)
            out = subprocess.run([nft, "list", "table", "inet", table], text=True, check=True,
                                 capture_output=True).stdout
            assert int(re.search(r"counter packets (\d+)", out).group(1)) > 0  # type: ignore[union-attr]
        finally:
            subprocess.run([nft, "delete", "table", "inet", table], check=False, capture_output=True)
            await a.close()
            await b.close()


async def test_relays_added_and_removed_at_run_time() -> None:
    async with relay_server() as r1, relay_server() as r2:
        ep = await relay_endpoint([r1.url])
        try:
            async with asyncio.timeout(T):
                await ep.online()
            assert ep.home_relay == RelayUrl.parse(r1.url)
            ep.insert_relay(r2.url)
            await ep.remove_relay(r1.url)
            async with asyncio.timeout(15):
                while ep.home_relay != RelayUrl.parse(r2.url):
                    await asyncio.sleep(0.05)
            assert ep.addr().relay_urls() == [RelayUrl.parse(r2.url)]
        finally:
            await ep.close()
