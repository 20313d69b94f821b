"""Rust iroh (the official package) as a client of OUR relay process.

Two Rust endpoints that know each other only by id + relay URL talk through the relay while
nftables drops every UDP packet of theirs, so nothing can go direct. The test process owns
its loopback-only network namespace (``scripts/loopback-only``), so the table touches
nothing else; it is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from irohpy import SecretKey
from irohpy.relay.server.tokens import issue_token
from tests.refpeer import bind_ref
from tests.relay_fixture import relay_server

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/relay-test/0"
T = 15.0
ISSUER = SecretKey.generate()
TOKENS = f'[access]\nmode = "tokens"\ntrusted_issuers = ["{ISSUER.public()}"]\n'


def relay_mode(iroh: Any, url: str, token: str | None = None) -> Any:
    if token is None:
        return iroh.RelayMode.custom_from_urls([url])
    relays = iroh.RelayMap.empty()
    relays.insert(iroh.RelayConfig(url=url, quic_port=None, auth_token=token))
    return iroh.RelayMode.custom(relays)


@contextlib.asynccontextmanager
async def rust_endpoint(iroh: Any, mode: Any, alpns: list[bytes] | None = None,
                        secret: bytes | None = None) -> AsyncIterator[Any]:
    ep = await bind_ref(iroh, alpns, secret, relay_mode=mode)
    try:
        yield ep
    finally:
        await ep.close()


def udp_ports(*endpoints: Any) -> set[int]:
    return {int(s.rsplit(":", 1)[1]) for ep in endpoints for s in ep.bound_sockets()}


@contextlib.contextmanager
def udp_dropped(ports: set[int]) -> Iterator[str]:
    """Drop all UDP from or to ``ports`` in this network namespace; yields the table name."""
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nft (nftables) is not installed; it is needed to block direct UDP between the endpoints")
    table = f"irohpy_relay_test_{os.getpid()}"
    ports_text = ", ".join(str(p) for p in sorted(ports))
    rules = (f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
             f"  udp sport {{ {ports_text} }} counter drop\n  udp dport {{ {ports_text} }} counter drop\n }}\n}}\n")
    subprocess.run([nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
    try:
        yield table
    finally:
        subprocess.run([nft, "delete", "table", "inet", table], check=False, capture_output=True)


def dropped_packets(table: str) -> int:
    out = subprocess.run(["nft", "list", "table", "inet", table], text=True, check=True, capture_output=True).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


async def echo_one(ep: Any) -> Any:
    """Accept one connection and echo one bidi stream; returns how the connection arrived."""
    incoming = await ep.accept_next()
    came_from = await incoming.remote_addr()
    conn = await (await incoming.accept()).connect()
    bi = await conn.accept_bi()
    await bi.send().write_all(await bi.recv().read_to_end(1 << 20))
    await bi.send().finish()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.closed(), T)
    return came_from


async def test_two_rust_endpoints_through_our_relay(iroh_loop: Any) -> None:
    iroh = iroh_loop
    async with relay_server() as relay:
        mode = relay_mode(iroh, relay.url)
        async with rust_endpoint(iroh, mode, [ALPN]) as server, rust_endpoint(iroh, mode) as client:
            async with asyncio.timeout(T):
                await asyncio.gather(server.online(), client.online())
            with udp_dropped(udp_ports(server, client)) as table:
                echo = asyncio.create_task(echo_one(server))
                before = relay.metrics()
                payload = os.urandom(150_000)
                try:
                    async with asyncio.timeout(T):
                        conn = await client.connect(iroh.EndpointAddr(server.id(), relay.url, []), ALPN)
                        bi = await conn.open_bi()
                        await bi.send().write_all(payload)
                        await bi.send().finish()
                        assert await bi.recv().read_to_end(1 << 20) == payload
                        conn.close(0, b"done")
                        came_from = await echo
                finally:
                    echo.cancel()
                    await asyncio.gather(echo, return_exceptions=True)
                blocked = dropped_packets(table)
            after = relay.metrics()
            stats = {name: counter.value for name, counter in client.stats().items()}
        assert came_from.is_relay()
        assert relay.forwarded_bytes(after) - relay.forwarded_bytes(before) >= 2 * len(payload)
        assert after["iroh_relay_connections"] == 2
        assert stats["socket:send_relay"] > 0 and stats["socket:recv_data_relay"] > 0
        assert stats["socket:recv_data_ipv4"] == stats["socket:recv_data_ipv6"] == stats["socket:paths_direct"] == 0
        print(f"direct UDP packets dropped by nftables: {blocked}; client stats: {stats}")


async def test_rust_presents_auth_token_as_bearer_header(iroh_loop: Any) -> None:
    """What the Rust client sends for ``RelayConfig(auth_token=...)``: recorded by a stub server."""
    iroh = iroh_loop
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, request.query_string, dict(request.headers)))
        return web.Response(status=200 if request.path == "/ping" else 404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        mode = relay_mode(iroh, f"http://127.0.0.1:{port}", token="secret-token")
        async with rust_endpoint(iroh, mode):
            async with asyncio.timeout(T):
                while not any(path == "/relay" for path, _, _ in seen):
                    await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    upgrade = next(headers for path, _, headers in seen if path == "/relay")
    assert upgrade["Authorization"] == "Bearer secret-token"
    assert all(query == "" for _, query, _ in seen)
    assert all("Authorization" not in headers for path, _, headers in seen if path == "/ping")


async def wait_online(ep: Any, timeout: float) -> bool:
    try:
        await asyncio.wait_for(ep.online(), timeout)
    except TimeoutError:
        return False
    return True


async def test_rust_auth_token_against_our_token_relay(iroh_loop: Any) -> None:
    iroh = iroh_loop
    seed = os.urandom(32)
    me = SecretKey.from_bytes(seed).public()
    async with relay_server(TOKENS) as relay:
        good = relay_mode(iroh, relay.url, issue_token(ISSUER, me, 600))
        async with rust_endpoint(iroh, good, secret=seed) as ep:
            assert await wait_online(ep, T)
        assert relay.metric("iroh_relay_accepts_total") == 1
        expired = relay_mode(iroh, relay.url, issue_token(ISSUER, me, 60, now=time.time() - 3600))
        async with rust_endpoint(iroh, expired, secret=seed) as ep:
            assert not await wait_online(ep, 2.0)
        assert relay.metric("iroh_relay_auth_failures_total", reason="token_expired") >= 1
        async with rust_endpoint(iroh, relay_mode(iroh, relay.url)) as ep:
            assert not await wait_online(ep, 2.0)
        assert relay.metric("iroh_relay_auth_failures_total", reason="token_missing") >= 1
        assert relay.metric("iroh_relay_accepts_total") == 1



FAST_PINGS = """
[timers]
ping_interval_secs = 0.3
ping_jitter_secs = [0.05, 0.1]
pong_timeout_secs = [0.5, 2.0]
"""


async def test_rust_answers_our_pings_and_comes_back_after_a_restart(iroh_loop: Any) -> None:
    iroh = iroh_loop
    async with relay_server(FAST_PINGS) as relay:
        async with rust_endpoint(iroh, relay_mode(iroh, relay.url)) as ep:
            assert await wait_online(ep, T)
            await asyncio.sleep(1.5)
            assert relay.metric("iroh_relay_pings_sent_total") >= 3
            assert relay.metric("iroh_relay_disconnects_total", reason="ping_timeout") == 0
            assert relay.metric("iroh_relay_connections") == 1
            await relay.restart()
            async with asyncio.timeout(T):
                while relay.metric("iroh_relay_connections") < 1:
                    await asyncio.sleep(0.05)
