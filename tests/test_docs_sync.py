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


async def test_concurrent_writes_converge_three_peers() -> None:
    async with peers(3) as (a, b, c):
        doc_a = await a.docs.create()
        ticket = await doc_a.share(ShareMode.WRITE)
        doc_b = await b.docs.import_(ticket)
        doc_c = await c.docs.import_(ticket)
        authors = [await p.docs.create_author() for p in (a, b, c)]
        docs = [doc_a, doc_b, doc_c]
        await asyncio.gather(*(d.set(au, b"same", b"from %d" % i) for i, (d, au) in enumerate(zip(docs, authors))),
                             *(d.set(au, b"own/%d/%d" % (i, j), b"x") for i, (d, au) in enumerate(zip(docs, authors))
                               for j in range(10)))
        await asyncio.gather(*(d.set(au, b"same", b"again %d" % i) for i, (d, au) in enumerate(zip(docs, authors))))

        async def converged(_d):  # type: ignore[no-untyped-def]
            states = [await full_state(d) for d in docs]
            return len(states[0]) == 33 and states[0] == states[1] == states[2]

        await wait_for(doc_a, converged)
        await wait_for(doc_b, converged)


async def test_deletion_propagates_and_is_final() -> None:
    async with peers(2) as (a, b):
        author = await a.docs.create_author()
        doc_a = await a.docs.create()
        for i in range(5):
            await doc_a.set(author, b"tmp/%d" % i, b"v")
        await doc_a.set(author, b"keep", b"v")
        doc_b = await b.docs.import_(await doc_a.share(ShareMode.WRITE))
        await wait_for(doc_b, lambda d: has_all_content(d, 6))
        assert await doc_a.del_(author, b"tmp/") == 5
        await wait_for(doc_b, lambda d: has_all_content(d, 1))
        assert [e.key for e in await doc_b.query()] == [b"keep"]
        tomb = await doc_b.get_exact(author, b"tmp/", include_empty=True)
        assert tomb is not None and tomb.is_empty()


async def test_restart_resumes_from_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from irohpy.base.keys import SecretKey
    secret = SecretKey.generate()
    async with peers(1) as (b,):
        author = await b.docs.create_author()
        doc_b = await b.docs.create()
        await doc_b.set(author, b"before", b"1")
        ticket = await doc_b.share(ShareMode.READ)
        a = await start_peer(tmp_path / "a.db", secret)
        try:
            doc_a = await a.docs.import_(ticket)
            await wait_for(doc_a, lambda d: has_all_content(d, 1))
            doc_id = doc_a.id
        finally:
            await a.close()
        for i in range(20):
            await doc_b.set(author, b"while-down/%d" % i, b"x%d" % i)
        a = await start_peer(tmp_path / "a.db", secret)
        try:
            doc_a = await a.docs.open(doc_id)
            assert doc_a is not None and not doc_a.writable
            assert len(await doc_a.query()) >= 1
            # No ticket this time: the restarted peer rejoins and syncs from what its store remembers.
            await wait_for(doc_a, lambda d: has_all_content(d, 21))
            assert await full_state(doc_a) == await full_state(doc_b)
        finally:
            await a.close()
