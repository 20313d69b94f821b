"""Attacks on a blobs provider (issue 18, items 3 and 6), each bounded, with an honest fetch measured meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from irohpy.endpoint.connection import Connection
from irohpy.errors import BlobsError, IrohError, StreamReset
from irohpy.protocols.blobs.downloader import Downloader
from irohpy.protocols.blobs.provider import BlobsProtocol, ProviderLimits
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.store import FsStore, MemStore
from irohpy.protocols.blobs.wire import (
    ALPN,
    ERR_INTERNAL,
    MAX_GET_MANY_HASHES,
    MAX_RANGE_ITEMS,
    ChunkRangesSeq,
    GetManyRequest,
    GetRequest,
    size_header,
)
from irohpy.protocols.router import Router
from tests.helpers import bind

MIB = 1024 * 1024
T = 20
LAG_LIMIT = 0.050


@contextlib.asynccontextmanager
async def provider(store: MemStore, limits: ProviderLimits = ProviderLimits()) -> AsyncIterator[
        tuple[Router, BlobsProtocol]]:
    protocol = BlobsProtocol(store, limits=limits)
    router = Router.builder(await bind([ALPN])).accept(ALPN, protocol).spawn()
    try:
        yield router, protocol
    finally:
        await router.shutdown()


async def timed_fetch(router: Router, digest: bytes) -> float:
    ep = await bind()
    try:
        start = time.perf_counter()
        async with asyncio.timeout(60):
            await Downloader(ep, MemStore()).fetch(digest, [router.endpoint.addr()])
        return time.perf_counter() - start
    finally:
        await ep.close()


async def stall_attack(router: Router, digest: bytes, identities: int, conns: int, streams: int,
                       seconds: float) -> asyncio.subprocess.Process:
    """``tests.attackers stall`` against ``router``, started; its ``ready`` line not yet read."""
    host, port = router.endpoint.bound_sockets()[0]
    target = [host, str(port), bytes(router.endpoint.id).hex(), digest.hex()]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.attackers", "stall", *target, str(identities), str(conns), str(streams),
        str(seconds), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def test_requesters_that_never_read_do_not_starve_an_honest_fetch() -> None:
    """The issue's attack from another process: one identity, 8 connections x 16 streams, never
    reading. Before, it held every response slot until a 30 s write timeout; now its responses
    take turns with the honest peer's, so the honest fetch gets about half the provider."""
    store = MemStore()
    digest = await store.import_bytes(os.urandom(8 * MIB))
    limits = ProviderLimits()
    async with provider(store, limits) as (router, protocol):
        baseline = await timed_fetch(router, digest)
        rss_before = rss_bytes()
        attacker = await stall_attack(router, digest, 1, 8, 16, 40)
        try:
            async with asyncio.timeout(30):
                assert attacker.stdout is not None
                assert (await attacker.stdout.readline()).strip() == b"ready"
            ready = time.perf_counter()
            await asyncio.sleep(1.0)
            slots = protocol._responses
            print(f"attack: {slots.total - slots._free} slots in use, {protocol.connections_refused} "
                  f"connections refused, rss {rss_bytes() / 1e6:.0f} MB (from {rss_before / 1e6:.0f} MB)")
            assert all(held <= limits.max_responses_per_peer for held in slots._held.values())
            assert protocol.connections_refused == 4
            sent_before = protocol.bytes_sent
            during = await timed_fetch(router, digest)
            print(f"honest 8 MiB fetch: {baseline:.2f} s before, {during:.2f} s during the attack, "
                  f"provider sent {(protocol.bytes_sent - sent_before) / 1e6:.0f} MB meanwhile")
            assert during < 4 * baseline + 3 * limits.stall_timeout
            assert rss_bytes() - rss_before < 100_000_000
            # The first streams of the peer that never reads are reset once a write has waited
            # stall_timeout (more wait their turn behind max_streams_per_peer).
            async with asyncio.timeout(3 * limits.stall_timeout):
                while protocol.requests_refused < limits.max_streams_per_peer:
                    await asyncio.sleep(0.05)
            print(f"{protocol.requests_refused} stalled streams reset {time.perf_counter() - ready:.1f} s "
                  f"after the attack was ready (stall timeout {limits.stall_timeout:g} s)")
        finally:
            if attacker.returncode is None:
                attacker.kill()
            await attacker.communicate()


async def test_connections_from_many_identities_stop_at_the_cap_and_are_let_go() -> None:
    """Identities cost nothing, so per-peer caps alone do not bound connections: the total does."""
    store = MemStore()
    digest = await store.import_bytes(os.urandom(MIB))
    limits = ProviderLimits(max_connections=8)
    async with provider(store, limits) as (router, protocol):
        attacker = await stall_attack(router, digest, 3, 4, 1, 2)
        try:
            async with asyncio.timeout(30):
                out, err = await attacker.communicate()
            assert attacker.returncode == 0, err.decode()[-2000:]
        finally:
            if attacker.returncode is None:
                attacker.kill()
                await attacker.communicate()
        assert out.split()[0] == b"ready"
        assert protocol.connections_refused == 4  # 3 identities x 4 connections against a total of 8
        # The attacker closed its connections: their places are free again.
        async with asyncio.timeout(T):
            while protocol._served:
                await asyncio.sleep(0.05)
        await timed_fetch(router, digest)
        assert protocol.connections_refused == 4


async def test_idle_connections_from_many_identities_give_way_to_an_honest_fetch() -> None:
    """At the total cap, the connection idle longest makes room; a busy one is never evicted."""
    store = MemStore()
    digest = await store.import_bytes(os.urandom(MIB))
    limits = ProviderLimits(max_connections=8, idle_evict_after=0.5)
    async with provider(store, limits) as (router, protocol):
        attacker = await stall_attack(router, digest, 2, 4, 0, 30)
        try:
            assert attacker.stdout is not None
            async with asyncio.timeout(T):
                assert (await attacker.stdout.readline()).strip() == b"ready"
                loop = asyncio.get_running_loop()
                while len(protocol._served) < 8 or any(
                        loop.time() - s.idle_since < limits.idle_evict_after for s in protocol._served.values()):
                    await asyncio.sleep(0.05)
            assert protocol.connections_refused == 0
            took = await timed_fetch(router, digest)
            print(f"honest fetch with the provider full of idle connections: {took:.2f} s")
            assert protocol.connections_evicted == 1
            assert protocol.connections_refused == 0
            assert len(protocol._served) <= limits.max_connections
        finally:
            if attacker.returncode is None:
                attacker.kill()
            await attacker.communicate()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LoopLag:
    """The longest the event loop was blocked: the CPU time of its longest single callback.

    Every callback the loop runs is timed (``asyncio.Handle._run`` wrapped for the duration).
    CPU time, not wall time: on a loaded machine the OS may deschedule us for longer than any
    callback runs, and that is not the provider blocking its loop.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.culprit = ""
        self._original = asyncio.Handle._run

    def __enter__(self) -> LoopLag:
        original = self._original

        def timed(handle: asyncio.Handle) -> None:
            start = time.thread_time()
            try:
                original(handle)
            finally:
                took = time.thread_time() - start
                if took > self.worst:
                    self.worst, self.culprit = took, repr(getattr(handle._callback, "__self__", handle))

        gc.collect()
        gc.freeze()
        asyncio.Handle._run = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.Handle._run = self._original  # type: ignore[method-assign]
        gc.unfreeze()


async def raw_request(conn: Connection, request: bytes) -> bytes:
    send, recv = await conn.open_bi()
    await send.write_all(request)
    await send.finish()
    async with asyncio.timeout(T):
        return await recv.read_to_end(1 << 30)


async def test_huge_requests_are_refused_cheaply_and_big_ones_never_block_the_loop() -> None:
    store = MemStore()
    tiny = await store.import_bytes(b"x" * 100)
    big = await store.import_bytes(os.urandom(8 * MIB))
    # A 500 KB range spec (500,000 boundaries) and a GetMany of 30,000 hashes: over the limits.
    huge_spec = GetRequest(big, ChunkRangesSeq(((0, ChunkRanges(tuple(range(0, 1_000_000, 2)))),))).to_bytes()
    many = GetManyRequest(tuple([tiny] * 30_000), ChunkRangesSeq.all()).to_bytes()
    # The largest requests within the limits, which are served.
    at_limit_spec = GetRequest.blob_ranges(big, ChunkRanges(tuple(range(0, MAX_RANGE_ITEMS - 1, 2)))).to_bytes()
    at_limit_many = GetManyRequest(tuple([tiny] * MAX_GET_MANY_HASHES), ChunkRangesSeq.all()).to_bytes()
    assert len(huge_spec) > 500_000 and len(many) > 900_000
    async with provider(store) as (router, protocol):
        client = await bind()
        try:
            conn = await client.connect(router.endpoint.addr(), ALPN, timeout=T)
            await raw_request(conn, GetRequest.blob(tiny).to_bytes())
            worst = 0.0
            for request in (huge_spec, many, at_limit_spec, at_limit_many):
                with LoopLag() as lag:
                    start = time.perf_counter()
                    try:
                        reply = await raw_request(conn, request)
                        outcome = f"answered ({len(reply)} bytes)"
                    except StreamReset as exc:
                        assert exc.error_code == ERR_INTERNAL
                        outcome = "refused"
                print(f"{len(request)} byte request {outcome} in {time.perf_counter() - start:.3f} s, "
                      f"worst loop lag {lag.worst * 1e3:.1f} ms in {lag.culprit[:100]}")
                assert (outcome == "refused") == (request in (huge_spec, many))
                worst = max(worst, lag.worst)
            assert worst < LAG_LIMIT
            assert protocol.requests_refused == 2 and protocol.requests_served == 3
            conn.close()
        finally:
            await client.close()


class LyingProvider:
    """Answers every request with a size header claiming 2^40 bytes and 20 KB of junk."""

    async def accept(self, conn: Connection) -> None:
        with contextlib.suppress(IrohError):
            while True:
                send, recv = await conn.accept_bi()
                await recv.read_to_end(1 << 20)
                await send.write_all(size_header(1 << 40) + os.urandom(20_000))
                await send.finish()


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def disk_usage(root: Path) -> tuple[int, int]:
    """Apparent bytes and allocated bytes of every file under ``root``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


async def test_a_size_header_lie_allocates_nothing_and_the_next_resume_is_normal(tmp_path: Path) -> None:
    data = os.urandom(8 * MIB)
    source = MemStore()
    digest = await source.import_bytes(data)
    liar = Router.builder(await bind([ALPN])).accept(ALPN, LyingProvider()).spawn()
    receiver = await bind()
    try:
        async with provider(source) as (honest, _):
            async with FsStore(tmp_path / "fresh") as fresh:
                start = time.perf_counter()
                await Downloader(receiver, fresh).fetch(digest, [honest.endpoint.addr()])
                baseline = time.perf_counter() - start
            async with FsStore(tmp_path / "victim") as store:
                gc.collect()
                rss_before = rss_bytes()
                peak_rss_reset()
                with pytest.raises(BlobsError):
                    await Downloader(receiver, store).fetch(digest, [liar.endpoint.addr()])
                apparent, allocated = disk_usage(tmp_path / "victim")
                print(f"after the lie: {apparent} bytes apparent, {allocated} allocated on disk; peak rss "
                      f"+{(peak_rss() - rss_before) / 1e6:.1f} MB")
                assert apparent < 1_000_000 and allocated < 1_000_000
                assert peak_rss() - rss_before < 20_000_000
                assert await store.has(digest) is None
            async with FsStore(tmp_path / "victim") as store:
                peak_rss_reset()
                start = time.perf_counter()
                await Downloader(receiver, store).fetch(digest, [honest.endpoint.addr()])
                resume = time.perf_counter() - start
                print(f"honest fetch into the attacked store: {resume:.2f} s (fresh store: {baseline:.2f} s); "
                      f"peak rss +{(peak_rss() - rss_before) / 1e6:.1f} MB")
                assert await store.get_bytes(digest) == data
                assert resume < 3 * baseline + 1.0
                assert peak_rss() - rss_before < 100_000_000
    finally:
        await receiver.close()
        await liar.shutdown()
