"""Provider and downloader over real QUIC on loopback: one and several providers, failures, resume."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

import blake3
import pytest

from irohpy.base.addr import EndpointAddr
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import BlobsError, StreamReset
from irohpy.protocols.blobs.bao import Leaf, Outboard, compute_outboard
from irohpy.protocols.blobs.collection import Collection
from irohpy.protocols.blobs.downloader import (
    Done,
    Downloader,
    Progress,
    ProviderDropped,
    SizesKnown,
)
from irohpy.protocols.blobs.provider import BlobsProtocol, ProviderLimits
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.store.base import ReadFn
from irohpy.protocols.blobs.store import FsStore, MemStore
from irohpy.protocols.blobs.store import mem as mem_store
from irohpy.protocols.blobs.ticket import BlobFormat
from irohpy.protocols.blobs.wire import ALPN, ERR_INTERNAL, ERR_LIMIT, GetRequest
from irohpy.protocols.router import Router
from tests.helpers import bind

MIB = 1024 * 1024


class CorruptingStore(MemStore):
    """A provider's store whose reads flip one bit at ``offset`` (and, with ``every``, at each
    ``every`` bytes after it): a peer serving bad data."""

    def __init__(self, offset: int, every: int = 0) -> None:
        super().__init__()
        self.offset = offset
        self.every = every

    async def reader(self, hash: bytes) -> tuple[ReadFn, Outboard]:
        read, outboard = await super().reader(hash)

        def corrupt(offset: int, length: int) -> bytes:
            data = bytearray(read(offset, length))
            bad = self.offset
            while bad < offset + length:
                if bad >= offset:
                    data[bad - offset] ^= 0x01
                if not self.every:
                    break
                bad += self.every
            return bytes(data)

        return corrupt, outboard


class StallingStore(MemStore):
    """A provider's store that answers its first ``serve`` reads, then hangs: a peer gone silent."""

    def __init__(self, serve: int) -> None:
        super().__init__()
        self.serve = serve
        self.hung = asyncio.Event()

    async def reader(self, hash: bytes) -> tuple[ReadFn, Outboard]:
        if self.serve <= 0:
            self.hung.set()
            await asyncio.Event().wait()
        self.serve -= 1
        return await super().reader(hash)


@contextlib.asynccontextmanager
async def providers(*stores: MemStore) -> AsyncIterator[list[Router]]:
    routers = []
    try:
        for store in stores:
            endpoint = await bind([ALPN])
            routers.append(Router.builder(endpoint).accept(ALPN, BlobsProtocol(store)).spawn())
        yield routers
    finally:
        await asyncio.gather(*(r.shutdown() for r in routers))


def addrs(routers: list[Router]) -> list[EndpointAddr]:
    return [r.endpoint.addr() for r in routers]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Endpoint]:
    endpoint = await bind()
    try:
        yield endpoint
    finally:
        await endpoint.close()


@pytest.mark.parametrize("size", [0, 1, 1024, 16 * 1024 + 1, 3 * 1024 * 1024 + 7])
async def test_one_provider_blob(size: int) -> None:
    data = os.urandom(size)
    source, target = MemStore(), MemStore()
    digest = await source.import_bytes(data)
    async with providers(source) as routers, receiver() as ep:
        stats = await Downloader(ep, target).fetch(digest, addrs(routers))
    assert await target.get_bytes(digest) == data
    # The size probe's last chunk, when it does not fill its chunk group, is fetched again.
    assert stats.total_bytes == size and size <= stats.bytes_fetched <= size + 1024


async def test_collection_with_many_small_files_and_events() -> None:
    source, target = MemStore(), MemStore()
    files = {f"dir/f{i:03}.txt": os.urandom(i * 37) for i in range(200)}
    entries = [(name, await source.import_bytes(data)) for name, data in sorted(files.items())]
    collection = Collection(entries)
    meta, seq = collection.to_blobs()
    await source.import_bytes(meta)
    root = await source.import_bytes(seq)
    events = []
    async with providers(source) as routers, receiver() as ep:
        async with Downloader(ep, target).download(root, addrs(routers), BlobFormat.HASH_SEQ) as download:
            events = [event async for event in download]
    assert isinstance(events[-1], Done)
    sizes = next(e for e in events if isinstance(e, SizesKnown))
    assert sizes.blobs == 202 and sizes.total_bytes == sum(map(len, files.values())) + len(meta) + len(seq)
    assert await target.collection(root) == collection
    for name, h in collection:
        assert await target.get_bytes(h) == files[name]


async def test_three_providers_share_the_work() -> None:
    data = os.urandom(24 * 1024 * 1024)
    stores = [MemStore() for _ in range(3)]
    digest = b""
    for store in stores:
        digest = await store.import_bytes(data)
    target = MemStore()
    async with providers(*stores) as routers, receiver() as ep:
        stats = await Downloader(ep, target, unit_size=1024 * 1024).fetch(digest, addrs(routers))
    assert blake3.blake3(await target.get_bytes(digest)).digest() == digest
    # End-game duplicates (a unit re-requested from a faster provider) cost at most a few units.
    assert len(data) <= stats.bytes_fetched <= len(data) + 3 * MIB
    assert sum(p.bytes for p in stats.providers) == stats.bytes_fetched
    assert all(p.bytes > 0 for p in stats.providers), stats.providers


async def test_provider_killed_mid_transfer() -> None:
    data = os.urandom(24 * 1024 * 1024)
    stores = [MemStore() for _ in range(3)]
    digest = b""
    for store in stores:
        digest = await store.import_bytes(data)
    target = MemStore()
    async with providers(*stores) as routers, receiver() as ep:
        victim = routers[1]
        dropped = []
        async with Downloader(ep, target, unit_size=1024 * 1024).download(digest, addrs(routers)) as download:
            async for event in download:
                if isinstance(event, Progress) and event.bytes > len(data) // 3 and not victim.is_shutdown:
                    await victim.shutdown()
                elif isinstance(event, ProviderDropped):
                    dropped.append(event.provider)
        stats = await download.wait()
    assert dropped == [victim.endpoint.id]
    assert await target.get_bytes(digest) == data
    assert len(data) <= stats.bytes_fetched <= len(data) + 3 * MIB


async def test_corrupt_provider_is_dropped() -> None:
    data = os.urandom(8 * 1024 * 1024)
    # A bad bit in every unit: whichever units the bad provider wins the race for, it is caught.
    good, bad = MemStore(), CorruptingStore(offset=512 * 1024 + 3, every=1024 * 1024)
    digest = await good.import_bytes(data)
    await bad.import_bytes(data)
    target = MemStore()
    async with providers(bad, good) as routers, receiver() as ep:
        events = []
        async with Downloader(ep, target, unit_size=1024 * 1024).download(digest, addrs(routers)) as download:
            events = [event async for event in download]
    dropped = [e for e in events if isinstance(e, ProviderDropped)]
    assert [e.provider for e in dropped] == [routers[0].endpoint.id]
    assert "does not verify" in dropped[0].reason
    assert await target.get_bytes(digest) == data


async def test_stalled_provider_is_helped_before_its_stall_timeout() -> None:
    """A provider that goes silent but stays connected: after a third of the stall timeout
    an idle provider takes its unit over, so the download ends without waiting to drop it."""
    data = os.urandom(6 * 1024 * 1024)
    good, silent = MemStore(), StallingStore(serve=1)
    digest = await good.import_bytes(data)
    await silent.import_bytes(data)
    target = MemStore()
    async with providers(silent, good) as routers, receiver() as ep:
        downloader = Downloader(ep, target, unit_size=1024 * 1024, in_flight=1, stall_timeout=9.0)
        async with downloader.download(digest, addrs(routers)) as download:
            events = [event async for event in download]
    assert silent.hung.is_set()
    assert not [e for e in events if isinstance(e, ProviderDropped)], "the silent provider's unit waited for its timeout"
    assert await target.get_bytes(digest) == data


def slow_hashing(seconds: float) -> tuple[asyncio.Event, Callable[[bytes], Outboard]]:
    """A stand-in for the store's ``compute_outboard`` that takes ``seconds`` in its thread,
    and an event set when it starts."""
    hashing = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_outboard(data: bytes) -> Outboard:
        loop.call_soon_threadsafe(hashing.set)
        time.sleep(seconds)
        return compute_outboard(data)

    return hashing, slow_outboard


async def test_a_blob_completing_while_a_helper_finds_nothing_missing_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider's last write completes the blob and hashes it, which takes a while. A second
    provider, helping with the same unit because the first looks stalled, finds nothing
    missing and ends the transfer. The write that began must still finish: cancelled, it left
    the blob partial with every chunk present, and the download failed as incomplete."""
    hashing, slow_outboard = slow_hashing(1.0)
    data = os.urandom(4 * 1024 * 1024)
    sources = [MemStore(), MemStore()]
    digest = b""
    for source in sources:
        digest = await source.import_bytes(data)
    monkeypatch.setattr(mem_store, "compute_outboard", slow_outboard)
    target = MemStore()
    async with providers(*sources) as routers, receiver() as ep:
        downloader = Downloader(ep, target, unit_size=8 * 1024 * 1024, stall_timeout=0.9)
        stats = await asyncio.wait_for(downloader.fetch(digest, addrs(routers)), 30)
    assert hashing.is_set()
    assert await target.has(digest) == "complete"
    assert await target.get_bytes(digest) == data
    assert stats.bytes_fetched >= len(data)


async def test_only_corrupt_provider_fails_cleanly() -> None:
    data = os.urandom(2 * 1024 * 1024)
    bad = CorruptingStore(offset=1_000_000)
    digest = await bad.import_bytes(data)
    target = MemStore()
    async with providers(bad) as routers, receiver() as ep:
        with pytest.raises(BlobsError, match="every provider failed"):
            await Downloader(ep, target).fetch(digest, addrs(routers))
    assert await target.has(digest) != "complete"
    missing = await target.missing_ranges(digest)
    assert missing.contains(1_000_000 // 1024), "the corrupt group must not be stored"


async def test_resume_fetches_only_missing_groups() -> None:
    data = os.urandom(16 * 1024 * 1024)
    source, target = MemStore(), MemStore()
    digest = await source.import_bytes(data)
    async with providers(source) as routers, receiver() as ep:
        downloader = Downloader(ep, target, unit_size=1024 * 1024, in_flight=1)
        async with downloader.download(digest, addrs(routers)) as download:
            async for event in download:
                if isinstance(event, Progress) and event.bytes >= len(data) // 2:
                    break
        have = len(data) - sum((e or len(data) // 1024) - s for s, e in
                               (await target.missing_ranges(digest)).intervals()) * 1024
        assert len(data) // 2 <= have < len(data)
        stats = await downloader.fetch(digest, addrs(routers))
    assert await target.get_bytes(digest) == data
    assert stats.bytes_fetched == len(data) - have


async def test_unknown_hash_and_no_providers() -> None:
    target = MemStore()
    async with providers(MemStore()) as routers, receiver() as ep:
        with pytest.raises(BlobsError):
            await Downloader(ep, target).fetch(bytes(32), addrs(routers))
        dead = await bind([ALPN])
        addr = dead.addr()
        await dead.close()
        with pytest.raises(BlobsError, match="could not connect"):
            await Downloader(ep, target, connect_timeout=1.0).fetch(bytes(32), [addr])
    assert await target.has(bytes(32)) is None


async def raw_request(ep: Endpoint, addr: EndpointAddr, request: bytes, *, finish: bool = True) -> bytes:
    conn = await ep.connect(addr, ALPN)
    try:
        send, recv = await conn.open_bi()
        await send.write(request)
        if finish:
            await send.finish()
        async with asyncio.timeout(10):
            return await recv.read_to_end(1 << 24)
    finally:
        conn.close(0, b"")


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (b"", ERR_INTERNAL),
        (b"\x01" + bytes(32) + b"\x01\x00", ERR_INTERNAL),  # observe: unsupported
        (b"\x00" + bytes(10), ERR_INTERNAL),  # truncated
        (b"\x00" + bytes(32) + b"\x02\x00\x01\x00\x01\x00", ERR_INTERNAL),  # unknown hash
        (b"\x00" * (1024 * 1024 + 1), ERR_LIMIT),  # oversized
    ],
)
async def test_bad_requests_reset_with_iroh_codes(request_: bytes, code: int) -> None:
    store = MemStore()
    digest = await store.import_bytes(b"still here")
    async with providers(store) as routers, receiver() as ep:
        with pytest.raises(StreamReset) as info:
            await raw_request(ep, routers[0].endpoint.addr(), request_)
        assert info.value.error_code == code
        # The provider keeps serving after a bad request.
        stats = await Downloader(ep, MemStore()).fetch(digest, addrs(routers))
        assert stats.bytes_fetched == len(b"still here")


async def test_slow_request_times_out() -> None:
    endpoint = await bind([ALPN])
    router = Router.builder(endpoint).accept(ALPN, BlobsProtocol(MemStore(), limits=ProviderLimits(request_timeout=0.5))).spawn()
    try:
        async with receiver() as ep:
            with pytest.raises(StreamReset) as info:
                await raw_request(ep, endpoint.addr(), b"\x00", finish=False)
            assert info.value.error_code == ERR_LIMIT
    finally:
        await router.shutdown()


async def test_absurd_ranges_get_the_size_proof() -> None:
    data = os.urandom(100_000)
    source = MemStore()
    digest = await source.import_bytes(data)
    async with providers(source) as routers, receiver() as ep:
        far = ChunkRanges.from_range(1 << 62, None)
        reply = await raw_request(ep, routers[0].endpoint.addr(), GetRequest.blob_ranges(digest, far).to_bytes())
    assert int.from_bytes(reply[:8], "little") == len(data)
    assert len(reply) < 20_000  # the last chunk and its proof, not the blob


async def test_truncated_response_stores_nothing_bad() -> None:
    """A provider that vanishes mid-response: a clean error, and what was kept is verified data."""
    data = os.urandom(8 * 1024 * 1024)
    source, target = MemStore(), MemStore()
    digest = await source.import_bytes(data)
    async with providers(source) as routers, receiver() as ep:
        with pytest.raises(BlobsError):
            async with Downloader(ep, target, unit_size=8 * 1024 * 1024).download(digest, addrs(routers)) as dl:
                async for event in dl:
                    if isinstance(event, Progress) and event.bytes > 0:
                        await routers[0].shutdown()
    assert await target.has(digest) == "partial"
    kept = await target.missing_ranges(digest)
    async with providers(source) as routers, receiver() as ep:
        stats = await Downloader(ep, target).fetch(digest, addrs(routers))
    # The store re-hashes the whole blob on completion, so a bad kept byte would fail here.
    assert await target.get_bytes(digest) == data
    assert stats.bytes_fetched < len(data) and not kept.is_empty()


async def test_many_concurrent_requests_are_queued_not_refused() -> None:
    """More streams than the per-connection and global limits: all answered, a few at a time."""
    store = MemStore()
    blobs = [os.urandom(20_000 + i) for i in range(24)]
    digests = [await store.import_bytes(b) for b in blobs]
    endpoint = await bind([ALPN])
    protocol = BlobsProtocol(store, limits=ProviderLimits(max_streams_per_connection=4, max_responses=2, max_responses_per_peer=2))
    router = Router.builder(endpoint).accept(ALPN, protocol).spawn()
    try:
        async with receiver() as ep:
            conn = await ep.connect(endpoint.addr(), ALPN)

            async def get(digest: bytes) -> bytes:
                send, recv = await conn.open_bi()
                await send.write(GetRequest.blob(digest).to_bytes())
                await send.finish()
                async with asyncio.timeout(20):
                    return await recv.read_to_end(1 << 20)

            replies = await asyncio.gather(*(get(d) for d in digests))
            conn.close(0, b"")
    finally:
        await router.shutdown()
    for data, reply in zip(blobs, replies, strict=True):
        assert int.from_bytes(reply[:8], "little") == len(data)
    assert protocol.requests_served == len(blobs)


async def test_disk_corruption_on_a_provider(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A provider whose FsStore file rotted on disk (one flipped bit, then a truncation)."""
    data = os.urandom(3 * 1024 * 1024)
    good = MemStore()
    digest = await good.import_bytes(data)
    async with FsStore(tmp_path / "rotten") as rotten:
        assert await rotten.import_bytes(data) == digest
        path = tmp_path / "rotten" / "complete" / f"{digest.hex()}.data"
        raw = bytearray(path.read_bytes())
        raw[100_000] ^= 0x40  # in the first unit, which the first provider is asked for
        path.write_bytes(raw)
        async with providers(rotten, good) as routers, receiver() as ep:
            target = MemStore()
            events = []
            async with Downloader(ep, target, unit_size=1024 * 1024).download(digest, addrs(routers)) as download:
                events = [event async for event in download]
            dropped = [e for e in events if isinstance(e, ProviderDropped)]
            assert [e.provider for e in dropped] == [routers[0].endpoint.id]
            assert await target.get_bytes(digest) == data
            path.write_bytes(raw[:1_000_000])
            with pytest.raises(StreamReset) as info:
                await raw_request(ep, routers[0].endpoint.addr(), GetRequest.blob(digest).to_bytes())
            assert info.value.error_code == ERR_INTERNAL


async def test_a_blob_whose_last_write_was_cancelled_is_finished_by_the_next_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every chunk is in the store, but the write that had the last one was cancelled while it
    hashed the blob. Nothing is missing, so the next download has nothing to fetch: it must
    have the store finish the blob instead of failing it as incomplete."""
    hashing, slow_outboard = slow_hashing(0.5)
    data = os.urandom(300 * 1024)
    source = MemStore()
    digest = await source.import_bytes(data)
    target = MemStore()
    await target.begin_partial(digest, len(data))
    with monkeypatch.context() as patch:
        patch.setattr(mem_store, "compute_outboard", slow_outboard)
        write = asyncio.ensure_future(target.write_leaves(digest, [Leaf(0, data)]))
        await asyncio.wait_for(hashing.wait(), 10)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
    assert await target.has(digest) == "partial"
    assert (await target.missing_ranges(digest)).is_empty()
    async with providers(source) as routers, receiver() as ep:
        await asyncio.wait_for(Downloader(ep, target).fetch(digest, addrs(routers)), 30)
    assert await target.has(digest) == "complete"
    assert await target.get_bytes(digest) == data
