"""NAT traversal end to end on loopback, through OUR relay server (a separate process): a\nrelay dial goes direct inside QUIC (multipath and n0 NAT traversal)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import time

import pytest

from irohpy import Endpoint, EndpointAddr, RelayMode, SecretKey, presets
from irohpy.base.addr import TransportAddr
from irohpy.endpoint import Connection
from irohpy.relay import stun
from irohpy.tls import handshake as tls_handshake

from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.paths import PathEvent, RelayPath
from tests.helpers import accept_one
from tests.relay_fixture import relay_server

ALPN = b"test/punch/0"
T = 10


async def bind(url: str, alpns: list[bytes] | None = None, relay_only: bool = False) -> Endpoint:
    return await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.custom([url]), alpns=alpns or [],
                               bind_addrs=["127.0.0.1:0"], relay_only=relay_only)


def relay_addr(ep: Endpoint) -> EndpointAddr:
    home = ep.home_relay
    assert home is not None
    return EndpointAddr(ep.id, frozenset({TransportAddr.Relay(home)}))


async def wait_for(predicate: object, timeout: float) -> float:
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)
    return time.monotonic() - start


async def pair(url: str) -> tuple[Endpoint, Endpoint, Connection, Connection]:
    a = await bind(url)
    b = await bind(url, [ALPN])
    async with asyncio.timeout(T):
        await asyncio.gather(a.online(), b.online())
    accepted = asyncio.create_task(accept_one(b, T))
    conn = await a.connect(relay_addr(b), ALPN, timeout=T)
    return a, b, conn, await accepted


async def test_relay_dial_goes_direct_and_reports_it() -> None:
    async with relay_server() as relay:
        a = await bind(relay.url)
        b = await bind(relay.url, [ALPN])
        try:
            async with asyncio.timeout(T):
                await asyncio.gather(a.online(), b.online())
            events = a._remotes.for_id(b.id).subscribe()  # from before the dial: nothing missed
            accepted = asyncio.create_task(accept_one(b, T))
            conn = await a.connect(relay_addr(b), ALPN, timeout=T)
            peer = await accepted
            took = await wait_for(lambda: conn.is_direct and peer.is_direct, 5)
            assert took < 3
            seen: list[PathEvent] = []
            while not events.empty():
                seen.append(events.get_nowait())
            selected = [e.path.kind for e in seen if e.kind == "selected"]
            assert selected[0] == "relay" and selected[-1] == "direct"  # the only address we gave was the relay
            send, recv = await conn.open_bi()
            await send.write_all(os.urandom(200_000))
            await send.finish()
            psend, precv = await peer.accept_bi()
            assert len(await precv.read_to_end(1 << 20)) == 200_000
            infos = conn.paths()
            chosen = [p for p in infos if p.selected]
            assert len(chosen) == 1 and chosen[0].kind == "direct" and chosen[0].validated
            assert chosen[0].rtt is not None and chosen[0].bytes_sent >= 200_000
            assert any(p.kind == "relay" and p.bytes_sent > 0 for p in infos)  # the handshake went there
            metrics, theirs = a.metrics().group(SocketMetrics), b.metrics().group(SocketMetrics)
            assert metrics.holepunch_attempts.get() >= 1
            assert metrics.holepunch_successes.get() + theirs.holepunch_successes.get() >= 1
            took = [m.time_to_direct.labels() for m in (metrics, theirs)]
            assert all(t.at_most(3.0) == t.count for t in took)
            assert metrics.send_ipv4.get() >= 200_000 and metrics.send_relay.get() > 0
        finally:
            await a.close()
            await b.close()


async def test_stun_on_the_relay_reports_our_address() -> None:
    async with relay_server() as relay:
        ep = await bind(relay.url)
        try:
            async with asyncio.timeout(T):
                await ep.online()
            assert ep._direct is not None
            await wait_for(lambda: ep._direct.reflexive, 5)  # type: ignore[union-attr]
            assert ep._direct.reflexive == {tuple(ep.bound_sockets()[0])}
        finally:
            await ep.close()
        # The server itself: a plain UDP socket gets its own address back; garbage gets nothing.
        port = int(relay.url.rsplit(":", 1)[1].strip("/"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.bind(("127.0.0.1", 0))
            s.sendto(b"\x00\x01garbage", ("127.0.0.1", port))
            request, tx = stun.binding_request()
            s.sendto(request, ("127.0.0.1", port))
            answer = stun.parse(s.recv(600))
            assert answer.tx_id == tx and answer.mapped == s.getsockname()


async def test_our_address_is_asked_for_before_a_home_relay_connects() -> None:
    """STUN needs the relay's /ping only: here the relay refuses us (an allowlist of another
    key), so no home relay ever connects, and STUN still tells us our address."""
    other = SecretKey.generate().public()
    async with relay_server(f'[access]\nmode = "allowlist"\nallowlist = ["{other}"]\n') as relay:
        ep = await bind(relay.url)
        try:
            assert ep._direct is not None
            await wait_for(lambda: ep._direct.reflexive, T)  # type: ignore[union-attr]
            assert ep._direct.reflexive == {tuple(ep.bound_sockets()[0])}
            assert ep.home_relay is None
        finally:
            await ep.close()


async def test_replayed_and_forged_packets_never_move_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker replays our peer's authenticated packets (PATH_CHALLENGEs and NAT-traversal
    frames among them) from an address of its own, and sprays junk at our socket: no path
    moves or opens, nothing it says becomes an address of ours, and none of it costs a
    public-key operation."""
    async with relay_server() as relay:
        a, b, conn, peer = await pair(relay.url)
        try:
            await wait_for(lambda: conn.is_direct and peer.is_direct, 5)
            recorded: list[bytes] = []
            original = a._transport._on_packets

            def record(batch: list[tuple[bytes, object]]) -> None:
                recorded.extend(data for data, _ in batch)
                original(batch)  # type: ignore[arg-type]

            monkeypatch.setattr(a._transport, "_on_packets", record)
            send, _ = await conn.open_bi()
            await send.write_all(b"x" * 20_000)
            psend, precv = await asyncio.wait_for(peer.accept_bi(), T)
            await psend.write_all(b"y" * 20_000)
            await wait_for(lambda: len(recorded) >= 10, T)
            monkeypatch.setattr(a._transport, "_on_packets", original)
            path_before, addr_before = conn.path, a.addr()
            paths_before = {p.addr for p in conn.paths()}
            key_ops = 0
            for name in ("_verify", "_x25519"):
                real = getattr(tls_handshake, name)

                def counting(*args: object, _real: object = real) -> object:
                    nonlocal key_ops
                    key_ops += 1
                    return _real(*args)  # type: ignore[operator]

                monkeypatch.setattr(tls_handshake, name, counting)
            target = a.bound_sockets()[0]
            cid = recorded[-1][1:9]
            junk = [*recorded, *(bytes([0x40]) + cid + os.urandom(60) for _ in range(500)),
                    *(os.urandom(1200) for _ in range(200))]


            async def round_trips(n: int) -> list[float]:
                """Datagram echoes over the connection: what a well-behaved user sees."""
                took = []
                for _ in range(n):
                    start = time.monotonic()
                    conn.send_datagram(b"ping")
                    await asyncio.wait_for(peer.read_datagram(), T)
                    peer.send_datagram(b"pong")
                    await asyncio.wait_for(conn.read_datagram(), T)
                    took.append(time.monotonic() - start)
                return took

            baseline = statistics.median(await round_trips(20))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))

                async def spray() -> None:
                    for i in range(0, len(junk), 50):
                        for packet in junk[i : i + 50]:
                            s.sendto(packet, target)
                        await asyncio.sleep(0.01)

                spraying = asyncio.create_task(spray())
                during: list[float] = []
                while not spraying.done() or len(during) < 20:  # measured all through the spray
                    during += await round_trips(1)
                await spraying
                await asyncio.sleep(0.5)
            assert statistics.median(during) <= 10 * baseline + 0.02, (baseline, during)
            assert conn.path == path_before and conn.is_direct
            assert {p.addr for p in conn.paths()} == paths_before
            assert a.addr() == addr_before
            assert key_ops == 0
            await send.finish()
            assert len(await asyncio.wait_for(precv.read_to_end(1 << 20), T)) == 20_000
        finally:
            await a.close()
            await b.close()


async def test_relay_only_mode_never_uses_or_reveals_ip_addresses() -> None:
    async with relay_server() as relay:
        private = await bind(relay.url, relay_only=True)
        public = await bind(relay.url, [ALPN])
        try:
            async with asyncio.timeout(T):
                await asyncio.gather(private.online(), public.online())
            assert private.bound_sockets() == []
            assert private.addr().ip_addrs() == [] and private.addr().relay_urls()
            accepted = asyncio.create_task(accept_one(public, T))
            conn = await private.connect(public.addr(), ALPN, timeout=T)  # direct addrs offered, not used
            peer = await accepted
            await asyncio.sleep(2)
            assert isinstance(conn.path, RelayPath) and isinstance(peer.path, RelayPath)
            known = public.remote_addr(private.id)
            assert known is not None and known.ip_addrs() == []
            assert private.metrics().group(SocketMetrics).holepunch_attempts.get() == 0
        finally:
            await private.close()
            await public.close()


@pytest.mark.netns
async def test_direct_path_loss_falls_back_within_5s_and_comes_back() -> None:
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nft (nftables) is not installed; it is needed to cut the direct path")
    table = f"irohpy_cut_{os.getpid()}"
    async with relay_server() as relay:
        a, b, conn, peer = await pair(relay.url)
        ports = ", ".join(str(ep.bound_sockets()[0][1]) for ep in (a, b))
        rules = (f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
                 f"  udp dport {{ {ports} }} counter drop\n }}\n}}\n")
        try:
            await wait_for(lambda: conn.is_direct and peer.is_direct, 5)
            send, recv = await conn.open_bi()
            psend_task = asyncio.create_task(peer.accept_bi())
            await send.write(b"x" * 1000)
            _, precv = await asyncio.wait_for(psend_task, T)
            subprocess.run([nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
            blocked_at = time.monotonic()
            # Keep writing through the cut: the connection must survive it.
            writer_done = asyncio.Event()

            async def writer() -> None:
                for _ in range(60):
                    await send.write(b"y" * 10_000)
                    await asyncio.sleep(0.1)
                await send.finish()
                writer_done.set()

            writing = asyncio.create_task(writer())
            await wait_for(lambda: isinstance(conn.path, RelayPath), 6)
            assert time.monotonic() - blocked_at < 5.0
            assert a.metrics().group(SocketMetrics).fallbacks_to_relay.get() >= 1
            subprocess.run([nft, "delete", "table", "inet", table], check=True, capture_output=True)
            await wait_for(lambda: conn.is_direct and peer.is_direct, 10)
            data = await asyncio.wait_for(precv.read_to_end(1 << 24), 20)
            assert data == b"x" * 1000 + b"y" * 600_000
            await asyncio.wait_for(writing, T)
            assert not conn.is_closed
        finally:
            subprocess.run([nft, "delete", "table", "inet", table], check=False, capture_output=True)
            await a.close()
            await b.close()
