"""Blob transfer throughput over real QUIC on loopback: one provider, and several at once.

Each provider is its own process holding the same deterministic blob in a MemStore; the
downloader runs in this process into a MemStore, so the figure is network plus verification,
not disk. ``python -m bench blobs [--size-mib 1024] [--providers 1 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np

from irohpy import presets
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint.endpoint import Endpoint
from irohpy.protocols.blobs.downloader import Downloader
from irohpy.protocols.blobs.provider import BlobsProtocol
from irohpy.protocols.blobs.store import MemStore
from irohpy.protocols.blobs.wire import ALPN
from irohpy.protocols.router import Router

MIB = 1 << 20
LOCAL = dict(preset=presets.MINIMAL, bind_addrs=["127.0.0.1:0"])


def blob(size_mib: int) -> bytes:
    """The same pseudo-random bytes in every provider process."""
    return np.random.default_rng(size_mib).bytes(size_mib * MIB)


async def provide(size_mib: int) -> None:
    """Provider process: import the blob, print its address and hash, serve until stdin closes."""
    store = MemStore()
    digest = await store.import_bytes(blob(size_mib))
    endpoint = await Endpoint.bind(alpns=[ALPN], **LOCAL)
    async with Router.builder(endpoint).accept(ALPN, BlobsProtocol(store)).spawn():
        print(json.dumps({"ticket": str(EndpointTicket(endpoint.addr())), "hash": digest.hex()}), flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def download(size_mib: int, providers: int) -> dict[str, float]:
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench.blobs_transfer", "--provide", "--size-mib", str(size_mib)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(providers)
    ]
    try:
        lines = [await asyncio.to_thread(p.stdout.readline) for p in procs]  # type: ignore[union-attr]
        if not all(lines):
            raise RuntimeError("a provider process failed to start (see its stderr above)")
        infos = [json.loads(line) for line in lines]
        addrs = [EndpointTicket.parse(i["ticket"]).addr for i in infos]
        async with await Endpoint.bind(**LOCAL) as endpoint:
            start, cpu = time.perf_counter(), time.process_time()
            stats = await Downloader(endpoint, MemStore()).fetch(bytes.fromhex(infos[0]["hash"]), addrs)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return {"providers": providers, "mb_s": stats.bytes_fetched / wall / 1e6, "seconds": wall,
                "receiver_cpu_s": cpu, "per_provider_mib": [round(p.bytes / MIB, 1) for p in stats.providers]}
    finally:
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(30)
            p.stdout.close()  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench blobs", description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--providers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--provide", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.provide:
        asyncio.run(provide(args.size_mib))
        return 0
    load = os.getloadavg()[0]
    print(f"| blob | providers | MB/s | seconds | receiver CPU s | MiB per provider |  (load {load:.1f})")
    print("|---|---:|---:|---:|---:|---|")
    for n in args.providers:
        r = asyncio.run(download(args.size_mib, n))
        print(f"| {args.size_mib} MiB | {n} | {r['mb_s']:.1f} | {r['seconds']:.1f} | {r['receiver_cpu_s']:.1f} "
              f"| {r['per_provider_mib']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
