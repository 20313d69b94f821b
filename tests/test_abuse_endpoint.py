"""Attacks on an endpoint (issue 18, items 1 and 2), each bounded, with an honest pair measured meanwhile.

The attacker is a separate process (``tests/attackers.py``), so the victim's
CPU and latency are its own. The honest pair's echo RTT is sampled before the
attack (baseline) and during it; p99 during the attack must stay within 50 ms
of the baseline p99, so a loaded machine moves the baseline, not the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import AsyncIterator

import pytest

from irohpy import Endpoint, EndpointAddr, RelayMode, presets
from irohpy.base.addr import TransportAddr
from irohpy.endpoint import Connection, HandshakeLimits, RelayRecvLimits
from irohpy.errors import ConnectTimeout
from irohpy.relay.protocol import MIN_SEGMENT_SIZE
from tests.helpers import accept_one, bind
from tests.relay_fixture import relay_server

ALPN = b"test/abuse/0"
T = 10
ATTACK_TIMEOUT = 45.0
SLACK = 0.050


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class EchoProbe:
    """An honest pair: the client writes 8 bytes, the server echoes them; each round trip is one sample."""

    def __init__(self, client: Connection, server: Connection) -> None:
        self._client = client
        self._server = server

    async def start(self) -> None:
        self._send, self._recv = await self._client.open_bi()
        await self._send.write_all(b"warmup!!")
        self._psend, self._precv = await self._server.accept_bi()
        self._echo = asyncio.create_task(self._serve())
        await self._recv.read_exact(8)

    async def _serve(self) -> None:
        await self._psend.write_all(await self._precv.read_exact(8))
        while True:
            await self._psend.write_all(await self._precv.read_exact(8))

    async def sample(self, seconds: float, interval: float = 0.005) -> list[float]:
        samples: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            await self._send.write_all(b"ping1234")
            async with asyncio.timeout(T):
                await self._recv.read_exact(8)
            samples.append(time.perf_counter() - start)
            await asyncio.sleep(interval)
        return samples

    async def sample_while(self, attack: asyncio.Task[str]) -> list[float]:
        samples: list[float] = []
        while not attack.done():
            samples += await self.sample(0.2)
        return samples

    async def stop(self) -> None:
        self._echo.cancel()
        await asyncio.gather(self._echo, return_exceptions=True)


async def run_attacker(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.attackers", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(ATTACK_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def measured_attack(probe: EchoProbe, *args: str) -> tuple[list[float], list[float], int]:
    """Baseline samples, samples during the attack, and the RSS growth across it."""
    baseline = await probe.sample(1.0)
    gc.collect()
    rss_before = rss_bytes()
    attack = asyncio.create_task(run_attacker(*args))
    during = await probe.sample_while(attack)
    print(await attack)
    await asyncio.sleep(0.3)
    gc.collect()
    return baseline, during, rss_bytes() - rss_before


def assert_rtt_held(baseline: list[float], during: list[float]) -> None:
    limit = p99(baseline) + SLACK
    print(f"rtt p99 baseline {p99(baseline) * 1e3:.1f} ms, during attack {p99(during) * 1e3:.1f} ms "
          f"({len(during)} samples), limit {limit * 1e3:.0f} ms")
    assert len(during) >= 20
    assert p99(during) < limit


async def test_junk_initials_allocate_nothing_and_rtt_holds() -> None:
    victim = await bind([ALPN])
    client = await bind()
    try:
        accepted = asyncio.create_task(accept_one(victim))
        conn = await client.connect(victim.addr(), ALPN, timeout=T)
        probe = EchoProbe(conn, await accepted)
        await probe.start()
    except BaseException:
        await client.close()
        await victim.close()
        raise
    try:
        host, port = victim.bound_sockets()[0]
        baseline, during, grown = await measured_attack(probe, "udp", host, str(port), "3000", "3")
        core = victim._engine.core
        print(f"rss grew {grown / 1e6:.1f} MB; {core.stats.initials_rejected} Initials rejected")
        assert core.stats.initials_rejected >= 2900  # a few may be lost in the socket buffer
        assert not victim._incoming and core.handshakes_under_way == 0
        assert len(core.connections) == 1
        assert grown < 10_000_000
        assert_rtt_held(baseline, during)
    finally:
        await probe.stop()
        await client.close()
        await victim.close()


async def relay_endpoint(url: str, alpns: list[bytes] | None = None,
                         recv_limits: RelayRecvLimits = RelayRecvLimits()) -> Endpoint:
    return await Endpoint.bind(
        preset=presets.MINIMAL, relay_mode=RelayMode.custom([url]), alpns=alpns or [], relay_only=True,
        relay_recv_limits=recv_limits,
    )


@contextlib.asynccontextmanager
async def relay_pair(url: str, recv_limits: RelayRecvLimits = RelayRecvLimits()
                     ) -> AsyncIterator[tuple[Endpoint, EchoProbe]]:
    """A victim (with ``recv_limits``) and an honest client, relay only, with an echo probe
    between them."""
    victim = await relay_endpoint(url, [ALPN], recv_limits)
    client = await relay_endpoint(url)
    probe: EchoProbe | None = None
    try:
        async with asyncio.timeout(T):
            await victim.online()
            await client.online()
        assert victim.home_relay is not None
        accepted = asyncio.create_task(accept_one(victim, T))
        conn = await client.connect(
            EndpointAddr(victim.id, frozenset({TransportAddr.Relay(victim.home_relay)})), ALPN, timeout=T
        )
        probe = EchoProbe(conn, await accepted)
        await probe.start()
        yield victim, probe
    finally:
        if probe is not None:
            await probe.stop()
        await client.close()
        await victim.close()


async def test_junk_initials_through_the_relay_allocate_nothing() -> None:
    async with relay_server() as relay, relay_pair(relay.url) as (victim, probe):
        baseline, during, grown = await measured_attack(probe, "relay", relay.url, bytes(victim.id).hex(), "3000", "3")
        core = victim._engine.core
        print(f"rss grew {grown / 1e6:.1f} MB; {core.stats.initials_rejected} Initials rejected")
        assert core.stats.initials_rejected >= 1000  # the relay may drop some under its queue limits
        assert not victim._incoming and core.handshakes_under_way == 0
        assert len(core.connections) == 1
        assert grown < 10_000_000
        assert_rtt_held(baseline, during)


async def test_valid_initial_flood_is_capped_and_honest_dialer_passes_retry() -> None:
    limits = HandshakeLimits(max_handshakes=16, retry_above=4)
    victim = await bind([ALPN], handshake_limits=limits)
    client = await bind()
    try:
        host, port = victim.bound_sockets()[0]
        # Valid Initials nobody continues, from many source ports; nobody accepts them.
        await run_attacker("initials", host, str(port), bytes(victim.id).hex(), "200", "1")
        await asyncio.sleep(0.2)
        core = victim._engine.core
        assert len(victim._incoming) == limits.retry_above
        assert core.stats.retries >= 150
        assert len(core.connections) == 0
        for incoming in list(victim._incoming):
            incoming.ignore()
        victim._incoming.clear()
        # An honest dialer under load: it gets a Retry and completes.
        HandshakeLimits(max_handshakes=16, always_retry=True).apply(core.config)
        retries = core.stats.retries
        accepted = asyncio.create_task(accept_one(victim))
        conn = await client.connect(victim.addr(), ALPN, timeout=T)
        peer = await accepted
        assert core.stats.retries == retries + 1
        send, _ = await conn.open_bi()
        await send.write_all(b"after retry")
        await send.finish()
        _, recv = await peer.accept_bi()
        assert await recv.read_to_end(100) == b"after retry"
        conn.close()
    finally:
        await client.close()
        await victim.close()


async def test_the_connection_cap_drops_new_dialers_and_serves_the_held_ones() -> None:
    victim = await bind([ALPN], handshake_limits=HandshakeLimits(max_connections=2))
    client = await bind()
    try:
        core = victim._engine.core
        assert core.config.max_connections == 2
        held = []
        for _ in range(2):
            accepted = asyncio.create_task(accept_one(victim))
            held.append((await client.connect(victim.addr(), ALPN, timeout=T), await accepted))
        turned_away = core.stats.initials_over_limit
        with pytest.raises(ConnectTimeout):
            await client.connect(victim.addr(), ALPN, timeout=1.0)
        assert core.stats.initials_over_limit > turned_away
        assert len(core.connections) == 2 and not victim._incoming
        for conn, peer in held:
            send, _ = await conn.open_bi()
            await send.write_all(b"still served")
            await send.finish()
            _, recv = await asyncio.wait_for(peer.accept_bi(), T)
            assert await asyncio.wait_for(recv.read_to_end(100), T) == b"still served"
    finally:
        await client.close()
        await victim.close()


@pytest.mark.parametrize("segment", [1, MIN_SEGMENT_SIZE])
async def test_tiny_relay_segments_are_metered_and_rtt_holds(segment: int) -> None:
    """64 KB batch frames cut into tiny datagrams cost the victim about what full-size ones do.

    Our relay refuses such frames itself; this relay lets them through (min_segment_size 1), as
    a relay without that limit would, so the endpoint's own meter is what is tested. The attacker
    gets some 30,000 datagrams a second through a local relay, under the default 80,000/s (set
    above a relay path's full speed), so the victim meters at 10,000/s here to have something to drop.
    """
    limits = RelayRecvLimits(datagrams_per_second=10_000)
    async with relay_server("[limits]\nmin_segment_size = 1\n") as relay, \
            relay_pair(relay.url, limits) as (victim, probe):
        dst = bytes(victim.id).hex()
        cpu = time.process_time()
        await measured_attack(probe, "batch", relay.url, dst, "1200", "40", "4")
        fair_cpu = time.process_time() - cpu
        cpu = time.process_time()
        baseline, during, _ = await measured_attack(probe, "batch", relay.url, dst, str(segment), "40", "4")
        tiny_cpu = time.process_time() - cpu
        relay_transport = victim._transport.relay
        assert relay_transport is not None
        dropped = relay_transport.dropped_datagrams
        print(f"victim cpu: {fair_cpu:.2f} s at segment 1200, {tiny_cpu:.2f} s at segment {segment}; "
              f"{dropped} dropped")
        assert dropped >= 40 if segment < MIN_SEGMENT_SIZE else dropped > 10_000
        assert tiny_cpu < 1.5 * fair_cpu + 0.5
        assert_rtt_held(baseline, during)
