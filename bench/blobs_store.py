"""FsStore throughput: importing, downloading (writing verified leaves) and exporting one large blob, and many small files.

The download is measured twice: with leaves cut straight from the source (the store's own
cost: writes, progress saves and the final re-hash, as no outboard pairs come with them) and
through bao's verifying decoder fed the provider's encoding (what a transfer costs without
the network; the verified pairs become the outboard, no re-hash).
``python -m bench.blobs_store [--size-mib 1024] [--files 1000] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.store import FsStore

MIB = 1 << 20
LEAF = 4 * MIB


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))


async def _big(work: Path, size: int) -> dict[str, float]:
    source = work / "big.bin"
    _write_random(source, size)
    out: dict[str, float] = {}
    async with FsStore(work / "a") as a, FsStore(work / "b") as b, FsStore(work / "c") as c:
        start = time.perf_counter()
        hash = await a.import_file(source)
        out["import"] = time.perf_counter() - start

        read, outboard = await a.reader(hash)
        start = time.perf_counter()
        await b.begin_partial(hash, size)
        for offset in range(0, size, LEAF):
            await b.write_leaves(hash, [bao.Leaf(offset, read(offset, LEAF))])
        assert await b.has(hash) == "complete"
        out["download (store only)"] = time.perf_counter() - start

        start = time.perf_counter()
        decoder = bao.ResponseDecoder(hash, ChunkRanges.all())
        pending = bytearray(size.to_bytes(8, "little"))
        for piece in bao.encode_ranges(read, outboard, ChunkRanges.all()):
            pending += piece
            if len(pending) >= LEAF:
                leaves = decoder.feed(bytes(pending))
                pending.clear()
                if decoder.size is not None and not await c.has(hash):
                    await c.begin_partial(hash, decoder.size)
                await c.write_leaves(hash, leaves, decoder.take_pairs())
        leaves = decoder.feed(bytes(pending))
        await c.write_leaves(hash, leaves, decoder.take_pairs())
        decoder.finish()
        assert await c.has(hash) == "complete"
        out["download (encode + verify + store)"] = time.perf_counter() - start

        start = time.perf_counter()
        await c.export(hash, work / "out.bin")
        out["export"] = time.perf_counter() - start
    return out


async def _many(work: Path, count: int) -> dict[str, float]:
    share = work / "share"
    share.mkdir()
    for i in range(count):
        (share / f"f{i:05}.txt").write_bytes(os.urandom(1000 + i % 4000))
    async with FsStore(work / "d") as store:
        start = time.perf_counter()
        await store.import_path(share)
        return {f"import {count} files": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the stores (default: a temp dir)")
    args = parser.parse_args(argv)
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        big = asyncio.run(_big(Path(tmp), size))
        many = asyncio.run(_many(Path(tmp), args.files))
    print(f"| FsStore, {args.size_mib} MiB blob | seconds | MB/s |")
    print("|---|---:|---:|")
    for name, seconds in big.items():
        print(f"| {name} | {seconds:.2f} | {size / seconds / 1e6:.0f} |")
    for name, seconds in many.items():
        print(f"| {name} | {seconds:.2f} | |")


if __name__ == "__main__":
    main()
