"""iroh-blobs interop with Rust iroh-blobs 0.99 (aster-rpc): each side serves, the other fetches.

The Rust node runs in a child process (``tests/aster_peer.py``); irohpy's provider and
downloader run here, over real QUIC on loopback, inside a loopback-only network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import blake3
import pytest

from irohpy.endpoint.endpoint import Endpoint
from irohpy.protocols.blobs.collection import Collection
from irohpy.protocols.blobs.downloader import Downloader, Progress
from irohpy.protocols.blobs.provider import BlobsProtocol
from irohpy.protocols.blobs.store import FsStore, MemStore
from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket
from irohpy.protocols.blobs.wire import ALPN
from irohpy.protocols.router import Router
from tests.aster_peer import SKIP_REASON, AsterPeer, aster_peer
from tests.helpers import bind
from tests.test_sendme import LOCAL, irohpy, sending

pytestmark = [pytest.mark.aster, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

MIB = 1024 * 1024
SIZES = [0, 1, 1024, 16 * 1024 + 1, 5 * MIB]


@pytest.fixture
async def rust() -> AsyncIterator[AsterPeer]:
    async with aster_peer() as peer:
        yield peer


@contextlib.asynccontextmanager
async def provider(store: MemStore) -> AsyncIterator[Router]:
    endpoint = await bind([ALPN])
    router = Router.builder(endpoint).accept(ALPN, BlobsProtocol(store)).spawn()
    try:
        yield router
    finally:
        await router.shutdown()


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Endpoint]:
    endpoint = await bind()
    try:
        yield endpoint
    finally:
        await endpoint.close()


@pytest.mark.parametrize("size", SIZES)
async def test_rust_serves_irohpy_fetches(rust: AsterPeer, size: int) -> None:
    data = os.urandom(size)
    digest = await rust.add_bytes(data)
    assert digest == blake3.blake3(data).digest()
    ticket = BlobTicket.parse(await rust.blob_ticket(digest))
    assert ticket.hash == digest and ticket.format is BlobFormat.RAW and ticket.addr.id == rust.id
    target = MemStore()
    async with receiver() as ep:
        stats = await Downloader(ep, target).fetch(ticket.hash, [ticket.addr])
    assert await target.get_bytes(digest) == data
    # The size probe's last chunk, when it does not fill its chunk group, is fetched again.
    assert stats.total_bytes == size and size <= stats.bytes_fetched <= size + 1024


@pytest.mark.parametrize("size", SIZES)
async def test_irohpy_serves_rust_fetches(rust: AsterPeer, size: int) -> None:
    data = os.urandom(size)
    source = MemStore()
    digest = await source.import_bytes(data)
    async with provider(source) as router:
        ticket = BlobTicket(router.endpoint.addr(), digest)
        assert await rust.download_ticket(str(ticket)) == data
    assert await rust.read_bytes(digest) == data
    if size:
        # The empty blob is implicit in iroh-blobs: it reports "partial" even after a
        # Rust-to-Rust download of it, so only non-empty blobs are checked here.
        assert await rust.blob_status(digest) == ("complete", size)


def sendme_dir(root: Path) -> dict[str, bytes]:
    """A directory as sendme would send it: nested files, an empty one, and one over a chunk group."""
    files = {
        "photos/a.jpg": os.urandom(70_000),
        "photos/b.jpg": os.urandom(1),
        "notes/empty.txt": b"",
        "notes/readme.md": b"# hello\n" * 100,
        "big.bin": os.urandom(MIB + 5),
    }
    for name, data in files.items():
        path = root / "share" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {f"share/{name}": data for name, data in files.items()}


async def test_rust_collection_to_irohpy(rust: AsterPeer, tmp_path: Path) -> None:
    files = sorted(sendme_dir(tmp_path).items())
    root = await rust.add_collection(files)
    ticket = BlobTicket.parse(await rust.blob_ticket(root, collection=True))
    assert ticket.format is BlobFormat.HASH_SEQ and ticket.hash == root
    target = MemStore()
    async with receiver() as ep:
        await Downloader(ep, target).fetch(ticket.hash, [ticket.addr], BlobFormat.HASH_SEQ)
    collection = await target.collection(root)
    assert collection.names == [name for name, _ in files]
    for name, digest in collection:
        assert await target.get_bytes(digest) == dict(files)[name]
    await target.export_collection(root, tmp_path / "out")
    for name, data in files:
        assert (tmp_path / "out" / name).read_bytes() == data


async def test_irohpy_collection_to_rust(rust: AsterPeer, tmp_path: Path) -> None:
    files = sendme_dir(tmp_path)
    source = MemStore()
    imported = await source.import_path(tmp_path / "share")
    assert imported.format is BlobFormat.HASH_SEQ and imported.collection is not None
    async with provider(source) as router:
        got = await rust.download_collection(imported.hash, router.endpoint.addr())
    assert got == sorted(files.items())
    listed = await rust.list_collection(imported.hash)
    assert [(name, digest) for name, digest, _ in listed] == list(imported.collection)


async def test_same_collection_hash_on_both_sides(rust: AsterPeer) -> None:
    files = [("a", b"one"), ("b/c", os.urandom(5000)), ("d", b"")]
    rust_root = await rust.add_collection(files)
    store = MemStore()
    entries = [(name, await store.import_bytes(data)) for name, data in files]
    assert Collection(entries).hash() == rust_root


async def test_resumed_download_from_rust_and_irohpy_providers(rust: AsterPeer, tmp_path: Path) -> None:
    """Rust and irohpy both provide; irohpy downloads into a store on disk, is interrupted
    halfway, then resumes with the store reopened and fetches only what is missing."""
    data = os.urandom(12 * MIB)
    digest = await rust.add_bytes(data)
    source = MemStore()
    assert await source.import_bytes(data) == digest
    credit: dict[object, int] = {}
    # A fast provider takes more units: 48 small ones leave our in-process provider a share
    # unless it is ~48x slower than Rust's, where 12 units failed at ~6x beside a CPU hog.
    unit = 256 * 1024
    async with provider(source) as router, receiver() as ep:
        providers = [rust.addr, router.endpoint.addr()]
        async with FsStore(tmp_path / "store") as target:
            downloader = Downloader(ep, target, unit_size=unit, in_flight=1)
            async with downloader.download(digest, providers) as download:
                async for event in download:
                    if isinstance(event, Progress) and event.bytes >= len(data) // 2:
                        credit = {p.provider: p.bytes for p in event.providers}
                        break
        async with FsStore(tmp_path / "store") as target:
            missing = await target.missing_ranges(digest)
            have = len(data) - sum((end or len(data) // 1024) - start for start, end in missing.intervals()) * 1024
            assert len(data) // 2 <= have < len(data)
            stats = await Downloader(ep, target, unit_size=unit, in_flight=1).fetch(digest, providers)
            assert await target.get_bytes(digest) == data
    assert stats.bytes_fetched == len(data) - have, "the resumed download fetched only what was missing"
    for p in stats.providers:
        credit[p.provider] = credit.get(p.provider, 0) + p.bytes
    assert credit.get(rust.id, 0) > 0 and credit.get(router.endpoint.id, 0) > 0, (credit, stats.providers)


async def test_rust_provider_killed_irohpy_provider_finishes(rust: AsterPeer) -> None:
    """The Rust provider dies mid-download; the irohpy provider serves the rest."""
    data = os.urandom(12 * MIB)
    digest = await rust.add_bytes(data)
    source, target = MemStore(), MemStore()
    await source.import_bytes(data)
    async with provider(source) as router, receiver() as ep:
        downloader = Downloader(ep, target, unit_size=MIB, in_flight=1)
        async with downloader.download(digest, [rust.addr, router.endpoint.addr()]) as download:
            async for event in download:
                if isinstance(event, Progress) and event.bytes >= len(data) // 4:
                    await rust.kill()
                    break
            stats = await asyncio.wait_for(download.wait(), 60)
    assert await target.get_bytes(digest) == data
    assert stats.bytes_fetched >= len(data) - len(data) // 4


async def test_cli_receive_from_rust_and_irohpy_send_at_once(rust: AsterPeer, tmp_path: Path) -> None:
    """sendme-style: `irohpy receive` given a Rust collection ticket and an `irohpy send`
    ticket for the same directory fetches from both providers at once and writes the files."""
    files = sendme_dir(tmp_path)
    (tmp_path / "share" / "huge.bin").write_bytes(huge := os.urandom(10 * MIB))
    files["share/huge.bin"] = huge
    root = await rust.add_collection(sorted(files.items()))
    rust_ticket = await rust.blob_ticket(root, collection=True)
    out = tmp_path / "out"
    with sending(tmp_path / "share", tmp_path) as (py_ticket, _):
        sender = BlobTicket.parse(py_ticket)
        assert sender.hash == root, "both sides build the same collection"
        done = await asyncio.to_thread(irohpy, "receive", rust_ticket, py_ticket, "--out", str(out),
                                       "--json", *LOCAL)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    served = {p["id"]: p["bytes"] for p in summary["providers"]}
    assert served[str(rust.id)] > 0 and served[str(sender.addr.id)] > 0, served
    for name, data in files.items():
        assert (out / name).read_bytes() == data
