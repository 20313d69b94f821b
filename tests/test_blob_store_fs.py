"""FsStore on disk: resume across processes, crashes (SIGKILL) at any point, recovery, locking, memory use."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import tracemalloc
from pathlib import Path

import pytest

from irohpy.errors import BlobsError
from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.ranges import GROUP_CHUNKS, GROUP_SIZE, ChunkRanges, groups_for_size
from irohpy.protocols.blobs.store import FsStore
from irohpy.protocols.blobs.store import fs as fs_module
from irohpy.protocols.blobs.store.bitfield import ChunkBits

MIB = 1 << 20

# A downloader that writes one verified group at a time, in random order, saving
# progress after each, and reports every group it has written.
DOWNLOADER = """
import asyncio, random, sys
from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.ranges import ChunkRanges, GROUP_CHUNKS, groups_for_size
from irohpy.protocols.blobs.store import FsStore

root, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(seed).randbytes(size)
outboard = bao.compute_outboard(data)

async def main():
    store = FsStore(root, sync_bytes=0, sync_interval=0.0)
    await store.begin_partial(outboard.root, size)
    print("ready", flush=True)
    order = list(range(groups_for_size(size)))
    random.Random(seed + 1).shuffle(order)
    for g in order:
        ranges = ChunkRanges.from_range(g * GROUP_CHUNKS, (g + 1) * GROUP_CHUNKS)
        response = size.to_bytes(8, "little") + b"".join(
            bao.encode_ranges(lambda o, n: data[o : o + n], outboard, ranges))
        decoder = bao.ResponseDecoder(outboard.root, ranges)
        leaves = decoder.feed(response)
        complete = await store.write_leaves(outboard.root, leaves, decoder.take_pairs())
        print("group", g, complete, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""

# An importer of one file, for killing mid-import.
IMPORTER = """
import asyncio, sys
from irohpy.protocols.blobs.store import FsStore

async def main():
    store = FsStore(sys.argv[1])
    print("ready", flush=True)
    print("hash", (await store.import_file(sys.argv[2])).hex(), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def spawn(script: str, *args: object) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *map(str, args), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"ready\n"
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    async with asyncio.timeout(10):
        await proc.wait()


def _reported_groups(out: bytes) -> set[int]:
    """The groups the killed downloader reported after we stopped reading; only its very last
    line may be cut short (CI once saw a line that was not a whole report)."""
    lines = out.split(b"\n")
    groups = set()
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) == 3 and fields[0] == b"group" and fields[1].isdigit():
            groups.add(int(fields[1]))
        else:
            assert i == len(lines) - 1, f"not a report: {line!r} in {out!r}"
    return groups


def data_for(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def marked_groups(ranges: ChunkRanges, size: int) -> set[int]:
    missing = ranges.to_groups()
    return {g for g in range(groups_for_size(size)) if not missing.contains(g)}


async def fetch(store: FsStore, data: bytes, ranges: ChunkRanges) -> tuple[bool, int]:
    """Download ``ranges`` of ``data`` into ``store`` through the verifying decoder; return (complete, bytes)."""
    outboard = bao.compute_outboard(data)
    response = len(data).to_bytes(8, "little") + b"".join(
        bao.encode_ranges(lambda o, n: data[o : o + n], outboard, ranges)
    )
    decoder = bao.ResponseDecoder(outboard.root, ranges)
    leaves = decoder.feed(response)
    decoder.finish()
    await store.begin_partial(outboard.root, len(data))
    complete = await store.write_leaves(outboard.root, leaves, decoder.take_pairs())
    return complete, sum(len(leaf.data) for leaf in leaves)


async def test_download_resumes_after_reopen(tmp_path: Path) -> None:
    data = data_for(20 * GROUP_SIZE + 5, 1)
    hash = bao.compute_outboard(data).root
    async with FsStore(tmp_path / "s") as store:
        assert (await fetch(store, data, ChunkRanges.from_range(0, 5 * GROUP_CHUNKS)))[0] is False
        await fetch(store, data, ChunkRanges.from_range(20 * GROUP_CHUNKS, None))
    async with FsStore(tmp_path / "s") as store:
        assert await store.has(hash) == "partial"
        missing = await store.missing_ranges(hash)
        assert missing == ChunkRanges.from_range(5 * GROUP_CHUNKS, 20 * GROUP_CHUNKS)
        complete, fetched = await fetch(store, data, missing)
        assert complete and fetched == 15 * GROUP_SIZE
    async with FsStore(tmp_path / "s") as store:
        assert await store.get_bytes(hash) == data
        assert (await store.reader(hash))[1] == bao.compute_outboard(data)


async def test_finished_download_keeps_its_verified_pairs_as_outboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No second hashing of the blob when the pairs check out; a partial without them (or with a
    bad one) is hashed as before."""
    data = data_for(40 * GROUP_SIZE + 9, 2)
    outboard = bao.compute_outboard(data)
    hashed: list[int] = []
    hash_file = fs_module._hash_file
    monkeypatch.setattr(fs_module, "_hash_file", lambda fd, size: hashed.append(size) or hash_file(fd, size))
    for trial, spoil in enumerate([None, "remove", "flip"]):
        root = tmp_path / f"s{trial}"
        async with FsStore(root) as store:
            await fetch(store, data, ChunkRanges.from_range(0, 7 * GROUP_CHUNKS))
        obao = root / "partial" / f"{outboard.root.hex()}.obao"
        if spoil == "remove":
            obao.unlink()
        elif spoil == "flip":
            pairs = bytearray(obao.read_bytes())
            pairs[4 * 64 + 3] ^= 1  # groups 0-3's pair: not sent again for the groups still missing
            obao.write_bytes(pairs)
        async with FsStore(root) as store:
            complete, _ = await fetch(store, data, await store.missing_ranges(outboard.root))
            assert complete and (await store.reader(outboard.root))[1] == outboard
            assert await store.get_bytes(outboard.root) == data
        assert hashed == ([] if spoil is None else [len(data)]), spoil
        assert list((root / "partial").iterdir()) == []
        hashed.clear()


async def test_sigkill_mid_download_loses_nothing_verified_and_marks_nothing_unwritten(tmp_path: Path) -> None:
    size = MIB // 2 + 100
    groups = groups_for_size(size)
    data = data_for(size, 7)
    hash = bao.compute_outboard(data).root
    rng = random.Random(3)
    # Kill points: after some number of reported groups; the last ones land in the final re-hash.
    for trial, stop_after in enumerate([rng.randrange(groups), groups - 1, groups]):
        root = tmp_path / f"s{trial}"
        proc = await spawn(DOWNLOADER, root, size, 7)
        assert proc.stdout is not None
        reported: set[int] = set()
        async with asyncio.timeout(60):
            for _ in range(stop_after):
                reported.add(int((await proc.stdout.readline()).split()[1]))
        await asyncio.sleep(rng.uniform(0, 0.05))
        await kill(proc)
        async with asyncio.timeout(10):
            reported |= _reported_groups(await proc.stdout.read())

        async with FsStore(root) as store:
            status = await store.has(hash)
            if status == "complete":
                assert await store.get_bytes(hash) == data
                assert (await store.reader(hash))[1] == bao.compute_outboard(data)
                continue
            assert status == "partial", (trial, status)
            assert len(reported) < groups
            have = marked_groups(await store.missing_ranges(hash), size)
            assert reported <= have and len(have - reported) <= 1, (trial, sorted(have - reported))
            on_disk = (root / "partial" / f"{hash.hex()}.data").read_bytes()
            for g in have:
                assert on_disk[g * GROUP_SIZE : (g + 1) * GROUP_SIZE] == data[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]
            complete, fetched = await fetch(store, data, await store.missing_ranges(hash))
            assert complete
            assert fetched == size - sum(len(data[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]) for g in have)
            assert await store.get_bytes(hash) == data


async def test_sigkill_mid_import_leaves_nothing_half_imported(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    data = os.urandom(16 * MIB)
    source.write_bytes(data)
    hash = bao.compute_outboard(data).root
    for trial, delay in enumerate([0.0, 0.05, 0.2]):
        root = tmp_path / f"s{trial}"
        proc = await spawn(IMPORTER, root, source)
        await asyncio.sleep(delay)
        await kill(proc)
        async with FsStore(root) as store:
            assert list((root / "tmp").iterdir()) == []
            status = await store.has(hash)
            assert status in ("complete", None)
            if status == "complete":
                assert await store.get_bytes(hash) == data
            assert set(await store.blobs()) <= {hash}


async def test_recovery_after_a_crash_between_outboard_and_data(tmp_path: Path) -> None:
    data = data_for(3 * GROUP_SIZE, 5)
    outboard = bao.compute_outboard(data)
    hex_ = outboard.root.hex()
    root = tmp_path / "s"
    await FsStore(root).close()
    # The state a crash leaves after the outboard landed but before the data was moved in.
    bits = ChunkBits.new(len(data))
    bits.bits[:] = True
    (root / "partial" / f"{hex_}.data").write_bytes(data)
    (root / "partial" / f"{hex_}.state").write_bytes(bits.to_bytes())
    (root / "complete" / f"{hex_}.obao").write_bytes(outboard.data)
    (root / "tmp" / "leftover.data").write_bytes(b"x")
    (root / "complete" / f".{hex_}.obao.0123456789ab.tmp").write_bytes(b"half an outboard")
    (root / ".tags.json.0123456789ab.tmp").write_bytes(b"{")
    (root / "partial" / f"{'ab' * 32}.data").write_bytes(b"no state")
    async with FsStore(root) as store:
        assert sorted(p.name for p in (root / "complete").iterdir()) == []
        assert sorted(p.name for p in root.iterdir()) == ["complete", "lock", "partial", "tmp"]
        assert list((root / "tmp").iterdir()) == []
        assert await store.blobs() == {outboard.root: "partial"}
        assert await store.missing_ranges(outboard.root) == ChunkRanges.empty()
        assert await store.begin_partial(outboard.root, len(data))
        assert await store.get_bytes(outboard.root) == data
        assert list((root / "partial").iterdir()) == []


async def test_corrupt_state_file_drops_the_partial(tmp_path: Path) -> None:
    data = data_for(5 * GROUP_SIZE, 6)
    hash = bao.compute_outboard(data).root
    async with FsStore(tmp_path / "s") as store:
        await fetch(store, data, ChunkRanges.from_range(0, GROUP_CHUNKS))
    (tmp_path / "s" / "partial" / f"{hash.hex()}.state").write_bytes(b"IPYPART1 garbage")
    async with FsStore(tmp_path / "s") as store:
        assert await store.missing_ranges(hash) == ChunkRanges.all()
        assert await store.has(hash) is None
        assert list((tmp_path / "s" / "partial").iterdir()) == []


async def test_cancelling_a_completing_writer_still_completes_consistently(tmp_path: Path) -> None:
    data = data_for(16 * MIB, 8)
    hash = bao.compute_outboard(data).root
    async with FsStore(tmp_path / "s") as store:
        await store.begin_partial(hash, len(data))
        task = asyncio.ensure_future(store.write_leaves(hash, [bao.Leaf(0, data)]))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.has(hash) == "complete"
        assert await store.get_bytes(hash) == data
    assert list((tmp_path / "s" / "partial").iterdir()) == []


async def test_one_process_at_a_time_and_closed_means_closed(tmp_path: Path) -> None:
    store = FsStore(tmp_path / "s")
    with pytest.raises(BlobsError, match="in use"):
        FsStore(tmp_path / "s")
    hash = await store.import_bytes(b"x")
    await store.close()
    await store.close()
    with pytest.raises(BlobsError, match="closed"):
        await store.has(hash)
    async with FsStore(tmp_path / "s") as again:
        assert await again.get_bytes(hash) == b"x"


async def test_large_blobs_stream_through_disk(tmp_path: Path) -> None:
    """64 MiB imported, downloaded and exported while Python never holds half of it (hashing is batched)."""
    size = 64 * MIB + 3
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))
    tracemalloc.start()
    try:
        async with FsStore(tmp_path / "a") as a, FsStore(tmp_path / "b") as b:
            hash = await a.import_file(source)
            assert tracemalloc.get_traced_memory()[1] < size // 2
            tracemalloc.reset_peak()

            read, outboard = await a.reader(hash)
            assert len(outboard.data) == 64 * (groups_for_size(size) - 1)
            assert not await b.begin_partial(hash, size)
            complete = False
            for offset in range(0, size, 4 * MIB):
                complete = await b.write_leaves(hash, [bao.Leaf(offset, read(offset, 4 * MIB))])
            assert complete
            assert tracemalloc.get_traced_memory()[1] < size // 2
            tracemalloc.reset_peak()

            out = await b.export(hash, tmp_path / "out.bin")
            assert tracemalloc.get_traced_memory()[1] < 4 * MIB
    finally:
        tracemalloc.stop()
    assert out.stat().st_size == size
    with open(source, "rb") as f1, open(out, "rb") as f2:
        while chunk := f1.read(8 * MIB):
            assert chunk == f2.read(8 * MIB)


async def test_thousands_of_partials_cost_no_descriptors_and_close_saves_them_all(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    sizes = {os.urandom(32): 20_000 + i for i in range(2000)}
    async with FsStore(tmp_path / "s") as store:
        for h, size in sizes.items():
            await store.begin_partial(h, size)
        assert len(os.listdir("/proc/self/fd")) - before < 5
    async with FsStore(tmp_path / "s") as store:
        assert await store.blobs() == dict.fromkeys(sizes, "partial")
        assert all([await store.size(h) == size for h, size in sizes.items()])
