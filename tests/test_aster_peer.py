"""The aster-rpc reference peer itself, Rust to Rust: what the interop tests rely on.

Each test starts real Rust nodes in child processes (see ``tests/aster_peer.py``).
"""

from __future__ import annotations

import os

import pytest

from tests.aster_peer import SKIP_REASON, AsterError, aster_peer

pytestmark = [pytest.mark.aster, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


async def test_blob_ticket_and_addresses() -> None:
    async with aster_peer() as a, aster_peer() as b:
        assert a.id != b.id
        assert a.addr.ip_addrs() and all(ip.host.is_loopback for ip in a.addr.ip_addrs())
        data = os.urandom(3000)
        digest = await a.add_bytes(data)
        assert await b.download_ticket(await a.blob_ticket(digest)) == data
        assert await b.blob_status(digest) == ("complete", len(data))


async def test_learn_addr_then_download_by_hash() -> None:
    async with aster_peer() as a, aster_peer() as b:
        files = [("a.txt", b"alpha"), ("dir/b.bin", os.urandom(20_000))]
        root = await a.add_collection(files)
        # By hash the node needs the provider's address first: download_* teach it.
        assert await b.download_collection(root, a.addr) == files
        assert [(n, s) for n, _, s in await b.list_collection(root)] == [(n, len(d)) for n, d in files]


async def test_docs_share_join_and_live_sync() -> None:
    async with aster_peer() as a, aster_peer() as b:
        author_a, author_b = await a.create_author(), await b.create_author()
        doc_a = await a.create_doc()
        await doc_a.set(author_a, b"hello", b"from a")
        doc_b, events = await b.join_doc_and_subscribe(await doc_a.share("write"))
        assert doc_b.id == doc_a.id
        await events.wait_for_kinds({"sync_finished", "content_ready"}, 30)
        assert await doc_b.get_exact(author_a, b"hello") == b"from a"

        live_a = await doc_a.subscribe()
        await doc_b.set(author_b, b"reply", b"from b")
        ev, _ = await live_a.wait_for(lambda e: e["kind"] == "insert_remote", 30)
        assert ev["entry"]["author"] == author_b and ev["from"] == str(b.id)
        await live_a.close()
        rows = {(e.author, e.key) for e in await doc_a.query()}
        assert rows == {(author_a, b"hello"), (author_b, b"reply")}


async def test_empty_value_is_refused_so_rust_cannot_delete() -> None:
    async with aster_peer() as a:
        author = await a.create_author()
        doc = await a.create_doc()
        with pytest.raises(AsterError, match="empty entry"):
            await doc.set(author, b"k", b"")
