"""Python and Rust iroh endpoints reaching each other through OUR relay, both directions."""

from __future__ import annotations

import asyncio
import os

import pytest

from irohpy import EndpointAddr, EndpointId, RelayUrl
from irohpy.base.addr import TransportAddr
from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.paths import RelayPath
from tests.helpers import accept_one
from tests.relay_fixture import relay_server
from tests.test_relay_client import ALPN, relay_addr, relay_endpoint

pytestmark = pytest.mark.refpeer

T = 15


async def bind_ref_relay(iroh, url: str, alpns=None):  # type: ignore[no-untyped-def]
    ep = await iroh.Endpoint.bind(iroh.EndpointOptions(
        preset=iroh.preset_minimal(),
        relay_mode=iroh.RelayMode.custom_from_urls([url]),
        bind_addr="127.0.0.1:0",
        alpns=alpns,
    ))
    await asyncio.wait_for(ep.online(), T)
    return ep


async def test_python_dials_rust_through_our_relay(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    async with relay_server() as relay:
        ref = await bind_ref_relay(iroh, relay.url, [ALPN])
        ours = await relay_endpoint([relay.url], relay_only=True)  # nothing but the relay
        try:
            await asyncio.wait_for(ours.online(), T)

            async def serve() -> None:
                inc = await ref.accept_next()
                conn = await (await inc.accept()).connect()
                bi = await conn.accept_bi()
                await bi.send().write_all(await bi.recv().read_to_end(1 << 20))
                await bi.send().finish()
                await conn.closed()

            server = asyncio.create_task(serve())
            before = relay.metrics()
            target = EndpointAddr(EndpointId.from_bytes(ref.id().to_bytes()),
                                  frozenset({TransportAddr.Relay(RelayUrl.parse(relay.url))}))
            async with asyncio.timeout(T):
                conn = await ours.connect(target, ALPN)
                payload = os.urandom(100_000)
                send, recv = await conn.open_bi()
                await send.write_all(payload)
                await send.finish()
                assert await recv.read_to_end(1 << 20) == payload
                assert isinstance(conn.path, RelayPath)
                conn.close(0, b"bye")
                await server
            assert relay.forwarded_bytes(relay.metrics()) - relay.forwarded_bytes(before) >= 2 * len(payload)
        finally:
            await ours.close()
            await ref.close()


async def test_rust_dials_python_through_our_relay(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    async with relay_server() as relay:
        ours = await relay_endpoint([relay.url], [ALPN])
        ref = await bind_ref_relay(iroh, relay.url)
        try:
            await asyncio.wait_for(ours.online(), T)
            server = asyncio.create_task(accept_one(ours, T))
            before = relay.metrics()
            target = iroh.EndpointAddr(iroh.EndpointId.from_bytes(bytes(ours.id)), relay.url, [])
            async with asyncio.timeout(T):
                conn = await ref.connect(target, ALPN)
                peer = await server
                assert peer.remote_id == EndpointId.from_bytes(ref.id().to_bytes())
                bi = await conn.open_bi()
                await bi.send().write_all(b"from rust via relay")
                await bi.send().finish()
                psend, precv = await peer.accept_bi()
                assert await precv.read_to_end(100) == b"from rust via relay"
                await psend.write_all(b"python answers")
                await psend.finish()
                assert await bi.recv().read_to_end(100) == b"python answers"
                conn.close(0, b"bye")
            assert relay.forwarded_bytes(relay.metrics()) > relay.forwarded_bytes(before)
            stats = {name: counter.value for name, counter in ref.stats().items()}
            assert stats["socket:send_relay"] > 0 and stats["socket:recv_data_relay"] > 0
        finally:
            await ours.close()
            await ref.close()


async def test_we_and_a_rust_peer_punch_to_a_direct_path_and_stay_there(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    """Dialed by relay URL alone, the connection goes direct inside QUIC (multipath, n0 NAT
    traversal) and stays there through rounds and keep-alives: no flapping."""
    iroh = iroh_loop
    async with relay_server() as relay:
        ref = await bind_ref_relay(iroh, relay.url, [ALPN])
        ours = await relay_endpoint([relay.url])
        try:
            await asyncio.wait_for(ours.online(), T)

            async def serve() -> None:
                inc = await ref.accept_next()
                conn = await (await inc.accept()).connect()
                while True:
                    bi = await conn.accept_bi()
                    await bi.send().write_all(await bi.recv().read_to_end(1 << 16))
                    await bi.send().finish()

            server = asyncio.create_task(serve())
            target = EndpointAddr(EndpointId.from_bytes(ref.id().to_bytes()),
                                  frozenset({TransportAddr.Relay(RelayUrl.parse(relay.url))}))
            remote = ours._remotes.for_id(target.id)
            events = remote.subscribe()  # from before the dial: nothing missed
            conn = await ours.connect(target, ALPN, timeout=T)
            async with asyncio.timeout(T):
                while not conn.is_direct:
                    await asyncio.sleep(0.02)
            for i in range(24):  # 12 s: rounds every 5 s, keep-alives on every path
                async with asyncio.timeout(T):
                    send, recv = await conn.open_bi()
                    await send.write_all(b"tick %d" % i)
                    await send.finish()
                    assert await recv.read_to_end(100) == b"tick %d" % i
                assert conn.is_direct
                await asyncio.sleep(0.5)
            assert not conn.is_closed
            selected = []
            while not events.empty():
                event = events.get_nowait()
                if event.kind in ("selected", "fallback"):
                    selected.append(event.path.kind)
            assert selected == ["relay", "direct"], selected
            assert ours.metrics().group(SocketMetrics).holepunch_attempts.get() >= 1
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
        finally:
            await ours.close()
            await ref.close()
