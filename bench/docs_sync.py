"""Document sync of N entries (default 10,000) between irohpy and Rust iroh-docs 0.97, all four ways.

A fresh peer joins a document that already holds N entries (content downloads off, so the figure
is reconciliation, not blobs) and the clock runs until the joiner holds them all; for a Rust joiner,
until it reports the sync finished. Bytes are UDP payload bytes both ways on the joiner's endpoint
(QUIC included, so Rust and irohpy count the same thing), plus, for irohpy, the sync frames alone.
aster can set a download policy only after joining, so a Rust joiner may already be fetching some
content while it syncs: its byte counts are an upper bound.
The Rust peer is aster-rpc in a child process and needs a loopback-only network namespace:
``scripts/loopback-only .venv/bin/python -m bench docs [--entries 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from irohpy.protocols.docs import Doc, DownloadPolicy, ShareMode
from tests.aster_peer import SKIP_REASON, AsterPeer, aster_peer
from tests.docs_peer import DocsPeer, start_peer

POLICY = DownloadPolicy.nothing_except()
TIMEOUT = 600.0


def items(prefix: bytes, n: int) -> list[tuple[bytes, bytes]]:
    return [(b"%s/%06d" % (prefix, i), b"value %d" % i) for i in range(n)]


def py_udp(peer: DocsPeer) -> int:
    m = peer.endpoint.metrics()
    return m.bytes_sent_direct + m.bytes_recv_direct


async def rust_udp(peer: AsterPeer) -> int:
    m = await peer.metrics()
    return sum(v for k, v in m.items() if k.startswith(("send_ipv", "recv_data_ipv")))


async def py_doc(peer: DocsPeer, n: int) -> Doc:
    author = await peer.docs.create_author()
    doc = await peer.docs.create()
    for key, value in items(b"py", n):
        await doc.set(author, key, value)
    return doc


async def py_join(joiner: DocsPeer, ticket: str, n: int) -> dict[str, Any]:
    before, wire_before = py_udp(joiner), joiner.docs.wire.sent + joiner.docs.wire.received
    start = time.perf_counter()
    doc = await joiner.docs.import_(ticket, download_policy=POLICY)
    async with asyncio.timeout(TIMEOUT):
        while len(await doc.query()) < n:
            await asyncio.sleep(0.05)
    return {"seconds": time.perf_counter() - start, "udp_bytes": py_udp(joiner) - before,
            "sync_bytes": joiner.docs.wire.sent + joiner.docs.wire.received - wire_before}


async def rust_join(joiner: AsterPeer, ticket: str) -> dict[str, Any]:
    before = await rust_udp(joiner)
    start = time.perf_counter()
    rdoc, events = await joiner.join_doc_and_subscribe(ticket)
    await rdoc.set_download_policy("nothing_except")
    await events.wait_for(lambda e: e["kind"] == "sync_finished", TIMEOUT)
    seconds = time.perf_counter() - start
    udp = await rust_udp(joiner) - before
    await events.close()
    return {"seconds": seconds, "udp_bytes": udp, "sync_bytes": None}


async def run(n: int) -> list[tuple[str, dict[str, Any]]]:
    results = []
    async with aster_peer() as rust_a, aster_peer() as rust_b:
        author = await rust_a.create_author()
        rdoc = await rust_a.create_doc()
        await rdoc.set_many(author, items(b"rust", n))
        ticket = await rdoc.share("write")
        results.append(("Rust -> Rust", await rust_join(rust_b, ticket)))
        py = await start_peer()
        try:
            results.append(("Rust -> irohpy", await py_join(py, ticket, n)))
        finally:
            await py.close()

        source, joiner = await start_peer(), await start_peer()
        try:
            doc = await py_doc(source, n)
            ticket_py = str(await doc.share(ShareMode.WRITE))
            results.append(("irohpy -> irohpy", await py_join(joiner, ticket_py, n)))
            async with aster_peer() as rust_c:
                results.append(("irohpy -> Rust", await rust_join(rust_c, ticket_py)))
        finally:
            await source.close()
            await joiner.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench docs", description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args(argv)
    if SKIP_REASON is not None:
        print(f"error: {SKIP_REASON}", file=sys.stderr)
        return 1
    results = asyncio.run(run(args.entries))
    print(f"{args.entries} entries, joiner starts empty, content downloads off (load {os.getloadavg()[0]:.1f})")
    print("| direction | seconds | UDP bytes (joiner, both ways) | sync frames (irohpy) |")
    print("|---|---:|---:|---:|")
    for name, r in results:
        frames = "" if r["sync_bytes"] is None else f"{r['sync_bytes']:,}"
        print(f"| {name} | {r['seconds']:.2f} | {r['udp_bytes']:,} | {frames} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
