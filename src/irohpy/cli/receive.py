"""``irohpy receive TICKET``: sendme's receiver. Fetch, verify, and write the files.

Data lands first in ``<out>/.sendme-recv-<hash>``, a store that survives an interrupted run, so
running the same command again resumes and fetches only the chunk groups still missing. The
files are then exported under ``--out`` (existing files are refused unless ``--overwrite``), and
the temporary store is removed. Existing files are found before anything big is fetched: the
collection's names come first (a few bytes), then the data. Progress goes to stderr in
sendme's four stages; a final line on stdout says what was written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from irohpy.base.addr import EndpointAddr
from irohpy.cli.common import add_endpoint_args, endpoint_from_args
from irohpy.errors import BlobsError
from irohpy.protocols.blobs import downloader as dl
from irohpy.protocols.blobs.collection import export_path
from irohpy.protocols.blobs.hashseq import HashSeq
from irohpy.protocols.blobs.store import FsStore
from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("receive", aliases=["recv"], help="fetch what `irohpy send` shares (sendme)")
    parser.add_argument("ticket", metavar="TICKET", nargs="+",
                        help="a blob ticket; several tickets for the same data fetch from all those providers at once")
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="where to write the files (default: the current directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of text")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more output (also accepted before the command)")
    add_endpoint_args(parser)
    parser.set_defaults(func=receive)


def human_bytes(n: float) -> str:
    """Sizes as sendme prints them: ``61 B``, ``1.50 KiB``, ``2.00 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class StageDisplay:
    """sendme's staged progress on stderr; silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._console = Console(stderr=True)
        self._enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._stage = ""
        self._have = 0

    def __enter__(self) -> StageDisplay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def stage(self, text: str) -> None:
        if self._enabled and text != self._stage:
            self._stage = text
            self._stop()
            self._console.print(text, highlight=False)

    def downloading(self, total: int, have: int) -> None:
        """The bar runs over the whole size; what a resumed run already has starts it off."""
        if not self._enabled:
            return
        self.stage("[3/4] Downloading")
        self._progress = Progress(TextColumn("  "), BarColumn(), DownloadColumn(binary_units=True),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=self._console)
        self._progress.start()
        self._task = self._progress.add_task("download", total=total, completed=have)
        self._have = have

    def advance_to(self, fetched: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self._have + fetched)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class JsonLines(StageDisplay):
    """``--json``: one JSON object per line on stdout, for scripts (sizes, progress, done)."""

    def __init__(self) -> None:
        super().__init__(False)
        self._last = 0.0

    @staticmethod
    def emit(**fields: object) -> None:
        print(json.dumps(fields), flush=True)

    def downloading(self, total: int, have: int) -> None:
        self.emit(event="sizes", total_bytes=total, missing_bytes=total - have)

    def advance_to(self, fetched: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.25:
            self._last = now
            self.emit(event="progress", bytes=fetched)


async def _fetch(args: argparse.Namespace, ticket: BlobTicket, providers: list[EndpointAddr], store: FsStore,
                 display: StageDisplay) -> dl.DownloadStats | None:
    """Download what is missing; None when everything was already complete."""
    if await _complete(store, ticket):
        return None
    display.stage("[1/4] Connecting…")

    async def check_names(children: list[bytes]) -> None:
        """A collection's names are known before its data is fetched: files in the way stop us here."""
        _check_targets(args.out, [name for name, _ in await store.collection(ticket.hash)])

    async with await endpoint_from_args(args, wait_online=False) as endpoint:
        downloader = dl.Downloader(endpoint, store)
        check = check_names if ticket.format is BlobFormat.HASH_SEQ and not args.overwrite else None
        async with downloader.download(ticket.hash, providers, ticket.format, before_children=check) as download:
            async for event in download:
                if isinstance(event, dl.Connected):
                    display.stage("[2/4] Getting sizes…")
                elif isinstance(event, dl.SizesKnown):
                    display.downloading(event.total_bytes, event.total_bytes - event.missing_bytes)
                elif isinstance(event, dl.Progress):
                    display.advance_to(event.bytes)
                elif isinstance(event, dl.Done):
                    return event.stats
    raise BlobsError("the download ended without finishing")


def _check_targets(out: Path, names: list[str]) -> None:
    existing = [str(export_path(out, name)) for name in names if export_path(out, name).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more} exists; pass --overwrite to replace it")


async def _complete(store: FsStore, ticket: BlobTicket) -> bool:
    if await store.has(ticket.hash) != "complete":
        return False
    if ticket.format is BlobFormat.RAW:
        return True
    for child in HashSeq.from_bytes(await store.get_bytes(ticket.hash)):
        if await store.has(child) != "complete":
            return False
    return True


async def _export(store: FsStore, ticket: BlobTicket, out: Path, overwrite: bool) -> list[tuple[str, int]]:
    """Write the files under ``out``; every target is checked before anything is written."""
    if ticket.format is BlobFormat.RAW:
        path = await store.export(ticket.hash, out / ticket.hash.hex(), overwrite=overwrite)
        return [(path.name, path.stat().st_size)]
    names = (await store.collection(ticket.hash)).names
    if not overwrite:
        _check_targets(out, list(names))
    paths = await store.export_collection(ticket.hash, out, overwrite=overwrite)
    return [(name, path.stat().st_size) for name, path in zip(names, paths, strict=True)]


async def receive(args: argparse.Namespace) -> int:
    tickets = [BlobTicket.parse(text.strip()) for text in args.ticket]
    ticket = tickets[0]
    if any((t.hash, t.format) != (ticket.hash, ticket.format) for t in tickets):
        raise ValueError("all tickets must name the same data (hash and format)")
    out: Path = args.out
    if ticket.format is BlobFormat.RAW and not args.overwrite:
        _check_targets(out, [ticket.hash.hex()])
    out.mkdir(parents=True, exist_ok=True)
    store_dir = out / f".sendme-recv-{ticket.hash.hex()}"
    fresh = not store_dir.exists()
    started = time.monotonic()
    display = JsonLines() if args.json else StageDisplay(not args.no_progress)
    try:
        with display:
            async with FsStore(store_dir) as store:
                stats = await _fetch(args, ticket, [t.addr for t in tickets], store, display)
                if stats is None and not args.json:
                    print(f"{ticket.hash.hex()} already complete")
                display.stage("[4/4] Exporting")
                files = await _export(store, ticket, out, args.overwrite)
    except FileExistsError:
        if fresh:  # refused before the data came: nothing worth keeping for a resume
            shutil.rmtree(store_dir, ignore_errors=True)
        raise
    shutil.rmtree(store_dir, ignore_errors=True)
    elapsed = time.monotonic() - started
    fetched = stats.bytes_fetched if stats else 0
    size = sum(n for _, n in files)
    if args.json:
        JsonLines.emit(event="done", hash=ticket.hash.hex(), files=[{"name": n, "size": s} for n, s in files],
                       bytes=size, bytes_fetched=fetched, elapsed=round(elapsed, 3), out=str(out),
                       providers=[{"id": str(p.provider), "bytes": p.bytes, "dropped": p.dropped}
                                  for p in (stats.providers if stats else ())])
    else:
        count = f"{len(files)} file{'s' * (len(files) != 1)}"
        print(f"downloaded {count}, {human_bytes(size)} to {out}. took {elapsed:.2f}s "
              f"({human_bytes(fetched / max(elapsed, 1e-9))}/s)")
    return 0
