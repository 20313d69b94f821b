"""``irohpy send PATH``: sendme's sender. Share a file or directory until Ctrl-C.

The path is imported into a temporary store in the current directory (``.sendme-send-<random>``,
removed on exit, whether by Ctrl-C, SIGTERM or SIGHUP) as a collection named relative to the
path's parent, as sendme does, and the ``blob`` ticket (format HashSeq) is printed on stdout.
Serving progress goes to stderr per connection: live bars on a terminal, one line per
connection and end when piped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from irohpy.base.addr import EndpointAddr, IpAddr, RelayAddr
from irohpy.base.keys import EndpointId
from irohpy.cli.common import add_endpoint_args, endpoint_from_args, eprint
from irohpy.cli.receive import human_bytes
from irohpy.protocols.blobs.provider import BlobsProtocol, ProviderEvent
from irohpy.protocols.blobs.store import FsStore
from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket
from irohpy.protocols.blobs.wire import ALPN
from irohpy.protocols.router import Router

SENDME_ONLINE_TIMEOUT = 30.0
TICKET_TYPES = ("id", "relay-and-addresses", "relay", "addresses")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("send", help="share a file or directory until Ctrl-C (sendme)")
    parser.add_argument("path", type=Path, metavar="PATH", help="file or directory to share")
    parser.add_argument("--ticket-type", choices=TICKET_TYPES, default="relay-and-addresses",
                        help="what the ticket holds besides the endpoint id (default: relay-and-addresses)")
    parser.add_argument("--no-progress", action="store_true", help="print nothing per connection")
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


@dataclass
class _Peer:
    """One connection being served: what it has been sent so far."""

    remote: str
    task: TaskID | None = None
    done_bytes: int = 0
    requests: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.in_flight: dict[int, int] = {}

    @property
    def sent(self) -> int:
        return self.done_bytes + sum(self.in_flight.values())


class ServeProgress:
    """sendme's serving progress on stderr, per connection.

    On a terminal, a live bar per connection (bytes sent of the shared size); when piped, one
    line as each connection starts and one as it ends. Nothing per request.
    """

    MAX_SHOWN = 16  # finished rows beyond this are dropped, so churn cannot grow the display

    def __init__(self, total: int, *, live: bool | None = None) -> None:
        self._total = max(total, 1)
        self._console = Console(stderr=True)
        self._live = sys.stderr.isatty() if live is None else live
        self._peers: dict[int, _Peer] = {}
        self._finished: list[_Peer] = []
        self._progress: Progress | None = None
        if self._live:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                                      TransferSpeedColumn(), console=self._console,
                                      redirect_stdout=False, redirect_stderr=False)  # stdout is the ticket
            self._progress.start()

    def __enter__(self) -> ServeProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: ProviderEvent) -> None:
        peer = self._peers.get(event.connection_id)
        if event.kind == "connected":
            self._connected(event.connection_id, event.remote)
        elif peer is None:
            return
        elif event.kind in ("started", "progress"):
            peer.in_flight[event.stream_id] = event.bytes_sent
        elif event.kind in ("done", "failed"):
            peer.in_flight.pop(event.stream_id, None)
            peer.done_bytes += event.bytes_sent
            peer.requests += 1
            peer.failed += event.kind == "failed"
        elif event.kind == "closed":
            self._closed(event.connection_id, peer)
        if peer is not None and self._progress is not None and peer.task is not None:
            self._progress.update(peer.task, completed=min(peer.sent, self._total))

    def _connected(self, connection_id: int, remote: EndpointId | None) -> None:
        peer = _Peer(remote.fmt_short() if remote else "?")
        self._peers[connection_id] = peer
        if self._progress is not None:
            peer.task = self._progress.add_task(peer.remote, total=self._total)
        else:
            eprint(f"{peer.remote}: connected")

    def _closed(self, connection_id: int, peer: _Peer) -> None:
        del self._peers[connection_id]
        failed = f", {peer.failed} failed" if peer.failed else ""
        summary = f"sent {human_bytes(peer.sent)} in {peer.requests} request{'s' * (peer.requests != 1)}{failed}"
        if self._progress is None or peer.task is None:
            eprint(f"{peer.remote}: done, {summary}")
            return
        self._progress.update(peer.task, description=f"{peer.remote} done, {summary}")
        self._finished.append(peer)
        if len(self._finished) > self.MAX_SHOWN:
            old = self._finished.pop(0)
            if old.task is not None:
                self._progress.remove_task(old.task)


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
            endpoint = await endpoint_from_args(args, [ALPN], online_timeout=SENDME_ONLINE_TIMEOUT)
            with ServeProgress(size, live=False if args.no_progress else None) as progress:
                provider = BlobsProtocol(store, on_event=None if args.no_progress else progress)
                async with Router.builder(endpoint).accept(ALPN, provider).spawn():
                    ticket = BlobTicket(ticket_addr(endpoint.addr(), args.ticket_type), digest, BlobFormat.HASH_SEQ)
                    kind = "file" if path.is_file() else "directory"
                    print(f"imported {kind} {args.path}, {human_bytes(size)}, hash {digest.hex()}")
                    print("to get this data, use")
                    print(f"irohpy receive {ticket}", flush=True)
                    await asyncio.Event().wait()
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0
