"""A docs joiner in its own process, for crash tests: ``python -m tests.docs_join_child DB TICKET OWN``.

It stores its replica in the SQLite file DB, writes OWN entries of its own (so that the join is a
reconciliation of two sets, many messages deep, not one message with everything), joins the
ticket's document without fetching content, prints ``syncing`` and waits until it is killed.
:func:`join_and_kill` runs it from a test and kills it partway.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

from irohpy.protocols.docs import DocTicket, DownloadPolicy, NamespaceId, SignedEntry
from irohpy.protocols.docs.store import DocStore
from tests.docs_peer import start_peer

LIFETIME = 600.0
"""Bounds a child its test failed to kill."""


async def main(db: Path, ticket_text: str, own: int) -> None:
    ticket = DocTicket.parse(ticket_text)
    peer = await start_peer(db)
    try:
        doc = await peer.docs.import_namespace(ticket.capability)
        await doc.set_download_policy(DownloadPolicy.nothing_except())
        author = await peer.docs.create_author()
        for i in range(own):
            await doc.set_hash(author, b"own/%04d" % i, bytes(32), 1)
        await doc.start_sync(ticket.nodes)
        print("syncing", flush=True)
        await asyncio.sleep(LIFETIME)
    finally:
        await peer.close()


async def join_and_kill(db: Path, ticket: str, own: int, timeout: float = 120.0) -> int:
    """Run the joiner and SIGKILL it right after the first sync message it committed; returns how
    many entries its store held then.

    Polls the child's store; the kill follows the read that shows progress with no await in
    between (a sharer in the caller's event loop sends nothing more before it; any sharer waits
    for the joiner's reply before its next message)."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.docs_join_child", str(db), ticket,
                                                 str(own), stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        async with asyncio.timeout(60):
            assert await child.stdout.readline() == b"syncing\n"
        watcher = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        stored = 0
        try:
            async with asyncio.timeout(timeout):
                while (stored := watcher.execute("SELECT count(*) FROM entries").fetchone()[0]) <= own:
                    await asyncio.sleep(0.005)
            child.kill()
        finally:
            watcher.close()
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    return stored


def killed_store_entries(db: Path, namespace: NamespaceId, own: int) -> list[SignedEntry]:
    """What the killed joiner's store holds, reopened: an intact database of entries that each
    verify, with all of the joiner's own among them."""
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        check.close()
    store = DocStore(db)
    try:
        kept = store.load_entries(namespace.to_bytes())
    finally:
        store.close()
    for e in kept:
        e.verify()
    assert sum(1 for e in kept if e.key.startswith(b"own/")) == own
    return kept


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
