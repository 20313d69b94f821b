"""An irohpy docs peer for tests: endpoint, blobs, gossip and docs behind one Router, loopback only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from irohpy import RelayMode
from irohpy.base.keys import SecretKey
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import IrohError
from irohpy.protocols.blobs.provider import BlobsProtocol
from irohpy.protocols.blobs.store import FsStore, MemStore, Store
from irohpy.protocols.blobs.wire import ALPN as BLOBS_ALPN
from irohpy.protocols.docs import Doc, Docs, LiveEvent
from irohpy.protocols.gossip import Gossip
from irohpy.protocols.router import Router
from tests.helpers import bind


@dataclass
class DocsPeer:
    endpoint: Endpoint
    blobs: Store
    gossip: Gossip
    docs: Docs
    router: Router

    async def close(self) -> None:
        await self.docs.close()
        await self.router.shutdown()
        await self.blobs.close()


async def start_peer(path: Path | None = None, secret: SecretKey | None = None, **kwargs: object) -> DocsPeer:
    """A peer; with ``path`` its replicas live in ``path`` and its blobs next to it (both survive a restart)."""
    ep = await bind(relay_mode=RelayMode.DISABLED, **({"secret_key": secret} if secret else {}))
    blobs: Store = MemStore() if path is None else FsStore(path.with_suffix(".blobs"))
    gossip = Gossip(ep)
    docs = Docs(ep, blobs, gossip, path=path, **kwargs)  # type: ignore[arg-type]
    router = (Router.builder(ep).accept(docs.alpn, docs).accept(BLOBS_ALPN, BlobsProtocol(blobs))
              .accept(gossip.alpn, gossip).spawn())
    await docs.start()
    return DocsPeer(ep, blobs, gossip, docs, router)


@contextlib.asynccontextmanager
async def peers(n: int, **kwargs: object) -> AsyncIterator[list[DocsPeer]]:
    started = [await start_peer(**kwargs) for _ in range(n)]  # type: ignore[arg-type]
    try:
        yield started
    finally:
        await asyncio.gather(*(p.close() for p in started))


async def wait_for(doc: Doc, predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate(doc)`` (async) after each event until true; the deadline bounds the whole wait."""
    sub = doc.subscribe()
    try:
        async with asyncio.timeout(timeout):
            while not await predicate(doc):
                ev: LiveEvent = await sub.__anext__()
                del ev
    finally:
        sub.close()


async def full_state(doc: Doc) -> list[tuple[bytes, bytes, bytes, int]]:
    return [(e.key, e.author_bytes, e.content_hash, e.timestamp) for e in await doc.query(include_empty=True)]


async def has_all_content(doc: Doc, count: int) -> bool:
    """``count`` live entries, each with its content in the blob store."""
    entries = await doc.query()
    if len(entries) != count:
        return False
    for e in entries:
        try:
            await doc.read_to_bytes(e)
        except IrohError:
            return False
    return True
