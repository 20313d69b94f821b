"""iroh-docs interop: irohpy and Rust iroh-docs 0.97 (aster-rpc) sync the same documents, both ways.

Each test runs real Rust nodes in child processes (``tests/aster_peer.py``) and irohpy peers in
this process, all on loopback inside the test's network namespace.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest

from irohpy.protocols.docs import Doc, DocTicket, DownloadPolicy, FilterKind, ShareMode
from tests.aster_peer import SKIP_REASON, AsterError, AsterPeer, RustDoc, aster_peer, b64
from tests.docs_peer import DocsPeer, has_all_content, peers, wait_for

pytestmark = [pytest.mark.aster, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

Row = tuple[str, bytes, str, int, int]


async def py_rows(doc: Doc) -> list[Row]:
    return sorted((str(e.author), e.key, e.content_hash.hex(), e.content_len, e.timestamp) for e in await doc.query())


async def rust_rows(doc: RustDoc, keys: set[bytes]) -> list[Row]:
    """The Rust replica's entries under ``keys``, one exact-key query each: aster's prefix query
    returns at most three rows, so a full query is the union of exact ones over every key in play."""
    rows = []
    for key in sorted(keys):
        rows += [(e.author, e.key, e.content_hash, e.content_len, e.timestamp) for e in await doc.query_key(key)]
    return sorted(rows)


async def all_keys(doc: Doc, *more: bytes) -> set[bytes]:
    return {e.key for e in await doc.query()} | set(more)


async def rust_join(rust: AsterPeer, ticket: str, py: DocsPeer) -> RustDoc:
    """Join on the Rust node and sync with the irohpy peer (aster's plain join does not start a sync)."""
    rdoc = await rust.join_doc(ticket)
    await rdoc.start_sync([py.endpoint.addr()])
    return rdoc


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Re-check after each short pause until true; the deadline bounds the whole wait."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_rust_to_irohpy_entries_and_content() -> None:
    async with aster_peer() as rust, peers(1) as (py,):
        author = await rust.create_author()
        rdoc = await rust.create_doc()
        values = {b"hello": b"from rust", b"big": os.urandom(200_000), b"dir/x": b"x"}
        for k, v in values.items():
            await rdoc.set(author, k, v)
        ticket = DocTicket.parse(await rdoc.share("read"))
        assert not ticket.writable and str(ticket.namespace) == rdoc.id
        doc = await py.docs.import_(ticket)
        await wait_for(doc, lambda d: has_all_content(d, len(values)), 60)
        assert await py_rows(doc) == await rust_rows(rdoc, set(values))
        for e in await doc.query():
            assert await doc.read_to_bytes(e) == values[e.key]
        assert [e.key for e in await doc.query(prefix=b"dir/")] == [b"dir/x"]
        # Same set on both sides: Rust's fingerprint of the whole set equals ours, so a sync is one
        # round trip with no entries (a different fingerprint formula would split down to items).
        await _fingerprints_agree(py, doc, rust)


async def test_irohpy_to_rust_entries_and_content() -> None:
    async with aster_peer() as rust, peers(1) as (py,):
        author = await py.docs.create_author()
        doc = await py.docs.create()
        values = {b"hello": b"from irohpy", b"big": os.urandom(300_000)}
        for k, v in values.items():
            await doc.set(author, k, v)
        rdoc, events = await rust.join_doc_and_subscribe(str(await doc.share(ShareMode.WRITE)))
        assert rdoc.id == str(doc.id)

        async def rust_has_all() -> bool:
            try:  # reading content the Rust node has not downloaded yet is an error there
                return await rdoc.contents(list(values)) == {(str(author), k): v for k, v in values.items()}
            except AsterError:
                return False

        await eventually(rust_has_all)
        assert await rust_rows(rdoc, set(values)) == await py_rows(doc)
        await events.close()


async def test_concurrent_writes_converge_and_deletions_propagate() -> None:
    async with aster_peer() as rust, peers(1) as (py,):
        ra = await rust.create_author()
        pa = await py.docs.create_author()
        doc = await py.docs.create()
        await doc.set(pa, b"shared", b"py first")
        rdoc = await rust_join(rust, str(await doc.share(ShareMode.WRITE)), py)
        keys = {b"shared"} | {b"py/%02d" % i for i in range(20)} | {b"rust/%02d" % i for i in range(20)}
        await converge(doc, rdoc, keys)
        await eventually(lambda: _neighbor(doc, rust))  # live writes travel over gossip
        # Keys are zero-padded: in iroh-docs an entry also removes older entries under its key as a
        # prefix (b"py/1" would remove an older b"py/10"), so the count below depends on no key being
        # a prefix of another.
        # Concurrent writes: the same key (two authors, and one author racing itself across sync),
        # and different keys on both sides.
        await asyncio.gather(
            *(doc.set(pa, b"py/%02d" % i, b"p%d" % i) for i in range(20)),
            *(rdoc.set(ra, b"rust/%02d" % i, b"r%d" % i) for i in range(20)),
            doc.set(pa, b"shared", b"py second"),
            rdoc.set(ra, b"shared", b"rust"),
        )
        await converge(doc, rdoc, keys)
        assert len(await py_rows(doc)) == 42
        # Deletion: irohpy deletes its prefix py/ (Rust cannot delete through aster).
        assert await doc.del_(pa, b"py/") == 20
        await converge(doc, rdoc, keys)
        assert {k for _, k, *_ in await rust_rows(rdoc, keys)} == {b"shared"} | {b"rust/%02d" % i for i in range(20)}


async def _fingerprints_agree(py: DocsPeer, doc: Doc, rust: AsterPeer, max_bytes: int = 400) -> None:
    """One sync moves no entry, in one round trip of whole-set fingerprints (``max_bytes``
    bounds its frames, whose size depends on the keys that bound the ranges)."""
    from irohpy.protocols.docs.net import RemoteAbort
    for _ in range(20):
        before = py.docs.wire.sent + py.docs.wire.received
        try:
            outcome = await py.docs.sync_once(doc.id, rust.addr)
        except RemoteAbort:  # Rust is syncing with us right now; try again
            await asyncio.sleep(0.2)
            continue
        moved = py.docs.wire.sent + py.docs.wire.received - before
        assert (outcome.num_sent, outcome.num_recv) == (0, 0)
        assert moved < max_bytes, moved
        return
    raise AssertionError("Rust stayed busy")


async def _neighbor(doc: Doc, rust: AsterPeer) -> bool:
    return rust.id in doc.neighbors


async def _same(doc: Doc, rdoc: RustDoc, keys: set[bytes]) -> bool:
    return await py_rows(doc) == await rust_rows(rdoc, keys)


async def converge(doc: Doc, rdoc: RustDoc, keys: set[bytes], timeout: float = 60.0) -> None:
    try:
        await eventually(lambda: _same(doc, rdoc, keys), timeout)
    except TimeoutError:
        ours, theirs = set(await py_rows(doc)), set(await rust_rows(rdoc, keys))
        raise AssertionError(f"no convergence: only irohpy {sorted(ours - theirs)}, only Rust {sorted(theirs - ours)}") from None


async def test_download_policy_is_honoured() -> None:
    async with aster_peer() as rust, peers(1) as (py,):
        author = await rust.create_author()
        rdoc = await rust.create_doc()
        await rdoc.set(author, b"img/a", b"picture")
        await rdoc.set(author, b"txt/b", b"text")
        doc = await py.docs.import_(await rdoc.share("read"),
                                    download_policy=DownloadPolicy.nothing_except((FilterKind.PREFIX, b"txt/")))
        await eventually(lambda: _keys(doc, 2))
        txt = await doc.get_exact(_author(author), b"txt/b")
        assert txt is not None
        await eventually(lambda: _readable(doc, b"txt/b"))
        assert not await _readable(doc, b"img/a")


def _author(hex_id: str):  # type: ignore[no-untyped-def]
    from irohpy.protocols.docs import AuthorId
    return AuthorId.parse(hex_id)


async def _keys(doc: Doc, n: int) -> bool:
    return len(await doc.query()) == n


async def _readable(doc: Doc, key: bytes) -> bool:
    from irohpy.errors import IrohError
    (e,) = await doc.query(key=key)
    try:
        await doc.read_to_bytes(e)
    except IrohError:
        return False
    return True


async def test_ten_thousand_entries_both_ways() -> None:
    """10,000 entries Rust -> irohpy, then 10,000 irohpy -> Rust (entries only: download policy off).

    That Rust holds all of irohpy's entries is checked by a second irohpy peer that syncs only with
    the Rust node and must end up with the same full query (aster's prefix query is capped)."""
    n = 10_000
    policy = DownloadPolicy.nothing_except()
    async with aster_peer() as rust, peers(2) as (py, probe):
        ra = await rust.create_author()
        rdoc = await rust.create_doc()
        await rdoc.set_many(ra, [(b"r/%05d" % i, b"v%d" % i) for i in range(n)])
        doc = await py.docs.import_(await rdoc.share("write"), download_policy=policy)
        await eventually(lambda: _keys(doc, n), 300)
        assert {e.key for e in await doc.query()} == {b"r/%05d" % i for i in range(n)}
        sample = {b"r/%05d" % i for i in range(0, n, 997)}
        assert [r for r in await py_rows(doc) if r[1] in sample] == await rust_rows(rdoc, sample)
        await _fingerprints_agree(py, doc, rust)

        pa = await py.docs.create_author()
        doc2 = await py.docs.create()
        for i in range(n):
            await doc2.set(pa, b"p/%05d" % i, b"w%d" % i)
        await rdoc2_sync(rust, py, doc2, policy)
        rdoc2 = RustDoc(rust, str(doc2.id))
        probe_doc = await probe.docs.import_(DocTicket(doc2.id, (rust.addr,)), download_policy=policy)
        await eventually(lambda: _keys(probe_doc, n), 300)
        assert await py_rows(probe_doc) == await py_rows(doc2)
        sample = {b"p/%05d" % i for i in range(0, n, 997)}
        assert [r for r in await py_rows(doc2) if r[1] in sample] == await rust_rows(rdoc2, sample)


async def rdoc2_sync(rust: AsterPeer, py: DocsPeer, doc: Doc, policy: DownloadPolicy) -> None:
    """Rust joins irohpy's document; returns once the Rust side reports the sync finished."""
    del policy
    rdoc, events = await rust.join_doc_and_subscribe(str(await doc.share(ShareMode.WRITE)))
    await rdoc.set_download_policy("nothing_except")
    await events.wait_for(lambda e: e["kind"] == "sync_finished", 300)
    await events.close()


async def test_restarted_irohpy_peer_resumes_with_rust(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from irohpy.base.keys import SecretKey
    from tests.docs_peer import start_peer

    secret = SecretKey.generate()
    async with aster_peer() as rust:
        author = await rust.create_author()
        rdoc = await rust.create_doc()
        await rdoc.set(author, b"before", b"1")
        ticket = await rdoc.share("read")
        py = await start_peer(tmp_path / "py.db", secret)
        try:
            doc = await py.docs.import_(ticket)
            await wait_for(doc, lambda d: has_all_content(d, 1), 60)
        finally:
            await py.close()
        for i in range(10):
            await rdoc.set(author, b"later/%d" % i, b"x%d" % i)
        py = await start_peer(tmp_path / "py.db", secret)
        try:
            doc2 = await py.docs.open(doc.id)
            assert doc2 is not None
            await wait_for(doc2, lambda d: has_all_content(d, 11), 90)
            keys = {b"before"} | {b"later/%d" % i for i in range(10)}
            assert await py_rows(doc2) == await rust_rows(rdoc, keys)
        finally:
            await py.close()


async def test_docs_bench_runs_all_four_directions() -> None:
    """``python -m bench docs`` (the 10,000-entry comparison with Rust to Rust) on a few entries,
    so that the benchmark the docs figures come from keeps running."""
    from bench.docs_sync import run

    n = 30
    results = dict(await run(n))
    assert list(results) == ["Rust -> Rust", "Rust -> irohpy", "irohpy -> irohpy", "irohpy -> Rust"]
    for name, r in results.items():
        # every entry crosses the wire at least as its two signatures
        assert r["seconds"] > 0 and r["udp_bytes"] > n * 128, (name, r)
        if name != "Rust -> Rust":
            assert n * 128 < r["sync_bytes"] < r["udp_bytes"], (name, r)
    # One reconciliation of the same set: a Rust joiner and an irohpy joiner move the same frames,
    # give or take the empty re-sync (one round trip of whole-set fingerprints) that may follow once
    # the two are gossip neighbors.
    py_py, py_rust = results["irohpy -> irohpy"]["sync_bytes"], results["irohpy -> Rust"]["sync_bytes"]
    assert abs(py_py - py_rust) <= 1024, results


async def test_rust_stores_and_passes_on_irohpy_deletions() -> None:
    """Rust cannot originate a deletion through aster (it cannot write an empty value), so this shows
    the other half: Rust keeps irohpy's deletion marker and hands it on. Peer C syncs only with Rust
    (the deleting peer has left the document first, so it is nobody's sync or gossip peer) and
    ends with the marker itself, signatures and timestamp as irohpy made it."""
    from irohpy.protocols.docs import InsertRemote, SyncFinished

    policy = DownloadPolicy.nothing_except()
    async with aster_peer() as rust, peers(2) as (a, c):
        pa = await a.docs.create_author()
        doc_a = await a.docs.create()
        await doc_a.set(pa, b"gone", b"soon deleted")
        await doc_a.set(pa, b"stay", b"kept")
        rdoc = await rust_join(rust, str(await doc_a.share(ShareMode.WRITE)), a)
        keys = {b"gone", b"stay"}
        await converge(doc_a, rdoc, keys)
        assert {r[1] for r in await rust_rows(rdoc, keys)} == keys
        assert await doc_a.del_(pa, b"gone") == 1
        marker = await doc_a.get_exact(pa, b"gone", include_empty=True)
        assert marker is not None and marker.is_empty()
        # Rust hides empty entries from queries; "gone" leaves them only when the marker replaced it.
        await converge(doc_a, rdoc, keys)
        assert [r[1] for r in await rust_rows(rdoc, keys)] == [b"stay"]
        await doc_a.leave()

        doc_c = await c.docs.import_namespace(doc_a.id)
        await doc_c.set_download_policy(policy)
        events = doc_c.subscribe()
        await doc_c.start_sync([rust.addr])
        senders, synced = set(), set()
        async with asyncio.timeout(60):
            async for ev in events:
                if isinstance(ev, InsertRemote):
                    senders.add(ev.from_)
                if isinstance(ev, SyncFinished) and ev.error is None:
                    synced.add(ev.peer)
                if synced and await _has_marker(doc_c, pa, marker):
                    break
        events.close()
        assert [e.key for e in await doc_c.query()] == [b"stay"]
        assert await doc_c.query(include_empty=True) == await doc_a.query(include_empty=True)
        assert senders == synced == {rust.id}
        assert a.endpoint.id not in doc_c.neighbors


async def _has_marker(doc: Doc, author, marker) -> bool:  # type: ignore[no-untyped-def]
    return await doc.get_exact(author, b"gone", include_empty=True) == marker


async def test_live_writes_cross_as_gossip_both_ways() -> None:
    """Once the two are gossip neighbors, a write crosses as a gossip ``Op::Put``, not through a
    later sync. Rust -> irohpy: irohpy's gossip handler stored the entry (``gossip_entries`` counts
    only entries a gossiped Put was the first to bring), and no sync with Rust finished meanwhile.
    irohpy -> Rust: Rust reports the insert while no sync byte moved on irohpy's side (Rust has
    no other peer) and Rust finished no sync meanwhile.

    A sync the neighbors started just before a write (the ones their neighbor-up begins) can
    overlap it; such a try shows nothing and the next write is taken, up to a few."""
    from irohpy.protocols.docs import InsertRemote, SyncFinished

    tries = 5
    async with aster_peer() as rust, peers(1) as (py,):
        pa = await py.docs.create_author()
        ra = await rust.create_author()
        doc = await py.docs.create()
        await doc.set(pa, b"start", b"x")
        rdoc, revents = await rust.join_doc_and_subscribe(str(await doc.share(ShareMode.WRITE)))
        await converge(doc, rdoc, {b"start"})
        await revents.wait_for(lambda e: e["kind"] == "neighbor_up", 60)
        await eventually(lambda: _neighbor(doc, rust))
        keys = {b"start"}

        for i in range(tries):  # Rust -> irohpy
            key = b"from-rust/%d" % i
            keys.add(key)
            events = doc.subscribe()
            before = py.docs.gossip_entries
            await rdoc.set(ra, key, b"live")
            seen = []
            async with asyncio.timeout(60):
                async for ev in events:
                    seen.append(ev)
                    if isinstance(ev, InsertRemote) and ev.entry.key == key:
                        break
            events.close()
            assert seen[-1].from_ == rust.id
            assert py.docs.gossip_entries == before + 1, seen
            if not any(isinstance(e, SyncFinished) for e in seen):
                break
        else:
            raise AssertionError(f"a sync with Rust overlapped each of {tries} writes")

        revents.drain()
        for i in range(tries):  # irohpy -> Rust
            key = b"from-py/%d" % i
            keys.add(key)
            wire = (py.docs.wire.sent, py.docs.wire.received)
            await doc.set(pa, key, b"live")
            got, between = await revents.wait_for(
                lambda e, key=key: e["kind"] == "insert_remote" and e["entry"]["key"] == b64(key), 60)
            assert got["from"] == str(py.endpoint.id)
            if (py.docs.wire.sent, py.docs.wire.received) == wire and all(e["kind"] != "sync_finished" for e in between):
                break
        else:
            raise AssertionError(f"a sync with Rust overlapped each of {tries} writes")
        await converge(doc, rdoc, keys)
        await revents.close()


async def test_joiner_killed_mid_sync_with_rust_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The crash test of test_docs_sync with a Rust sharer: an irohpy joiner SIGKILLed after the
    first sync message it committed holds only entries that verify and are Rust's (or its own),
    and a new sync from that store ends with exactly Rust's set (whole-set fingerprints agree)."""
    from tests.docs_join_child import join_and_kill, killed_store_entries
    from tests.docs_peer import start_peer

    n, own = 4000, 64
    db = tmp_path / "joiner.db"
    async with aster_peer() as rust:
        ra = await rust.create_author()
        rdoc = await rust.create_doc()
        await rdoc.set_many(ra, [(b"k/%05d" % i, b"v%d" % i) for i in range(n)])
        ticket = DocTicket.parse(await rdoc.share("write"))
        stored = await join_and_kill(db, str(ticket), own)
        assert own < stored < n + own, stored
        kept = killed_store_entries(db, ticket.namespace, own)
        assert own < len(kept) < n + own, len(kept)
        theirs = [e for e in kept if not e.key.startswith(b"own/")]
        assert {str(e.author) for e in theirs} == {ra}
        sample = {e.key for e in theirs[:: max(1, len(theirs) // 20)]}
        assert sorted((str(e.author), e.key, e.content_hash.hex(), e.content_len, e.timestamp) for e in theirs
                      if e.key in sample) == await rust_rows(rdoc, sample)

        py = await start_peer(db)
        try:
            doc = await py.docs.open(ticket.namespace)
            assert doc is not None and len(await doc.query()) == len(kept)
            await doc.start_sync(ticket.nodes)
            await eventually(lambda: _keys(doc, n + own), 120)
            assert {e.key for e in await doc.query()} == {b"k/%05d" % i for i in range(n)} | {b"own/%04d" % i for i in range(own)}
            await _fingerprints_agree(py, doc, rust, 600)
        finally:
            await py.close()
