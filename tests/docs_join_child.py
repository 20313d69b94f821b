"""A docs joiner in its own process, for crash tests: ``python -m tests.docs_join_child DB TICKET OWN``.

It stores its replica in the SQLite file DB, writes OWN entries of its own (so that the join is a
reconciliation of two sets, many messages deep, not one message with everything), joins the
ticket's document without fetching content, prints ``syncing`` and waits until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from irohpy.protocols.docs import DocTicket, DownloadPolicy
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


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
