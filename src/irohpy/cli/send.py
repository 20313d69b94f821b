"""``irohpy send PATH``: sendme's sender. Share a file or directory until Ctrl-C.

The path is imported into a temporary store in the current directory (``.sendme-send-<random>``,
removed on exit) as a collection named relative to the path's parent, as sendme does, and the
``blob`` ticket (format HashSeq) is printed on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from irohpy.base.addr import EndpointAddr, IpAddr, RelayAddr
from irohpy.cli.common import add_endpoint_args, bind_endpoint, eprint
from irohpy.cli.receive import human_bytes
from irohpy.protocols.blobs.provider import BlobsProtocol, ProviderEvent
from irohpy.protocols.blobs.store import FsStore
from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket
from irohpy.protocols.blobs.wire import ALPN
from irohpy.protocols.router import Router

ONLINE_TIMEOUT = 30.0
TICKET_TYPES = ("id", "relay-and-addresses", "relay", "addresses")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("send", help="share a file or directory until Ctrl-C (sendme)")
    parser.add_argument("path", type=Path, metavar="PATH", help="file or directory to share")
    parser.add_argument("--ticket-type", choices=TICKET_TYPES, default="relay-and-addresses",
                        help="what the ticket holds besides the endpoint id (default: relay-and-addresses)")
    parser.add_argument("--no-progress", action="store_true", help="print nothing per request")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more output (also accepted before the command)")
    add_endpoint_args(parser)
    parser.set_defaults(func=send)


def ticket_addr(addr: EndpointAddr, ticket_type: str) -> EndpointAddr:
    """sendme's ``--ticket-type``: which addresses go into the ticket."""
    keep = {
        "id": (),
        "relay-and-addresses": (RelayAddr, IpAddr),
        "relay": (RelayAddr,),
        "addresses": (IpAddr,),
    }[ticket_type]
    return EndpointAddr(addr.id, frozenset(a for a in addr.addrs if isinstance(a, keep)))


def _on_event(event: ProviderEvent) -> None:
    if event.kind in ("done", "failed"):
        who = event.remote.fmt_short() if event.remote else "?"
        what = f"failed: {event.error}" if event.kind == "failed" else f"sent {human_bytes(event.bytes_sent)}"
        eprint(f"{who}: request {event.hash.hex()[:12] or 'get-many'} {what}")


async def send(args: argparse.Namespace) -> int:
    path = args.path
    if not path.exists():
        raise FileNotFoundError(f"path {path} does not exist")
    path = path.resolve()
    cwd = Path.cwd().resolve()
    if path == cwd:
        raise ValueError("can not share from the current directory")
    store_dir = cwd / f".sendme-send-{os.urandom(16).hex()}"
    try:
        async with FsStore(store_dir) as store:
            imported = await store.import_path(path, collection=True)
            digest, size = imported.hash, imported.size
            endpoint = await bind_endpoint(args, [ALPN])
            provider = BlobsProtocol(store, on_event=None if args.no_progress else _on_event)
            async with Router.builder(endpoint).accept(ALPN, provider).spawn():
                if args.relay != "disabled":
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(ONLINE_TIMEOUT):
                            await endpoint.online()
                ticket = BlobTicket(ticket_addr(endpoint.addr(), args.ticket_type), digest, BlobFormat.HASH_SEQ)
                kind = "file" if path.is_file() else "directory"
                print(f"imported {kind} {args.path}, {human_bytes(size)}, hash {digest.hex()}")
                print("to get this data, use")
                print(f"irohpy receive {ticket}", flush=True)
                await asyncio.Event().wait()
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0
