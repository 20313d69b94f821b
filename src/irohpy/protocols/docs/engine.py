"""``Docs``: replicas, ``/iroh-sync/1`` sync, live sync over gossip and content over blobs.

A document that is *live* (created and shared, or imported from a ticket) joins the gossip topic
whose id is the namespace id. New neighbors trigger a full reconciliation over ``/iroh-sync/1``;
local writes are broadcast as ``Op::Put``; a peer that learned something from a sync tells its
neighbors with ``Op::SyncReport``, and a peer that fetched content says ``Op::ContentReady``.
Content of remote entries is downloaded with blobs when the document's download policy wants it.
Which documents are live, and their recent peers, are in the store, so a restarted ``Docs``
rejoins and resyncs on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId
from irohpy.base.postcard import Reader, Writer
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import DecodeError, DocsError, IrohError, SyncError
from irohpy.protocols.blobs.downloader import Downloader
from irohpy.protocols.blobs.store import Store as BlobStore
from irohpy.protocols.docs.entry import ContentStatus, SignedEntry
from irohpy.protocols.docs.keys import Author, AuthorId, NamespaceId, NamespaceSecret
from irohpy.protocols.docs.net import (
    ERR_SYNC,
    READ_TIMEOUT,
    RemoteAbort,
    SyncRefused,
    WireCount,
    run_alice,
    run_bob,
)
from irohpy.protocols.docs.ranger import SyncOutcome
from irohpy.protocols.docs.replica import (
    DownloadPolicy,
    InsertLocal as _ReplicaInsertLocal,
    InsertRemote as _ReplicaInsertRemote,
    Replica,
    ReplicaEvent,
)
from irohpy.protocols.docs.store import DocStore
from irohpy.protocols.docs.ticket import DocTicket
from irohpy.protocols.docs.wire import (
    ALPN,
    DEFAULT_MAX_FRAME,
    AbortReason,
    Op,
    OpContentReady,
    OpPut,
    OpSyncReport,
    decode_op,
    encode_op,
)
from irohpy.protocols.gossip import Gossip, GossipTopic, NeighborDown, NeighborUp, Received, TopicId

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 15.0
DOWNLOAD_TIMEOUT: Final = 120.0
CLOSE_TIMEOUT: Final = 5.0
MAX_DOWNLOADS: Final = 2
MAX_INCOMING_SYNCS: Final = 32
MAX_SYNCS_PER_PEER: Final = 2
"""Incoming syncs one peer may run at once; more connections from it are closed at once."""
SYNC_RETRIES: Final = 1
SYNC_RETRY_DELAY: Final = 2.0
SESSION_TIMEOUT: Final = 600.0
"""A whole sync exchange must end within this, so no peer can keep a session going forever."""
SUBSCRIBER_CAPACITY: Final = 65536
_DEFAULT_AUTHOR: Final = "default_author"

Entry = SignedEntry


class ShareMode(enum.Enum):
    READ = "read"
    WRITE = "write"


# -- events --------------------------------------------------------------------------


@dataclass(frozen=True)
class InsertLocal:
    entry: SignedEntry


@dataclass(frozen=True)
class InsertRemote:
    from_: EndpointId
    entry: SignedEntry
    content_status: ContentStatus


@dataclass(frozen=True)
class ContentReady:
    hash: bytes


@dataclass(frozen=True)
class PendingContentReady:
    """Everything the last sync asked for has been downloaded (or given up on)."""


@dataclass(frozen=True)
class SyncFinished:
    peer: EndpointId
    sent: int
    received: int
    error: str | None = None


@dataclass(frozen=True)
class Lagged:
    """The subscriber fell ``missed`` events behind and they were dropped."""

    missed: int


LiveEvent = (InsertLocal | InsertRemote | ContentReady | PendingContentReady | SyncFinished | NeighborUp
             | NeighborDown | Lagged)


class _Subscriber:
    def __init__(self, capacity: int) -> None:
        self.queue: deque[LiveEvent] = deque()
        self.capacity = capacity
        self.missed = 0
        self.closed = False
        self.wake = asyncio.Event()

    def push(self, event: LiveEvent) -> None:
        """A full queue drops its oldest event, as iroh's broadcast channel does: the
        subscriber then sees ``Lagged`` first, and the newest events after it."""
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            self.missed += 1
        self.queue.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class DocSubscription:
    """``async for event in doc.subscribe()``; ends when the doc handle or ``Docs`` closes."""

    def __init__(self, doc: Doc, sub: _Subscriber) -> None:
        self._doc = doc
        self._sub = sub

    def __aiter__(self) -> AsyncIterator[LiveEvent]:
        return self

    async def __anext__(self) -> LiveEvent:
        sub = self._sub
        while True:
            if sub.missed:
                missed, sub.missed = sub.missed, 0
                return Lagged(missed)
            if sub.queue:
                return sub.queue.popleft()
            if sub.closed:
                raise StopAsyncIteration
            sub.wake.clear()
            await sub.wake.wait()

    def close(self) -> None:
        self._doc._unsubscribe(self._sub)


# -- live state ------------------------------------------------------------------------


@dataclass(eq=False)
class _Live:
    topic: GossipTopic
    task: asyncio.Task[None]
    neighbors: set[EndpointId] = field(default_factory=set)
    running: dict[EndpointId, str] = field(default_factory=dict)
    resync: set[EndpointId] = field(default_factory=set)


@dataclass(eq=False)
class _Open:
    replica: Replica
    subscribers: list[_Subscriber] = field(default_factory=list)
    live: _Live | None = None
    pending: set[bytes] = field(default_factory=set)


class Docs:
    """Documents over ``endpoint``, with content in ``blobs`` and live sync over ``gossip``.

    Register it on a Router under :data:`ALPN` (and ``BlobsProtocol(blobs)`` and the gossip next to
    it). ``path`` is the SQLite file of the replicas; None keeps them in memory.
    """

    def __init__(self, endpoint: Endpoint, blobs: BlobStore, gossip: Gossip, *,
                 path: str | Path | None = None, max_frame: int = DEFAULT_MAX_FRAME,
                 sync_timeout: float = READ_TIMEOUT, session_timeout: float = SESSION_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.blobs = blobs
        self.gossip = gossip
        self.store = DocStore(path)
        """The SQLite store: replicas, authors, peers, settings."""
        self._max_frame = max_frame
        self._sync_timeout = sync_timeout
        self._session_timeout = session_timeout
        self._open: dict[bytes, _Open] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._addrs: dict[EndpointId, EndpointAddr] = {}
        self._complete: set[bytes] = set()
        self._missing: set[bytes] = set()
        self._providers: dict[bytes, set[EndpointId]] = {}
        self._downloads: dict[bytes, set[bytes]] = {}
        self._incoming = asyncio.Semaphore(MAX_INCOMING_SYNCS)
        # Each fetch dials its providers; blobs providers serve a peer at most 4 connections at once.
        self._download_slots = asyncio.Semaphore(MAX_DOWNLOADS)
        self._per_peer: dict[EndpointId, int] = {}
        self._started = False
        self._closed = False
        self.sync_errors = 0
        """Incoming syncs reset because the peer sent something malformed."""
        self.gossip_entries = 0
        """Entries stored from a neighbor's gossiped ``Op::Put`` (a live write), not from a sync."""
        self.wire = WireCount()
        """Sync bytes moved in all (both directions, framing included): for measurements."""

    @property
    def alpn(self) -> bytes:
        return ALPN

    @functools.cached_property
    def downloader(self) -> Downloader:
        """Made on first download: local-only use (the CLI's offline commands) never needs one."""
        return Downloader(self.endpoint, self.blobs)

    async def __aenter__(self) -> Docs:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        """Load what blobs are complete and rejoin the documents that were live before a restart."""
        if self._started:
            return
        self._started = True
        self._complete = {h for h, status in (await self.blobs.blobs()).items() if status == "complete"}
        for ns in self.store.live_namespaces():
            doc = self._get_open(NamespaceId(ns))
            if doc is None:
                continue
            await self._start_live(doc, [_decode_addr(p, a) for p, a in self.store.peers(ns)])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for doc in self._open.values():
            for sub in doc.subscribers:
                sub.close()
            if doc.live is not None:
                doc.live.task.cancel()
                with contextlib.suppress(Exception):
                    await doc.live.topic.close()
        tasks = list(self._tasks) + [d.live.task for d in self._open.values() if d.live is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()

    shutdown = close

    def _check_open(self) -> None:
        if self._closed:
            raise DocsError("docs is closed")

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- authors -----------------------------------------------------------------------

    async def create_author(self) -> AuthorId:
        self._check_open()
        author = Author.generate()
        self.store.put_author(author)
        return author.id()

    async def import_author(self, author: Author) -> AuthorId:
        self._check_open()
        self.store.put_author(author)
        return author.id()

    async def export_author(self, author: AuthorId) -> Author:
        return self._author(author)

    async def authors(self) -> list[AuthorId]:
        self._check_open()
        return [AuthorId(a) for a in self.store.authors()]

    async def default_author(self) -> AuthorId:
        """An author made once per store and kept, as iroh's default author."""
        self._check_open()
        raw = self.store.get_setting(_DEFAULT_AUTHOR)
        if raw is not None:
            return AuthorId(raw)
        author = await self.create_author()
        self.store.set_setting(_DEFAULT_AUTHOR, author.to_bytes())
        return author

    def _author(self, author: AuthorId | Author) -> Author:
        self._check_open()
        if isinstance(author, Author):
            return author
        found = self.store.author(author.to_bytes())
        if found is None:
            raise DocsError(f"unknown author {author.fmt_short()}")
        return found

    # -- documents ----------------------------------------------------------------------

    async def create(self) -> Doc:
        """A new document with a fresh namespace secret (write capability)."""
        self._check_open()
        secret = NamespaceSecret.generate()
        self.store.put_namespace(secret.id().to_bytes(), secret)
        return self._handle(self._must_open(secret.id()))

    async def import_namespace(self, capability: NamespaceSecret | NamespaceId) -> Doc:
        self._check_open()
        ns = capability.id() if isinstance(capability, NamespaceSecret) else capability
        self.store.put_namespace(ns.to_bytes(), capability if isinstance(capability, NamespaceSecret) else None)
        doc = self._must_open(ns)
        if isinstance(capability, NamespaceSecret) and doc.replica.secret is None:
            doc.replica.upgrade(capability)
        return self._handle(doc)

    async def import_(self, ticket: DocTicket | str, *, download_policy: DownloadPolicy | None = None) -> Doc:
        """Open (or upgrade) the ticket's document and start syncing it with the ticket's peers.

        ``download_policy`` is set before the first sync, so it applies to every entry that arrives.
        """
        if isinstance(ticket, str):
            ticket = DocTicket.parse(ticket)
        doc = await self.import_namespace(ticket.capability)
        if download_policy is not None:
            await doc.set_download_policy(download_policy)
        await doc.start_sync(ticket.nodes)
        return doc

    async def open(self, namespace: NamespaceId) -> Doc | None:
        self._check_open()
        doc = self._get_open(namespace)
        return None if doc is None else self._handle(doc)

    async def list(self) -> list[tuple[NamespaceId, bool]]:
        """Every document in the store: (id, writable)."""
        self._check_open()
        return [(NamespaceId(ns), w) for ns, w in self.store.namespaces()]

    async def drop(self, namespace: NamespaceId) -> None:
        """Forget a document and all its entries."""
        self._check_open()
        doc = self._open.pop(namespace.to_bytes(), None)
        if doc is not None:
            await self._stop_live(doc)
            for sub in doc.subscribers:
                sub.close()
        self.store.drop_namespace(namespace.to_bytes())

    def _get_open(self, namespace: NamespaceId) -> _Open | None:
        ns = namespace.to_bytes()
        doc = self._open.get(ns)
        if doc is not None:
            return doc
        known, secret = self.store.namespace_secret(ns)
        if not known:
            return None
        replica = Replica(namespace, secret, self.store)
        replica.status_of = self._status_of
        doc = self._open[ns] = _Open(replica)
        replica.listeners.append(lambda ev, doc=doc: self._on_replica_event(doc, ev))
        return doc

    def _must_open(self, namespace: NamespaceId) -> _Open:
        doc = self._get_open(namespace)
        if doc is None:
            raise DocsError(f"unknown document {namespace.fmt_short()}")
        return doc

    def _handle(self, doc: _Open) -> Doc:
        return Doc(self, doc)

    def _status_of(self, entry: SignedEntry) -> ContentStatus:
        return ContentStatus.COMPLETE if entry.content_hash in self._complete else ContentStatus.MISSING

    def _emit(self, doc: _Open, event: LiveEvent) -> None:
        for sub in doc.subscribers:
            sub.push(event)

    # -- replica events -------------------------------------------------------------------

    def _on_replica_event(self, doc: _Open, event: ReplicaEvent) -> None:
        if isinstance(event, _ReplicaInsertLocal):
            self._emit(doc, InsertLocal(event.entry))
            if doc.live is not None:
                self._broadcast(doc, OpPut(event.entry), neighbors_only=False)
            return
        assert isinstance(event, _ReplicaInsertRemote)
        peer = EndpointId.from_bytes(event.from_)
        self._emit(doc, InsertRemote(peer, event.entry, event.content_status))
        entry = event.entry
        if event.should_download and not entry.is_empty() and entry.content_hash not in self._complete:
            if event.content_status is ContentStatus.COMPLETE:
                self._start_download(doc, entry.content_hash, peer, only_if_missing=False)
            else:
                self._missing.add(entry.content_hash)

    def _broadcast(self, doc: _Open, op: Op, *, neighbors_only: bool) -> None:
        live = doc.live
        if live is None:
            return
        data = encode_op(op)
        if len(data) > self.gossip.max_message_size:
            return

        async def send() -> None:
            with contextlib.suppress(IrohError):
                if neighbors_only:
                    await live.topic.broadcast_neighbors(data)
                else:
                    await live.topic.broadcast(data)

        self._spawn(send())

    # -- content --------------------------------------------------------------------------

    def _start_download(self, doc: _Open, hash_: bytes, peer: EndpointId, *, only_if_missing: bool) -> None:
        if hash_ in self._complete or self._closed:
            return
        self._providers.setdefault(hash_, set()).add(peer)
        waiting = self._downloads.get(hash_)
        if waiting is not None:
            waiting.add(doc.replica.namespace.to_bytes())
            return
        if only_if_missing and hash_ not in self._missing:
            return
        self._missing.discard(hash_)
        self._downloads[hash_] = {doc.replica.namespace.to_bytes()}
        doc.pending.add(hash_)
        self._spawn(self._download(hash_))

    async def _download(self, hash_: bytes) -> None:
        ok = False
        try:
            providers = [self._addrs.get(p) or self.endpoint.remote_addr(p) or p for p in self._providers.get(hash_, ())]
            async with self._download_slots, asyncio.timeout(DOWNLOAD_TIMEOUT):
                await self.downloader.fetch(hash_, providers)
            ok = True
        except (IrohError, TimeoutError) as exc:
            log.debug("content download of %s failed: %s", hash_.hex()[:10], exc)
            self._missing.add(hash_)
        finally:
            namespaces = self._downloads.pop(hash_, set())
        if ok:
            self._complete.add(hash_)
            self._providers.pop(hash_, None)
        for ns in namespaces:
            doc = self._open.get(ns)
            if doc is None:
                continue
            doc.pending.discard(hash_)
            if ok:
                self._emit(doc, ContentReady(hash_))
                self._broadcast(doc, OpContentReady(hash_), neighbors_only=True)
            if not doc.pending:
                self._emit(doc, PendingContentReady())

    # -- live sync --------------------------------------------------------------------------

    def _remember(self, peers: Iterable[EndpointAddr | EndpointId]) -> list[EndpointId]:
        ids = []
        for p in peers:
            if isinstance(p, EndpointAddr):
                if not p.is_empty():
                    old = self._addrs.get(p.id)
                    self._addrs[p.id] = p if old is None else old.with_addrs(p.addrs)
                ids.append(p.id)
            else:
                ids.append(p)
        return [i for i in ids if i != self.endpoint.id]

    async def _start_live(self, doc: _Open, peers: Iterable[EndpointAddr | EndpointId]) -> None:
        peer_list = list(peers)
        ids = self._remember(peer_list)
        ns = doc.replica.namespace.to_bytes()
        bootstrap = [self._addrs.get(i) or i for i in ids]
        if doc.live is None:
            self.store.set_live(ns, True)
            topic = await self.gossip.subscribe(TopicId.from_bytes(ns), bootstrap)
            task = asyncio.ensure_future(self._gossip_loop(doc, topic))
            doc.live = _Live(topic, task)
        elif bootstrap:
            with contextlib.suppress(IrohError):
                await self.gossip.subscribe(TopicId.from_bytes(ns), bootstrap)
        for peer in ids:
            self._sync_with(doc, peer)

    async def _stop_live(self, doc: _Open) -> None:
        live = doc.live
        if live is None:
            return
        doc.live = None
        self.store.set_live(doc.replica.namespace.to_bytes(), False)
        live.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, IrohError):
            await live.task
        with contextlib.suppress(IrohError):
            await live.topic.close()

    async def _gossip_loop(self, doc: _Open, topic: GossipTopic) -> None:
        async for event in topic:
            live = doc.live
            if live is None:
                return
            if isinstance(event, NeighborUp):
                live.neighbors.add(event.endpoint_id)
                self._emit(doc, event)
                self._sync_with(doc, event.endpoint_id)
            elif isinstance(event, NeighborDown):
                live.neighbors.discard(event.endpoint_id)
                self._emit(doc, event)
            elif isinstance(event, Received):
                try:
                    op = decode_op(event.content)
                except SyncError as exc:
                    log.debug("ignoring docs gossip from %s: %s", event.delivered_from.fmt_short(), exc)
                    continue
                self._on_op(doc, event.delivered_from, op)

    def _on_op(self, doc: _Open, peer: EndpointId, op: Op) -> None:
        replica = doc.replica
        if isinstance(op, OpPut):
            try:
                if replica.insert_remote(op.entry, peer.to_bytes(), ContentStatus.COMPLETE):
                    self.gossip_entries += 1
            except DocsError as exc:
                log.warning("storing a gossiped entry failed: %s", exc)
        elif isinstance(op, OpContentReady):
            self._start_download(doc, op.hash, peer, only_if_missing=True)
        elif op.namespace == replica.namespace.to_bytes() and replica.has_news_for_us(op.heads):
            self._sync_with(doc, peer)

    def _sync_with(self, doc: _Open, peer: EndpointId) -> None:
        live = doc.live
        if live is None or self._closed or peer == self.endpoint.id:
            return
        if peer in live.running:
            live.resync.add(peer)
            return
        live.running[peer] = "connect"
        self._spawn(self._connect_and_sync(doc, live, peer))

    async def _connect_and_sync(self, doc: _Open, live: _Live, peer: EndpointId, attempt: int = 0) -> None:
        outcome: SyncOutcome | None = None
        error: str | None = None
        aborted = False
        refused = False
        try:
            outcome = await self.sync_once(doc.replica.namespace, self._addrs.get(peer) or self.endpoint.remote_addr(peer) or peer)
        except RemoteAbort as exc:
            aborted = exc.reason is AbortReason.ALREADY_SYNCING
            refused = True
            error = str(exc)
        except (IrohError, TimeoutError, OSError) as exc:
            log.debug("sync with %s failed", peer.fmt_short(), exc_info=True)
            error = str(exc) or type(exc).__name__
        finally:
            if live.running.get(peer) == "connect":
                del live.running[peer]
        if not aborted:
            self._sync_finished(doc, live, peer, outcome, error)
        # A neighbor we failed to reach (a timeout on a busy machine, a lost connection) gets one
        # more try: live writes that crossed the failed sync are otherwise only healed by the next one.
        if error is not None and not refused and attempt < SYNC_RETRIES and peer in live.neighbors:
            await asyncio.sleep(SYNC_RETRY_DELAY)
            if doc.live is live and peer not in live.running and not self._closed:
                live.running[peer] = "connect"
                await self._connect_and_sync(doc, live, peer, attempt + 1)

    def _sync_finished(self, doc: _Open, live: _Live, peer: EndpointId, outcome: SyncOutcome | None,
                       error: str | None) -> None:
        if outcome is not None:
            ns = doc.replica.namespace.to_bytes()
            self._keep_peer(ns, peer)
            if outcome.num_recv > 0:
                self._broadcast(doc, OpSyncReport(ns, outcome.heads_received), neighbors_only=True)
        self._emit(doc, SyncFinished(peer, outcome.num_sent if outcome else 0,
                                     outcome.num_recv if outcome else 0, error))
        if not doc.pending:
            self._emit(doc, PendingContentReady())
        if peer in live.resync and doc.live is live:
            live.resync.discard(peer)
            self._sync_with(doc, peer)

    def _keep_peer(self, ns: bytes, peer: EndpointId) -> None:
        """Store a peer we reconciled with, and where it was, so a restart syncs with it again."""
        addr = self._addrs.get(peer) or self.endpoint.remote_addr(peer)
        encoded = None
        if addr is not None and not addr.is_empty():
            w = Writer()
            addr.encode_postcard(w)
            encoded = w.finish()
        with contextlib.suppress(DocsError):
            self.store.add_peer(ns, peer.to_bytes(), time.time_ns(), encoded)

    async def sync_once(self, namespace: NamespaceId, peer: EndpointAddr | EndpointId) -> SyncOutcome:
        """One reconciliation of ``namespace`` with ``peer`` as the dialing side (Alice)."""
        doc = self._must_open(namespace)
        peer_id = peer.id if isinstance(peer, EndpointAddr) else peer
        conn = await self.endpoint.connect(peer, ALPN, timeout=CONNECT_TIMEOUT)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                send, recv = await conn.open_bi()
            try:
                async with asyncio.timeout(self._session_timeout):
                    outcome = await run_alice(send, recv, doc.replica, peer_id.to_bytes(), timeout=self._sync_timeout,
                                              max_frame=self._max_frame, count=self.wire)
            except (SyncError, TimeoutError):
                await _reset(conn, send, recv)
                raise
            await send.finish()
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await recv.read_to_end(0)
        finally:
            conn.close(0, b"")
        return outcome

    # -- accepting -------------------------------------------------------------------------

    def _accept_namespace(self, peer: EndpointId, namespace: bytes) -> Replica | AbortReason:
        if self._closed:
            return AbortReason.INTERNAL_SERVER_ERROR
        doc = self._open.get(namespace)
        if doc is None or doc.live is None:
            return AbortReason.NOT_FOUND
        live = doc.live
        origin = live.running.get(peer)
        if origin == "accept":
            return AbortReason.ALREADY_SYNCING
        if origin == "connect" and self.endpoint.id.to_bytes() <= peer.to_bytes():
            return AbortReason.ALREADY_SYNCING
        live.running[peer] = "accept"
        return doc.replica

    async def accept(self, conn: Connection) -> None:
        """Router handler for ``/iroh-sync/1``: answer one sync per connection."""
        peer = conn.remote_id
        if peer is None or self._closed or self._per_peer.get(peer, 0) >= MAX_SYNCS_PER_PEER:
            conn.close(0, b"")
            return
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        # Owned like our own tasks, so close() ends it before the store closes under it (the
        # Router cancels handlers only after it has called close()).
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._accept(conn, peer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            left = self._per_peer.pop(peer) - 1
            if left:
                self._per_peer[peer] = left

    async def _accept(self, conn: Connection, peer: EndpointId) -> None:
        async with self._incoming:
            try:
                async with asyncio.timeout(self._sync_timeout):
                    send, recv = await conn.accept_bi()
            except (IrohError, TimeoutError):
                conn.close(0, b"")
                return
            accepted: list[Replica] = []
            outcome: SyncOutcome | None = None
            error: str | None = None
            try:
                async with asyncio.timeout(self._session_timeout):
                    _replica, outcome = await run_bob(
                        send, recv, lambda ns: self._accept_namespace(peer, ns), peer.to_bytes(),
                        timeout=self._sync_timeout, max_frame=self._max_frame, count=self.wire,
                        on_namespace=accepted.append)
                # Kept now, not after the dialer's close: a docs closed meanwhile (its store with
                # it) would forget the peer, and a restart would have nobody to sync with.
                for replica in accepted:
                    self._keep_peer(replica.namespace.to_bytes(), peer)
                await send.finish()
                with contextlib.suppress(IrohError, TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await recv.read_to_end(0)
                        await conn.closed()
            except SyncRefused:
                with contextlib.suppress(IrohError, TimeoutError):
                    await send.finish()
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await conn.closed()
                return
            except SyncError as exc:
                log.info("malformed sync from %s: %s", peer.fmt_short(), exc)
                error = str(exc)
                self.sync_errors += 1
                await _reset(conn, send, recv)
            except (IrohError, TimeoutError) as exc:
                log.debug("sync from %s failed", peer.fmt_short(), exc_info=True)
                error = str(exc) or type(exc).__name__
            finally:
                conn.close(0, b"")
                if accepted:
                    doc = self._open.get(accepted[0].namespace.to_bytes())
                    if doc is not None and doc.live is not None:
                        live = doc.live
                        if live.running.get(peer) == "accept":
                            del live.running[peer]
                        self._sync_finished(doc, live, peer, outcome if error is None else None, error)


async def _reset(conn: Connection, send: SendStream, recv: RecvStream) -> None:
    """Reset a sync stream with ERR_SYNC, and let the reset reach the peer before our caller closes
    the connection (a close that overtakes it is all the peer would see); bounded, like every wait."""
    send.reset(ERR_SYNC)
    recv.stop(ERR_SYNC)
    with contextlib.suppress(IrohError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.closed()


def _decode_addr(peer: bytes, addr: bytes | None) -> EndpointAddr | EndpointId:
    """A stored peer: its last address if one was kept and still parses, else just the id."""
    if addr is not None:
        with contextlib.suppress(DecodeError):
            r = Reader(addr)
            decoded = EndpointAddr.decode_postcard(r)
            r.finish()
            if decoded.id.to_bytes() == peer:
                return decoded
    return EndpointId.from_bytes(peer)


class Doc:
    """A handle to one document; many handles may share it. ``close()`` ends this handle only."""

    def __init__(self, docs: Docs, state: _Open) -> None:
        self._docs = docs
        self._state = state
        self._subs: list[_Subscriber] = []
        self._closed = False

    @property
    def id(self) -> NamespaceId:
        return self._state.replica.namespace

    @property
    def writable(self) -> bool:
        return self._state.replica.writable

    @property
    def neighbors(self) -> frozenset[EndpointId]:
        """Gossip neighbors of this document while it is live: the peers that get its writes at once."""
        live = self._state.live
        return frozenset(live.neighbors) if live is not None else frozenset()

    def __repr__(self) -> str:
        return f"Doc({self.id.fmt_short()})"

    async def __aenter__(self) -> Doc:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _check(self) -> Replica:
        if self._closed:
            raise DocsError("doc handle is closed")
        self._docs._check_open()
        return self._state.replica

    # -- writes ----------------------------------------------------------------------------

    async def set(self, author: AuthorId | Author, key: bytes, value: bytes) -> bytes:
        """Store ``value`` as a blob and point ``key`` at it; returns the content hash."""
        replica = self._check()
        signer = self._docs._author(author)
        if not value:
            raise ValueError("an entry needs content; use del_ to remove keys")
        digest = await self._docs.blobs.import_bytes(value)
        self._docs._complete.add(digest)
        replica.insert(signer, key, digest, len(value))
        return digest

    async def set_hash(self, author: AuthorId | Author, key: bytes, hash: bytes, size: int) -> None:
        """Point ``key`` at content that is (or will be) in the blob store."""
        self._check().insert(self._docs._author(author), key, hash, size)

    async def del_(self, author: AuthorId | Author, prefix: bytes) -> int:
        """Delete this author's entries whose key starts with ``prefix``; returns how many went."""
        return self._check().delete_prefix(self._docs._author(author), prefix)

    delete = del_

    # -- reads -----------------------------------------------------------------------------

    async def get_exact(self, author: AuthorId, key: bytes, *, include_empty: bool = False) -> SignedEntry | None:
        return self._check().get_exact(author, key, include_empty)

    async def query(self, *, author: AuthorId | None = None, key: bytes | None = None, prefix: bytes | None = None,
                    include_empty: bool = False) -> list[SignedEntry]:
        """Entries by exact key, key prefix and/or author, sorted by (key, author)."""
        return self._check().query(author=author, key=key, prefix=prefix, include_empty=include_empty)

    async def get_one(self, *, author: AuthorId | None = None, key: bytes | None = None,
                      prefix: bytes | None = None) -> SignedEntry | None:
        found = await self.query(author=author, key=key, prefix=prefix)
        return max(found, key=lambda e: e.record) if found else None

    async def read_to_bytes(self, entry: SignedEntry) -> bytes:
        """The content of ``entry`` from the blob store (BlobNotFound if not downloaded yet)."""
        self._check()
        return await self._docs.blobs.get_bytes(entry.content_hash)

    # -- sync --------------------------------------------------------------------------------

    async def share(self, mode: ShareMode = ShareMode.READ, addr: EndpointAddr | None = None) -> DocTicket:
        """A ticket for this document (and start live sync, so the ticket holder finds us)."""
        replica = self._check()
        if mode is ShareMode.WRITE:
            if replica.secret is None:
                raise DocsError("cannot share write access to a read-only document")
            capability: NamespaceSecret | NamespaceId = replica.secret
        else:
            capability = replica.namespace
        await self.start_sync()
        return DocTicket(capability, (addr or self._docs.endpoint.addr(),))

    async def start_sync(self, peers: Iterable[EndpointAddr | EndpointId] = ()) -> None:
        """Go live: join the namespace's gossip topic and sync with ``peers`` (and each new neighbor)."""
        self._check()
        await self._docs._start_live(self._state, peers)

    async def leave(self) -> None:
        """Stop live sync for this document (entries stay in the store)."""
        self._check()
        await self._docs._stop_live(self._state)

    async def set_download_policy(self, policy: DownloadPolicy) -> None:
        self._check().set_download_policy(policy)

    async def get_download_policy(self) -> DownloadPolicy:
        return self._check().download_policy

    def subscribe(self, capacity: int = SUBSCRIBER_CAPACITY) -> DocSubscription:
        """Events of this document from now on: inserts, content ready, sync finished, neighbors."""
        self._check()
        sub = _Subscriber(capacity)
        self._state.subscribers.append(sub)
        self._subs.append(sub)
        return DocSubscription(self, sub)

    def _unsubscribe(self, sub: _Subscriber) -> None:
        sub.close()
        with contextlib.suppress(ValueError):
            self._state.subscribers.remove(sub)
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    async def close(self) -> None:
        """Release this handle: its subscriptions end. The document keeps syncing until ``leave()``."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            self._unsubscribe(sub)
