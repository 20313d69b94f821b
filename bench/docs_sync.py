"""Document sync of N entries (default 10,000) between irohpy and Rust iroh-docs 0.97, all four ways.

A fresh peer joins a document that already holds N entries (content downloads off, so the figure
is reconciliation, not blobs) and the clock runs until the joiner holds them all; for a Rust joiner,
until it reports the sync with the sharer finished. Each run is one sharer and one joiner: an
earlier joiner is gone before the next one joins, else the new one would reconcile with both.
Bytes are UDP payload bytes both ways on the joiner's endpoint (QUIC included, so Rust and irohpy
count the same thing), plus the sync frames alone on the irohpy side of the pair.
aster sets a download policy only on a document it already has, so a Rust joiner first imports
the ticket's capability with a stand-in peer that lacks the document, turns downloads off, and
only then syncs with the sharer, from when it is measured.
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

from irohpy.protocols.docs import Doc, DocTicket, DownloadPolicy, ShareMode
from irohpy.socket.metrics import SocketMetrics
from tests.aster_peer import SKIP_REASON, AsterPeer, aster_peer
from tests.docs_peer import DocsPeer, start_peer

POLICY = DownloadPolicy.nothing_except()
TIMEOUT = 600.0
STAND_IN_TIMEOUT = 60.0


def items(prefix: bytes, n: int) -> list[tuple[bytes, bytes]]:
    return [(b"%s/%06d" % (prefix, i), b"value %d" % i) for i in range(n)]


def py_udp(peer: DocsPeer) -> int:
    m = peer.endpoint.metrics().group(SocketMetrics)
    return int(sum(c.get() for c in (m.send_ipv4, m.send_ipv6, m.recv_data_ipv4, m.recv_data_ipv6)))


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


async def rust_join(joiner: AsterPeer, ticket: str, sharer: DocsPeer | None = None) -> dict[str, Any]:
    """``sharer`` is the irohpy side, whose sync frames are counted, if there is one."""
    parsed = DocTicket.parse(ticket)
    source = parsed.nodes[0]
    stand_in = await start_peer()  # answers the sync at once: it has no such document
    try:
        rdoc, events = await joiner.join_doc_and_subscribe(str(DocTicket(parsed.capability, (stand_in.endpoint.addr(),))))
        await events.wait_for(lambda e: e["kind"] == "sync_finished", STAND_IN_TIMEOUT)
    finally:
        await stand_in.close()
    await rdoc.set_download_policy("nothing_except")
    await joiner.learn_addr(source)  # off the clock: it dials with a made-up ALPN (see tests/aster_peer.py)
    before = await rust_udp(joiner)
    wire_before = 0 if sharer is None else sharer.docs.wire.sent + sharer.docs.wire.received
    start = time.perf_counter()
    await rdoc.start_sync([source.id])
    await events.wait_for(lambda e: e["kind"] == "sync_finished" and e.get("peer") == str(source.id), TIMEOUT)
    seconds = time.perf_counter() - start
    udp = await rust_udp(joiner) - before
    await events.close()
    frames = None if sharer is None else sharer.docs.wire.sent + sharer.docs.wire.received - wire_before
    return {"seconds": seconds, "udp_bytes": udp, "sync_bytes": frames}


async def run(n: int) -> list[tuple[str, dict[str, Any]]]:
    results = []
    async with aster_peer() as rust_a:
        author = await rust_a.create_author()
        rdoc = await rust_a.create_doc()
        await rdoc.set_many(author, items(b"rust", n))
        ticket = await rdoc.share("write")
        async with aster_peer() as rust_b:
            results.append(("Rust -> Rust", await rust_join(rust_b, ticket)))
        py = await start_peer()
        try:
            results.append(("Rust -> irohpy", await py_join(py, ticket, n)))
        finally:
            await py.close()

    source = await start_peer()
    try:
        doc = await py_doc(source, n)
        ticket_py = str(await doc.share(ShareMode.WRITE))
        joiner = await start_peer()
        try:
            results.append(("irohpy -> irohpy", await py_join(joiner, ticket_py, n)))
        finally:
            await joiner.close()
        async with aster_peer() as rust_c:
            results.append(("irohpy -> Rust", await rust_join(rust_c, ticket_py, source)))
    finally:
        await source.close()
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
    print("| direction | seconds | UDP bytes (joiner, both ways) | sync frames (irohpy side) |")
    print("|---|---:|---:|---:|")
    for name, r in results:
        frames = "" if r["sync_bytes"] is None else f"{r['sync_bytes']:,}"
        print(f"| {name} | {r['seconds']:.2f} | {r['udp_bytes']:,} | {frames} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
