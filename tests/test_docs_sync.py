"""Two or more irohpy docs peers over real QUIC on loopback: sync, live sync, content, restart, bad input."""

from __future__ import annotations

import asyncio

from irohpy.protocols.docs import ShareMode
from tests.docs_peer import full_state, has_all_content, peers, start_peer, wait_for


async def test_join_gets_entries_and_content() -> None:
    async with peers(2) as (a, b):
        author = await a.docs.create_author()
        doc = await a.docs.create()
        await doc.set(author, b"hello", b"world")
        await doc.set(author, b"big", bytes(range(256)) * 1000)
        ticket = await doc.share(ShareMode.WRITE)
        doc_b = await b.docs.import_(str(ticket))

        await wait_for(doc_b, lambda d: has_all_content(d, 2))
        e = await doc_b.get_exact(author, b"hello")
        assert e is not None and await doc_b.read_to_bytes(e) == b"world"
        assert await full_state(doc_b) == await full_state(doc)
