"""``irohpy doc``: documents from the command line, kept in a data directory between runs.

``create``, ``set``, ``get`` and ``ls`` work on the local replica only. ``share`` prints a ticket
and serves live sync until Ctrl-C, ``join`` imports a ticket and returns after the first sync and
its content downloads, ``watch`` syncs live and prints every event. The data directory (``--data``,
default ``$IROHPY_DOCS_DIR`` or ``./.irohpy-docs``) holds ``docs.db`` (the replicas) and ``blobs/``;
the command remembers the last document created or joined, so ``--doc`` is rarely needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from irohpy.cli.common import add_endpoint_args, endpoint_from_args, eprint
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import DocsError, IrohError
from irohpy.protocols.blobs.provider import BlobsProtocol
from irohpy.protocols.blobs.store import FsStore
from irohpy.protocols.blobs.wire import ALPN as BLOBS_ALPN
from irohpy.protocols.docs import (
    AuthorId,
    ContentReady,
    Doc,
    Docs,
    DocTicket,
    InsertLocal,
    InsertRemote,
    LiveEvent,
    NamespaceId,
    PendingContentReady,
    ShareMode,
    SignedEntry,
    SyncFinished,
)
from irohpy.protocols.gossip import Gossip, NeighborDown, NeighborUp
from irohpy.protocols.router import Router

DATA_ENV = "IROHPY_DOCS_DIR"
_CURRENT = "cli_current_doc"
JOIN_TIMEOUT = 120.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("doc", help="documents: create, set, get, ls, share, join, watch (iroh-docs)")
    cmds = parser.add_subparsers(dest="doc_command", required=True, metavar="ACTION")

    def command(name: str, help_text: str, func: object, *, network: bool = False) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text)
        p.add_argument("--data", metavar="DIR", default=os.environ.get(DATA_ENV, ".irohpy-docs"),
                       help=f"data directory (default ${DATA_ENV} or ./.irohpy-docs)")
        if name not in ("create", "join"):
            p.add_argument("--doc", metavar="ID", help="document id (default: the last created or joined)")
        if network:
            add_endpoint_args(p)
        p.set_defaults(func=func)
        return p

    command("create", "create a document and make it the current one", _create)
    p = command("set", "set KEY to VALUE (signed by the default author, or --author)", _set)
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--author", metavar="ID", help="author id (hex) from this data directory")
    p = command("get", "print the content under KEY (every author's, newest first)", _get)
    p.add_argument("key", metavar="KEY")
    p.add_argument("--prefix", action="store_true", help="KEY is a prefix")
    p = command("ls", "list entries: key, author, size, hash", _ls)
    p.add_argument("--prefix", metavar="PREFIX", default="", help="only keys starting with PREFIX")
    p = command("share", "print a ticket and serve live sync until Ctrl-C", _share, network=True)
    p.add_argument("mode", choices=["read", "write"], help="capability the ticket grants")
    p = command("join", "import a ticket, sync once, fetch the content", _join, network=True)
    p.add_argument("ticket", metavar="TICKET")
    p.add_argument("--timeout", type=float, default=JOIN_TIMEOUT, help="give up after this many seconds")
    command("watch", "sync the document live and print its events until Ctrl-C", _watch, network=True)


# -- local -----------------------------------------------------------------------------


@dataclass
class _Local:
    docs: Docs
    blobs: FsStore


@contextlib.asynccontextmanager
async def _local(args: argparse.Namespace, endpoint: Endpoint | None = None,
                 gossip: Gossip | None = None) -> AsyncIterator[_Local]:
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    blobs = FsStore(data / "blobs")
    try:
        docs = Docs(endpoint, blobs, gossip, path=data / "docs.db")  # type: ignore[arg-type]
        try:
            yield _Local(docs, blobs)
        finally:
            await docs.close()
    finally:
        await blobs.close()


async def _open_doc(local: _Local, args: argparse.Namespace) -> Doc:
    raw = getattr(args, "doc", None)
    if raw:
        namespace = NamespaceId.parse(raw)
    else:
        current = local.docs.store.get_setting(_CURRENT)
        if current is None:
            raise DocsError("no current document: create or join one first, or pass --doc ID")
        namespace = NamespaceId(current)
    doc = await local.docs.open(namespace)
    if doc is None:
        raise DocsError(f"unknown document {namespace}")
    return doc


def _set_current(local: _Local, doc: Doc) -> None:
    local.docs.store.set_setting(_CURRENT, doc.id.to_bytes())


def _row(e: SignedEntry) -> str:
    return f"{_text(e.key)}\t{e.author.fmt_short()}\t{e.content_len}\t{e.content_hash.hex()[:10]}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


async def _create(args: argparse.Namespace) -> int:
    async with _local(args) as local:
        doc = await local.docs.create()
        _set_current(local, doc)
        print(doc.id)
    return 0


async def _set(args: argparse.Namespace) -> int:
    async with _local(args) as local:
        doc = await _open_doc(local, args)
        author = AuthorId.parse(args.author) if args.author else await local.docs.default_author()
        digest = await doc.set(author, args.key.encode(), args.value.encode())
        print(digest.hex())
    return 0


async def _get(args: argparse.Namespace) -> int:
    async with _local(args) as local:
        doc = await _open_doc(local, args)
        key = args.key.encode()
        found = await (doc.query(prefix=key) if args.prefix else doc.query(key=key))
        if not found:
            raise DocsError(f"no entry for {args.key!r}")
        for e in sorted(found, key=lambda e: e.record, reverse=True):
            try:
                content = await doc.read_to_bytes(e)
            except IrohError:
                eprint(f"{_text(e.key)} by {e.author.fmt_short()}: content not downloaded")
                continue
            sys.stdout.buffer.write(content + (b"" if content.endswith(b"\n") else b"\n"))
        sys.stdout.flush()
    return 0


async def _ls(args: argparse.Namespace) -> int:
    async with _local(args) as local:
        doc = await _open_doc(local, args)
        for e in await doc.query(prefix=args.prefix.encode()):
            print(_row(e))
    return 0


# -- networked -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _online(args: argparse.Namespace) -> AsyncIterator[_Local]:
    endpoint = await endpoint_from_args(args)
    gossip = Gossip(endpoint)
    try:
        async with _local(args, endpoint, gossip) as local:
            router = (Router.builder(endpoint).accept(local.docs.alpn, local.docs)
                      .accept(BLOBS_ALPN, BlobsProtocol(local.blobs)).accept(gossip.alpn, gossip).spawn())
            async with router:
                await local.docs.start()
                yield local
    finally:
        await endpoint.close()


def _describe(event: LiveEvent) -> str | None:
    if isinstance(event, InsertLocal | InsertRemote):
        origin = "local" if isinstance(event, InsertLocal) else f"from {event.from_.fmt_short()}"
        what = "delete" if event.entry.is_empty() else "insert"
        return f"{what} {_text(event.entry.key)} by {event.entry.author.fmt_short()} ({origin})"
    if isinstance(event, ContentReady):
        return f"content ready {event.hash.hex()[:10]}"
    if isinstance(event, SyncFinished):
        result = "ok" if event.error is None else f"failed: {event.error}"
        return f"sync with {event.peer.fmt_short()} {result}: sent {event.sent}, received {event.received}"
    if isinstance(event, NeighborUp | NeighborDown):
        return f"neighbor {'up' if isinstance(event, NeighborUp) else 'down'}: {event.endpoint_id.fmt_short()}"
    return None


async def _print_events(doc: Doc) -> None:
    async for event in doc.subscribe():
        line = _describe(event)
        if line is not None:
            print(line, flush=True)


async def _share(args: argparse.Namespace) -> int:
    async with _online(args) as local:
        doc = await _open_doc(local, args)
        ticket = await doc.share(ShareMode(args.mode))
        print(ticket, flush=True)
        eprint(f"sharing {doc.id.fmt_short()} ({args.mode}); to join, run: irohpy doc join {ticket}")
        await _print_events(doc)
    return 0


async def _join(args: argparse.Namespace) -> int:
    ticket = DocTicket.parse(args.ticket.strip())
    async with _online(args) as local:
        existing = await local.docs.open(ticket.namespace)
        doc = existing or await local.docs.import_namespace(ticket.capability)
        events = doc.subscribe()
        await doc.start_sync(ticket.nodes)
        _set_current(local, doc)
        synced = False
        try:
            async with asyncio.timeout(args.timeout):
                async for event in events:
                    line = _describe(event)
                    if line is not None and args.verbose:
                        eprint(line)
                    if isinstance(event, SyncFinished) and event.error is None:
                        synced = True
                    if synced and isinstance(event, PendingContentReady):
                        break
        except TimeoutError:
            raise DocsError(f"no complete sync within {args.timeout:g} s") from None
        count = len(await doc.query())
        print(f"{doc.id}\t{count} {'entry' if count == 1 else 'entries'}")
    return 0


async def _watch(args: argparse.Namespace) -> int:
    async with _online(args) as local:
        doc = await _open_doc(local, args)
        await doc.start_sync()
        eprint(f"watching {doc.id.fmt_short()}; Ctrl-C to stop")
        await _print_events(doc)
    return 0
