"""A Rust iroh-blobs / iroh-gossip / iroh-docs peer (``aster-rpc``) in a child process.

``aster-rpc==0.1.2`` bundles Rust iroh 0.97, iroh-blobs 0.99, iroh-gossip 0.97 and iroh-docs
0.97. The test process never imports it: importing ``aster`` swaps the asyncio loop policy for
uvloop, and its tokio threads are better kept out of the test's own process. Each
:class:`AsterPeer` is one Rust node in one child process (``tests/aster_node.py``), driven by
JSON lines over its stdin/stdout: a request ``{"id", "op", ...}`` gets ``{"id", "result"}`` or
``{"id", "error", "type"}``; subscriptions push ``{"sub", "event"}`` lines and end with
``{"sub", "end"}``. Bytes travel as base64, hashes and ids as lowercase hex.

The node keeps iroh's default DNS address lookup (aster has no switch for it), so peers start
only in a loopback-only network namespace (``scripts/loopback-only``); :data:`SKIP_REASON` says
why they cannot start here. Relays and port mapping are disabled and the node binds 127.0.0.1.

What aster's API cannot do, and so this peer cannot either:

- delete: ``DocHandle`` has no ``del``/``delete_prefix``, and ``set_bytes`` with an empty value
  is refused by iroh-docs ("Attempted to insert an empty entry"); a Rust peer can only receive
  deletions;
- list a document: every aster query returns at most 3 entries (``QUERY_ENTRY_LIMIT = 3`` in
  aster_transport_core), so :meth:`RustDoc.entries` looks a known key set up key by key;
- import an author or namespace secret, or query by author (filter :meth:`RustDoc.entries`);
- name the sender of a gossip message or a gossip neighbor (events carry only the kind and content);
- leave a gossip topic explicitly (closing the subscription drops the handle, which leaves);
- take an address for an endpoint id directly: :meth:`AsterPeer.learn_addr` dials the address
  once (the handshake fails on a made-up ALPN) so that iroh remembers it, after which
  ``start_sync``, gossip bootstrap and ``download_hash`` can reach that id;
- download a HashSeq from a ticket (aster fails with "encode error" even Rust to Rust): use
  :meth:`AsterPeer.download_collection` or :meth:`AsterPeer.download_hash` with ``"hash_seq"``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId, PublicKey

NODE_SCRIPT = Path(__file__).with_name("aster_node.py")
CALL_TIMEOUT = 60.0
"""Upper bound for one call; generous because the machine is shared and loaded."""
START_TIMEOUT = 30.0
LINE_LIMIT = 256 * 1024 * 1024


def _loopback_only() -> bool:
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


def _skip_reason() -> str | None:
    if importlib.util.find_spec("aster") is None:
        return "aster-rpc (the Rust blobs/gossip/docs reference peer) is not installed"
    if not _loopback_only():
        return ("the aster-rpc reference peer keeps DNS address lookup on, so it runs only in a "
                "loopback-only network namespace (run through `make test` as root, which uses unshare -n)")
    return None


SKIP_REASON = _skip_reason()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class AsterError(Exception):
    """A call failed inside the Rust peer; ``type`` is the Python exception type it raised there."""

    def __init__(self, message: str, type_: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_


# -- test side ---------------------------------------------------------------------------------


class Subscription:
    """Events pushed by the peer for one gossip topic or doc subscription."""

    def __init__(self, peer: AsterPeer, sid: int) -> None:
        self._peer = peer
        self.sid = sid
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.ended: str | None = None

    def _push(self, event: dict[str, Any] | None) -> None:
        self._queue.put_nowait(event)

    async def next(self, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """The next event; raises EOFError once the subscription has ended."""
        async with asyncio.timeout(timeout):
            event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise EOFError(f"subscription ended: {self.ended}")
        return event

    async def wait_for(self, match: Callable[[dict[str, Any]], bool],
                       timeout: float = CALL_TIMEOUT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The first event ``match`` accepts, and every event seen before it."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout=CALL_TIMEOUT)
                if match(event):
                    return event, seen
                seen.append(event)

    async def wait_for_kinds(self, kinds: set[str], timeout: float = CALL_TIMEOUT) -> list[dict[str, Any]]:
        """Every event until each of ``kinds`` has been seen at least once (in any order)."""
        missing = set(kinds)
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while missing:
                event = await self.next(timeout=CALL_TIMEOUT)
                seen.append(event)
                missing.discard(event["kind"])
        return seen

    def drain(self) -> list[dict[str, Any]]:
        """Events already received, without waiting."""
        out = []
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event is None:
                self._queue.put_nowait(None)
                break
            out.append(event)
        return out

    async def close(self) -> None:
        await self._peer.call("unsubscribe", sub=self.sid)


class GossipSub(Subscription):
    """A Rust node's subscription to one gossip topic.

    Events: ``{"kind": "joined"}`` once aster's subscribe returned (it waits for a first
    neighbor), then ``received`` (with ``content`` bytes), ``neighbor_up``, ``neighbor_down``
    and ``lagged``.
    """

    async def joined(self, timeout: float = CALL_TIMEOUT) -> None:
        await self.wait_for(lambda e: e["kind"] == "joined", timeout)

    async def broadcast(self, *messages: bytes) -> None:
        """Broadcast each message in order, back to back inside the Rust peer."""
        await self._peer.call("gossip_broadcast", sub=self.sid, data=[b64(m) for m in messages])

    async def received(self, count: int, timeout: float = CALL_TIMEOUT) -> list[bytes]:
        """The contents of the next ``count`` received messages (other events are skipped)."""
        out: list[bytes] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                event = await self.next(timeout=CALL_TIMEOUT)
                if event["kind"] == "lagged":
                    raise AssertionError("the Rust gossip receiver lagged: messages were dropped")
                if event["kind"] == "received":
                    out.append(event["content"])
        return out


@dataclass(frozen=True)
class DocEntry:
    """One entry as iroh-docs reports it (content hash as hex, as aster gives it)."""

    key: bytes
    author: str
    content_hash: str
    content_len: int
    timestamp: int


class RustDoc:
    """A document replica on a Rust node, named by its namespace id (hex)."""

    def __init__(self, peer: AsterPeer, doc_id: str) -> None:
        self.peer = peer
        self.id = doc_id

    async def set(self, author: str, key: bytes, value: bytes) -> None:
        await self.peer.call("doc_set", doc=self.id, author=author, key=b64(key), value=b64(value))

    async def set_many(self, author: str, items: list[tuple[bytes, bytes]]) -> float:
        """Write every (key, value) in order inside the Rust peer; returns the seconds it took there."""
        result: float = await self.peer.call(
            "doc_set_many", doc=self.id, author=author, items=[[b64(k), b64(v)] for k, v in items])
        return result

    async def get_exact(self, author: str, key: bytes) -> bytes | None:
        value = await self.peer.call("doc_get_exact", doc=self.id, author=author, key=b64(key))
        return None if value is None else unb64(value)

    async def query_prefix(self, prefix: bytes = b"") -> list[DocEntry]:
        """The FIRST THREE entries under ``prefix`` (by key): aster caps every query at 3
        (``QUERY_ENTRY_LIMIT``), so this cannot list a document; use :meth:`entries`."""
        rows = await self.peer.call("doc_query_prefix", doc=self.id, prefix=b64(prefix))
        return [_entry(row) for row in rows]

    async def query_key(self, key: bytes) -> list[DocEntry]:
        """Every author's entry for ``key`` (at most 3 authors, see :meth:`query_prefix`)."""
        rows = await self.peer.call("doc_query_key", doc=self.id, key=b64(key))
        return [_entry(row) for row in rows]

    async def entries(self, keys: list[bytes]) -> list[DocEntry]:
        """Every author's entry for each of ``keys`` (deletions excluded), looked up key by key
        inside the Rust peer: the complete state for a known key set, which is how a test
        compares this replica with another's full query."""
        rows = await self.peer.call("doc_entries", doc=self.id, keys=[b64(k) for k in keys])
        return [_entry(row) for row in rows]

    async def read_content(self, content_hash: str) -> bytes:
        return unb64(await self.peer.call("doc_read_content", doc=self.id, hash=content_hash))

    async def contents(self, keys: list[bytes]) -> dict[tuple[str, bytes], bytes]:
        """{(author, key): content} for each of ``keys``; content not yet downloaded is an error."""
        rows = await self.peer.call("doc_contents", doc=self.id, keys=[b64(k) for k in keys])
        return {(author, unb64(key)): unb64(value) for author, key, value in rows}

    async def share(self, mode: str = "write", *, with_addr: bool = True) -> str:
        """A DocTicket (``read`` or ``write``); ``with_addr`` puts this node's addresses in it."""
        ticket: str = await self.peer.call("doc_share", doc=self.id, mode=mode, with_addr=with_addr)
        return ticket

    async def start_sync(self, peers: list[EndpointAddr | EndpointId]) -> None:
        """Sync with ``peers``; their addresses are taught to the node first (see learn_addr)."""
        ids = []
        for peer in peers:
            if isinstance(peer, EndpointAddr):
                await self.peer.learn_addr(peer)
                ids.append(str(peer.id))
            else:
                ids.append(str(peer))
        await self.peer.call("doc_start_sync", doc=self.id, peers=ids)

    async def subscribe(self) -> Subscription:
        """Live events: ``insert_local`` / ``insert_remote`` (``entry``, ``from``),
        ``content_ready`` (``hash``), ``pending_content_ready``, ``neighbor_up`` /
        ``neighbor_down`` / ``sync_finished`` (``peer``).

        iroh-docs drops live events when a subscriber lags: syncing 10,000 entries Rust to
        Rust delivered ~9,850 ``insert_remote`` (but every ``content_ready``). Count entries
        with :meth:`entries`, not with events."""
        return await self.peer._subscribe("doc_subscribe", Subscription, doc=self.id)

    async def set_download_policy(self, mode: str, prefixes: list[bytes] = ()) -> None:  # type: ignore[assignment]
        await self.peer.call("doc_set_download_policy", doc=self.id, mode=mode,
                             prefixes=[b64(p) for p in prefixes])

    async def get_download_policy(self) -> tuple[str, list[bytes]]:
        mode, prefixes = await self.peer.call("doc_get_download_policy", doc=self.id)
        return mode, [unb64(p) for p in prefixes]

    async def leave(self) -> None:
        await self.peer.call("doc_leave", doc=self.id)


def _entry(row: dict[str, Any]) -> DocEntry:
    return DocEntry(unb64(row["key"]), row["author"], row["hash"], row["len"], row["timestamp"])


class AsterPeer:
    """One Rust node in a child process. Use :func:`aster_peer` (or ``start``/``close``)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subs: dict[int, Subscription] = {}
        self._reader = asyncio.ensure_future(self._read())
        self.id: EndpointId
        self.addr: EndpointAddr
        """Set by :meth:`start`: the node's id and its direct loopback addresses (no relay)."""

    @classmethod
    async def start(cls, *, secret: bytes | None = None) -> AsterPeer:
        """Start an in-memory node; ``secret`` (32 bytes) fixes its id."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(NODE_SCRIPT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT)
        peer = cls(proc)
        try:
            info = await peer.call("start", secret=None if secret is None else secret.hex(), timeout=START_TIMEOUT)
        except BaseException:
            await peer.close()
            raise
        peer.id = PublicKey.parse(info["id"])
        peer.addr = _endpoint_addr(peer.id, info["addrs"])
        return peer

    async def close(self) -> None:
        """Shut the node down and reap the process (killed if it does not exit in time)."""
        if self._proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("shutdown", timeout=10.0)
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 10.0)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        await self._reader

    async def kill(self) -> None:
        """Kill the process at once, as a crash would (what interruption tests want)."""
        if self._proc.returncode is None:
            self._proc.kill()
        await self._proc.wait()
        await self._reader

    # -- transport --

    async def call(self, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        if self._proc.returncode is not None or self._proc.stdin is None or self._reader.done():
            raise AsterError("the peer process has exited", "ProcessExited")
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._proc.stdin.write(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
            await self._proc.stdin.drain()
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(rid, None)

    async def _subscribe(self, op: str, kind: type[Subscription], **args: Any) -> Any:
        self._next_id += 1
        sid = self._next_id
        sub = self._subs[sid] = kind(self, sid)
        try:
            await self.call(op, sub=sid, **args)
        except BaseException:
            self._subs.pop(sid, None)
            raise
        return sub

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                msg = json.loads(line)
                if "sub" in msg:
                    sub = self._subs.get(msg["sub"])
                    if sub is None:
                        continue
                    if "end" in msg:
                        sub.ended = msg["end"]
                        sub._push(None)
                        del self._subs[msg["sub"]]
                    else:
                        event = msg["event"]
                        if "content" in event:
                            event["content"] = unb64(event["content"])
                        sub._push(event)
                    continue
                fut = self._pending.get(msg["id"])
                if fut is None or fut.done():
                    continue
                if "error" in msg:
                    fut.set_exception(AsterError(msg["error"], msg["type"]))
                else:
                    fut.set_result(msg["result"])
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(AsterError("the peer process has exited", "ProcessExited"))
            for sub in self._subs.values():
                sub.ended = "the peer process has exited"
                sub._push(None)
            self._subs.clear()

    # -- endpoint --

    async def learn_addr(self, addr: EndpointAddr) -> None:
        """Make the node remember ``addr`` (see the module docstring)."""
        await self.call("learn_addr", endpoint=str(addr.id), addrs=[str(a) for a in addr.ip_addrs()])

    async def metrics(self) -> dict[str, int]:
        """The endpoint's transport counters (``send_ipv4`` / ``recv_data_ipv4`` are UDP bytes)."""
        result: dict[str, int] = await self.call("metrics")
        return result

    # -- blobs --

    async def add_bytes(self, data: bytes) -> bytes:
        return bytes.fromhex(await self.call("blob_add", data=b64(data)))

    async def add_collection(self, files: list[tuple[str, bytes]]) -> bytes:
        """A sendme-style collection (HashSeq of [meta, *children]); returns its root hash."""
        return bytes.fromhex(await self.call("blob_add_collection", files=[[n, b64(d)] for n, d in files]))

    async def blob_ticket(self, hash_: bytes, *, collection: bool = False) -> str:
        ticket: str = await self.call("blob_ticket", hash=hash_.hex(), collection=collection)
        return ticket

    async def download_ticket(self, ticket: str) -> bytes:
        """Fetch a raw blob from a BlobTicket (which also teaches the node the provider's address)."""
        return unb64(await self.call("blob_download_ticket", ticket=ticket))

    async def download_hash(self, hash_: bytes, provider: EndpointAddr, fmt: str = "raw") -> None:
        await self.learn_addr(provider)
        await self.call("blob_download_hash", hash=hash_.hex(), provider=str(provider.id), format=fmt)

    async def download_collection(self, hash_: bytes, provider: EndpointAddr) -> list[tuple[str, bytes]]:
        await self.learn_addr(provider)
        rows = await self.call("blob_download_collection", hash=hash_.hex(), provider=str(provider.id))
        return [(name, unb64(data)) for name, data in rows]

    async def read_bytes(self, hash_: bytes) -> bytes:
        return unb64(await self.call("blob_read", hash=hash_.hex()))

    async def blob_status(self, hash_: bytes) -> tuple[str, int]:
        status, size = await self.call("blob_status", hash=hash_.hex())
        return status, size

    async def list_collection(self, hash_: bytes) -> list[tuple[str, bytes, int]]:
        rows = await self.call("blob_list_collection", hash=hash_.hex())
        return [(name, bytes.fromhex(h), size) for name, h, size in rows]

    # -- gossip --

    async def gossip_subscribe(self, topic: bytes, bootstrap: list[EndpointAddr | EndpointId] = ()) -> GossipSub:  # type: ignore[assignment]
        """Subscribe in the background (aster's subscribe waits for a first neighbor); see GossipSub."""
        ids = []
        for peer in bootstrap:
            if isinstance(peer, EndpointAddr):
                await self.learn_addr(peer)
                ids.append(str(peer.id))
            else:
                ids.append(str(peer))
        sub: GossipSub = await self._subscribe("gossip_subscribe", GossipSub, topic=topic.hex(), bootstrap=ids)
        return sub

    # -- docs --

    async def create_author(self) -> str:
        author: str = await self.call("author_create")
        return author

    async def create_doc(self) -> RustDoc:
        return RustDoc(self, await self.call("doc_create"))

    async def join_doc(self, ticket: str) -> RustDoc:
        return RustDoc(self, await self.call("doc_join", ticket=ticket))

    async def join_doc_and_subscribe(self, ticket: str) -> tuple[RustDoc, Subscription]:
        """Join and subscribe atomically, so no event of the first sync is missed."""
        self._next_id += 1
        sid = self._next_id
        sub = self._subs[sid] = Subscription(self, sid)
        try:
            doc_id = await self.call("doc_join_subscribe", sub=sid, ticket=ticket)
        except BaseException:
            self._subs.pop(sid, None)
            raise
        return RustDoc(self, doc_id), sub


@dataclass(frozen=True)
class SyncStats:
    """One Rust-to-Rust doc sync: a reference figure for irohpy's own."""

    entries: int
    sync_seconds: float
    """From join until ``sync_finished``."""
    seconds: float
    """From join until ``sync_finished`` and ``pending_content_ready`` (all content fetched)."""
    bytes_to_joiner: int
    """UDP bytes the sharing node sent (both address families)."""
    bytes_from_joiner: int


async def measure_rust_to_rust_sync(items: list[tuple[bytes, bytes]], timeout: float = 600.0) -> SyncStats:
    """Two fresh Rust nodes: one writes ``items`` as one author, the other joins its read
    ticket; timed by the joiner's live events, and checked entry by entry afterwards."""
    async with aster_peer() as sharer, aster_peer() as joiner:
        author = await sharer.create_author()
        doc = await sharer.create_doc()
        await doc.set_many(author, items)
        ticket = await doc.share("read")
        sent_before = _sent(await sharer.metrics())
        recv_before = _sent(await joiner.metrics())
        loop = asyncio.get_running_loop()
        start = loop.time()
        joined, events = await joiner.join_doc_and_subscribe(ticket)
        synced = -1.0
        async with asyncio.timeout(timeout):
            seen: set[str] = set()
            while not {"sync_finished", "pending_content_ready"} <= seen:
                kind = (await events.next(timeout))["kind"]
                seen.add(kind)
                if kind == "sync_finished" and synced < 0:
                    synced = loop.time() - start
        elapsed = loop.time() - start
        to_joiner = _sent(await sharer.metrics()) - sent_before
        from_joiner = _sent(await joiner.metrics()) - recv_before
        await events.close()
        got = await joined.contents([key for key, _ in items])
        if got != {(author, key): value for key, value in items}:
            raise AssertionError(f"the joiner has {len(got)} of {len(items)} entries after the sync")
    return SyncStats(len(items), synced, elapsed, to_joiner, from_joiner)


def _sent(metrics: dict[str, int]) -> int:
    return metrics["send_ipv4"] + metrics["send_ipv6"]


def _endpoint_addr(endpoint_id: EndpointId, addrs: list[str]) -> EndpointAddr:
    addr = EndpointAddr.from_id(endpoint_id)
    for text in addrs:
        addr = addr.with_ip_addr(text)
    return addr


@contextlib.asynccontextmanager
async def aster_peer(*, secret: bytes | None = None) -> AsyncIterator[AsterPeer]:
    """A running Rust node, closed on exit."""
    peer = await AsterPeer.start(secret=secret)
    try:
        yield peer
    finally:
        await peer.close()
