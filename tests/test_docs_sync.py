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


async def test_subscribe_yields_inserts_content_and_sync_events() -> None:
    from irohpy.protocols.docs import (
        ContentReady,
        ContentStatus,
        InsertLocal,
        InsertRemote,
        Lagged,
        PendingContentReady,
        SyncFinished,
    )

    async with peers(2) as (a, b):
        author = await a.docs.create_author()
        doc_a = await a.docs.create()
        events_a = doc_a.subscribe()
        digest = await doc_a.set(author, b"k", b"value")
        async with asyncio.timeout(10):
            local = await anext(events_a)
        assert isinstance(local, InsertLocal) and local.entry.key == b"k" and local.entry.content_hash == digest
        ticket = await doc_a.share(ShareMode.READ)

        # Subscribed before the first sync, so every event of the join is seen.
        doc_b = await b.docs.import_namespace(ticket.capability)
        events_b = doc_b.subscribe()
        await doc_b.start_sync(ticket.nodes)
        seen = []
        async with asyncio.timeout(30):
            async for ev in events_b:
                seen.append(ev)
                kinds = {type(e) for e in seen}
                if isinstance(ev, PendingContentReady) and {ContentReady, SyncFinished} <= kinds:
                    break
        (remote,) = [e for e in seen if isinstance(e, InsertRemote)]
        assert remote.from_ == a.endpoint.id and remote.entry == local.entry
        assert remote.content_status is ContentStatus.COMPLETE
        assert [e.hash for e in seen if isinstance(e, ContentReady)] == [digest]
        assert seen.index(remote) < [type(e) for e in seen].index(ContentReady)
        finished = [e for e in seen if isinstance(e, SyncFinished)]
        assert finished and all(e.peer == a.endpoint.id and e.error is None for e in finished)
        assert sum(e.received for e in finished) == 1 and sum(e.sent for e in finished) == 0

        # A subscriber that does not keep up is told how many events it missed, then gets the
        # newest: the oldest are dropped, as by iroh's broadcast channel (on a document that is
        # not live, so that no sync event slips in).
        quiet = await a.docs.create()
        slow = quiet.subscribe(capacity=1)
        for i in range(3):
            await quiet.set(author, b"more/%d" % i, b"x")
        async with asyncio.timeout(10):
            got = [await anext(slow), await anext(slow)]
        assert got[0] == Lagged(2)
        assert isinstance(got[1], InsertLocal) and got[1].entry.key == b"more/2"


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


async def test_accepted_sync_peer_survives_a_close_before_the_dialer_hangs_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A peer that synced with us as the dialer is remembered once the reconciliation is done,
    even if we close while its connection is still open (it is closed only after the exchange):
    else the restarted peer has nobody to sync with. A Rust iroh-docs node hangs up later than
    irohpy does, which made this race show up against it."""
    from irohpy.base.keys import SecretKey
    from irohpy.protocols.docs.net import run_alice
    from irohpy.protocols.docs.replica import Replica
    from irohpy.protocols.docs.store import DocStore
    from irohpy.protocols.docs.wire import ALPN
    from tests.helpers import bind

    b = await start_peer(tmp_path / "b.db", SecretKey.generate())
    b_open = True
    try:
        doc_b = await b.docs.create()
        await doc_b.set(await b.docs.create_author(), b"k", b"v")
        await doc_b.start_sync([])  # live, so b accepts syncs of it, with no peer known yet
        ns = doc_b.id
        dialer_store = DocStore()
        dialer = await bind()
        conn = await dialer.connect(b.endpoint.addr(), ALPN)
        try:
            send, recv = await conn.open_bi()
            outcome = await run_alice(send, recv, Replica(ns, None, dialer_store), b.endpoint.id.to_bytes())
            assert outcome.num_recv == 1
            await send.finish()
            async with asyncio.timeout(10):
                await recv.read_to_end(0)  # b finished its side; it now waits for our close
            await b.close()
            b_open = False
        finally:
            conn.close(0, b"")
            await dialer.close()
            dialer_store.close()
    finally:
        if b_open:
            await b.close()
    store = DocStore(tmp_path / "b.db")
    try:
        assert [p for p, _ in store.peers(ns.to_bytes())] == [dialer.id.to_bytes()]
    finally:
        store.close()


async def test_joiner_killed_mid_sync_keeps_whole_messages_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A joiner SIGKILLed partway through a large join: what its SQLite store holds is whole sync
    messages only (every entry verifies, the sharer's own), and a new join from that store ends
    with exactly the sharer's state.

    The joiner (a child process) has entries of its own, so the join is a reconciliation many
    messages deep: about half the sharer's entries come in one message, then a quarter, and so on,
    each one transaction. The test watches the child's store and kills it at the first message it
    sees committed, while the rest is still to come."""
    from irohpy.protocols.docs import DownloadPolicy, SyncFinished
    from tests.docs_join_child import join_and_kill, killed_store_entries

    n, own = 4000, 64
    db = tmp_path / "joiner.db"
    async with peers(1) as (a,):
        doc_a = await a.docs.create()
        authors = [await a.docs.create_author() for _ in range(4)]
        for i in range(n):
            await doc_a.set_hash(authors[i % 4], b"k/%05d" % i, bytes(32), 1)
        ticket = await doc_a.share(ShareMode.WRITE)
        sharer_entries = {e.id: e for e in await doc_a.query(include_empty=True)}
        stored = await join_and_kill(db, str(ticket), own)
        assert own < stored < n + own, stored

        kept = killed_store_entries(db, doc_a.id, own)
        assert own < len(kept) < n + own, len(kept)
        assert all(e.key.startswith(b"own/") or sharer_entries[e.id] == e for e in kept)

        joiner = await start_peer(db)
        try:
            doc_j = await joiner.docs.open(doc_a.id)
            assert doc_j is not None and len(await doc_j.query()) == len(kept)
            await doc_j.set_download_policy(DownloadPolicy.nothing_except())
            events = doc_j.subscribe()
            await doc_j.start_sync(ticket.nodes)
            # Compared after each finished sync (not after each of the thousands of inserts).
            async with asyncio.timeout(120):
                async for ev in events:
                    if isinstance(ev, SyncFinished) and await full_state(doc_j) == await full_state(doc_a):
                        break
            events.close()
            assert len(await doc_j.query()) == n + own
        finally:
            await joiner.close()


# -- bad input -------------------------------------------------------------------------------


async def _raw_sync(client_ep, server, frames: list[bytes]) -> tuple[bytes, int | None]:  # type: ignore[no-untyped-def]
    """Send raw frames on /iroh-sync/1; return what came back and the reset code (if reset)."""
    from irohpy.errors import StreamReset
    from irohpy.protocols.docs.wire import ALPN
    conn = await client_ep.connect(server.endpoint.addr(), ALPN)
    try:
        send, recv = await conn.open_bi()
        for f in frames:
            await send.write_all(f)
        await send.finish()
        got = b""
        try:
            async with asyncio.timeout(20):
                while chunk := await recv.read():
                    got += chunk
        except StreamReset as exc:
            return got, exc.error_code
        return got, None
    finally:
        conn.close(0, b"")


async def test_forged_entries_are_refused_and_never_stored() -> None:
    import blake3

    from irohpy.protocols.docs import Author, NamespaceSecret, SignedEntry
    from irohpy.protocols.docs.entry import ContentStatus, now_micros, signing_payload
    from irohpy.protocols.docs.ranger import DEFAULT_ID, Message, Range, RangeItem
    from irohpy.protocols.docs.wire import Init, OpPut, encode_frame, encode_op
    from irohpy.protocols.gossip import TopicId
    from tests.helpers import bind

    async with peers(1) as (server,):
        doc = await server.docs.create()
        await doc.share(ShareMode.READ)
        ns = doc.id.to_bytes()
        attacker = Author.generate()
        h = blake3.blake3(b"evil").digest()
        # 1. written without the namespace secret: a valid author signature over our namespace's
        #    payload, and a namespace signature made with some other secret
        ts = now_micros()
        payload = signing_payload(ns, attacker.id().to_bytes(), b"no-secret", 4, h, ts)
        no_secret = SignedEntry(ns, attacker.id().to_bytes(), b"no-secret", 4, h, ts, attacker.sign(payload).to_bytes(),
                                NamespaceSecret.generate().sign(payload).to_bytes())
        # 2. a correct entry with its author signature broken
        secret = server.docs.store.namespace_secret(ns)[1]
        assert secret is not None
        good = SignedEntry.sign(secret, attacker, b"bad-sig", h, 4, now_micros())
        sig = bytearray(good.author_signature)
        sig[0] ^= 0x80
        bad_sig = SignedEntry(*[getattr(good, f) for f in SignedEntry.__slots__[:6]], bytes(sig),  # type: ignore[attr-defined]
                              good.namespace_signature)
        values = ((no_secret, ContentStatus.COMPLETE), (bad_sig, ContentStatus.COMPLETE))
        msg = Message((RangeItem(Range(DEFAULT_ID, DEFAULT_ID), values, False),))
        client = await bind()
        try:
            await _raw_sync(client, server, [encode_frame(Init(ns, msg))])
        finally:
            await client.close()
        # 3. the same over gossip
        topic = await server.gossip.subscribe(TopicId.from_bytes(ns))
        del topic
        async with peers(1) as (gossiper,):
            t = await gossiper.gossip.subscribe(TopicId.from_bytes(ns), [server.endpoint.addr()])
            await t.joined(timeout=20)
            for e in (no_secret, bad_sig):
                await t.broadcast(encode_op(OpPut(e)))
            # a valid entry sent after the forged ones proves the forged ones were processed first
            await t.broadcast(encode_op(OpPut(good)))
            await wait_for(doc, lambda d: _has_key(d, b"bad-sig"))
            await t.close()
        keys = {e.key for e in await doc.query(include_empty=True)}
        assert b"no-secret" not in keys
        (stored,) = await doc.query(key=b"bad-sig")
        assert stored.author_signature == good.author_signature
        assert all(e.key != b"no-secret" for e in server.docs.store.load_entries(ns))


async def _has_key(doc, key: bytes) -> bool:  # type: ignore[no-untyped-def]
    return bool(await doc.query(key=key))


async def test_malformed_sync_messages_reset_the_stream_and_the_replica_keeps_serving() -> None:
    from irohpy.protocols.docs.net import ERR_SYNC
    from irohpy.protocols.docs.ranger import DEFAULT_ID, Message, Range, RangeFingerprint
    from irohpy.protocols.docs.wire import Init, encode_frame
    from tests.helpers import bind

    async with peers(2) as (server, good_peer):
        author = await server.docs.create_author()
        doc = await server.docs.create()
        await doc.set(author, b"k", b"v")
        ticket = await doc.share(ShareMode.READ)
        ns = doc.id.to_bytes()
        valid_init = encode_frame(Init(ns, __import__("irohpy.protocols.docs.ranger", fromlist=["x"]).initial_message(
            __import__("irohpy.protocols.docs.ranger", fromlist=["x"]).EntryIndex())))
        whole = RangeFingerprint(Range(DEFAULT_ID, DEFAULT_ID), bytes(32))
        overlapping = encode_frame(Init(ns, Message((whole, whole))))
        bad = [
            b"\x00\x00\x00\x03\x07\x00\x00",                      # unknown message variant
            b"\x00\x00\x00\x05\x01\x01\x00\x00\x00",              # Sync before Init, truncated range
            valid_init[:4] + valid_init[4:40],                    # truncated, then end of stream
            b"\xff\xff\xff\xff",                                  # frame larger than the limit
            valid_init + valid_init,                              # double Init
            overlapping,                                          # the whole set, twice
        ]
        client = await bind()
        try:
            for frames in bad:
                _, code = await _raw_sync(client, server, [frames])
                assert code == ERR_SYNC, frames[:12]
        finally:
            await client.close()
        assert server.docs.sync_errors == len(bad)
        doc_b = await good_peer.docs.import_(ticket)
        await wait_for(doc_b, lambda d: has_all_content(d, 1))


class _BadAnswerer:
    """An ``/iroh-sync/1`` server that answers any Init with ``reply`` and then finishes; it
    records how the dialer ended the stream it was sending (the reset code, or None at a clean end)."""

    def __init__(self) -> None:
        self.reply = b""
        self.ends: asyncio.Queue[int | None] = asyncio.Queue()

    async def accept(self, conn) -> None:  # type: ignore[no-untyped-def]
        from irohpy.errors import IrohError, StreamReset
        try:
            async with asyncio.timeout(20):
                send, recv = await conn.accept_bi()
                await recv.read()
                await send.write_all(self.reply)
                await send.finish()
                try:
                    while await recv.read():
                        pass
                except StreamReset as exc:
                    self.ends.put_nowait(exc.error_code)
                    return
                self.ends.put_nowait(None)
        except (IrohError, TimeoutError):
            self.ends.put_nowait(-1)
        finally:
            conn.close(0, b"")


async def test_malformed_answers_reset_the_dialers_stream_and_it_keeps_syncing() -> None:
    """The dialing side (Alice) meets a peer that answers with garbage: sync_once raises SyncError,
    the stream is reset with ERR_SYNC, and the replica syncs with a good peer afterwards."""
    import pytest

    from irohpy.errors import SyncError
    from irohpy.protocols.docs.net import ERR_SYNC
    from irohpy.protocols.docs.ranger import EntryIndex, initial_message
    from irohpy.protocols.docs.wire import ALPN, Init, encode_frame
    from irohpy.protocols.router import Router
    from tests.helpers import bind

    answerer = _BadAnswerer()
    bad = Router.builder(await bind([ALPN])).accept(ALPN, answerer).spawn()
    async with peers(2) as (a, good):
        doc = await a.docs.create()
        await doc.set(await a.docs.create_author(), b"k", b"v")
        await doc.start_sync([])
        init = encode_frame(Init(doc.id.to_bytes(), initial_message(EntryIndex())))
        replies = [
            b"\x00\x00\x00\x02\x07\x00",  # unknown message variant
            init,                          # an Init from the side that was dialed
            b"\xff\xff\xff\xff",           # a frame larger than the limit
            init[:30],                     # cut short, then the end of the stream
        ]
        try:
            for reply in replies:
                answerer.reply = reply
                with pytest.raises(SyncError):
                    await a.docs.sync_once(doc.id, bad.endpoint.addr())
                async with asyncio.timeout(20):
                    assert await answerer.ends.get() == ERR_SYNC, reply[:8]
        finally:
            await bad.shutdown()
        doc_b = await good.docs.import_(await doc.share(ShareMode.READ))
        await wait_for(doc_b, lambda d: has_all_content(d, 1))
        outcome = await a.docs.sync_once(doc.id, good.endpoint.addr())
        assert (outcome.num_sent, outcome.num_recv) == (0, 0)


async def test_garbage_flood_does_not_starve_a_good_peer() -> None:
    """Clients sending malformed frames in a loop while a well-behaved peer syncs the document."""
    import time

    from irohpy.errors import IrohError
    from tests.helpers import bind

    async with peers(3) as (server, good, good2):
        author = await server.docs.create_author()
        doc = await server.docs.create()
        for i in range(50):
            await doc.set(author, b"k%d" % i, b"v%d" % i)
        ticket = await doc.share(ShareMode.READ)

        start = time.monotonic()
        baseline_doc = await good.docs.import_(ticket)
        await wait_for(baseline_doc, lambda d: has_all_content(d, 50), 60)
        baseline = time.monotonic() - start

        attackers = [await bind() for _ in range(4)]
        sent = 0

        async def flood(ep) -> None:  # type: ignore[no-untyped-def]
            nonlocal sent
            while True:
                try:
                    await _raw_sync(ep, server, [b"\x00\x00\x00\x02\x09\x09"])
                except (IrohError, TimeoutError):
                    pass
                sent += 1

        tasks = [asyncio.ensure_future(flood(ep)) for ep in attackers]
        try:
            start = time.monotonic()
            attacked_doc = await good2.docs.import_(ticket)
            await wait_for(attacked_doc, lambda d: has_all_content(d, 50), 10 * baseline + 30)
            under_attack = time.monotonic() - start
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ep in attackers:
                await ep.close()
        assert sent > 0 and server.docs.sync_errors > 0
        print(f"baseline {baseline:.2f}s, under attack {under_attack:.2f}s, {sent} garbage syncs")


async def test_leave_stops_live_sync_and_close_ends_the_handle() -> None:
    import pytest

    from irohpy.errors import DocsError
    from irohpy.protocols.docs import InsertRemote

    async with peers(2) as (a, b):
        author_a, author_b = await a.docs.create_author(), await b.docs.create_author()
        doc_a = await a.docs.create()
        doc_b = await b.docs.import_(await doc_a.share(ShareMode.WRITE))
        await doc_a.set(author_a, b"one", b"1")
        await wait_for(doc_b, lambda d: has_all_content(d, 1))
        # While live, b's write reaches a; then a leaves and b's next write does not.
        events = doc_a.subscribe()
        await doc_b.set(author_b, b"two", b"2")
        async with asyncio.timeout(30):
            async for ev in events:
                if isinstance(ev, InsertRemote):
                    break
        await doc_a.leave()
        assert a.docs.store.live_namespaces() == []
        await doc_b.set(author_b, b"three", b"3")
        # b syncs with nobody: a's gossip topic is gone and a refuses the namespace (not live).
        with pytest.raises(DocsError):
            await b.docs.sync_once(doc_b.id, a.endpoint.addr())
        assert [e.key for e in await doc_a.query()] == [b"one", b"two"]
        await doc_a.close()
        with pytest.raises(DocsError):
            await doc_a.query()
        again = await a.docs.open(doc_a.id)
        assert again is not None and len(await again.query()) == 2


async def test_close_ends_an_accepted_sync_before_the_store_closes() -> None:
    """A sync being answered when Docs closes is ended first; it never touches a closed store."""
    from irohpy.protocols.docs.wire import ALPN
    from tests.helpers import bind

    async with peers(1) as (server,):
        client = await bind()
        try:
            conn = await client.connect(server.endpoint.addr(), ALPN, timeout=10)
            send, _ = await conn.open_bi()
            await send.write(b"\x00")  # a frame that never completes: the handler waits for the rest
            async with asyncio.timeout(10):
                while not server.docs._per_peer:
                    await asyncio.sleep(0.01)
            await server.docs.close()
            assert not server.docs._per_peer  # the handler is over, not left behind the closed store
        finally:
            await client.close()
