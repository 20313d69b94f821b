"""A Rust iroh-blobs / iroh-gossip / iroh-docs peer (``aster-rpc``) in a child process.

``aster-rpc==0.1.2`` bundles Rust iroh 0.97, iroh-blobs 0.99, iroh-gossip 0.97 and iroh-docs
0.97. The test process never imports it: importing ``aster`` swaps the asyncio loop policy for
uvloop, and its tokio threads are better kept out of the test's own process. Each
:class:`AsterPeer` is one Rust node in one child process (this file run as a script), driven by
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
- import an author or namespace secret, or query by author (filter :meth:`RustDoc.query` instead);
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
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId, PublicKey

LEARN_ALPN = b"irohpy/test/learn-addr"
"""A made-up ALPN: dialing with it teaches a Rust node an address without starting a protocol."""
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

    async def query(self, prefix: bytes = b"") -> list[DocEntry]:
        """Latest entry per (author, key) under ``prefix``, across authors (deletions excluded)."""
        rows = await self.peer.call("doc_query_prefix", doc=self.id, prefix=b64(prefix))
        return [_entry(row) for row in rows]

    async def query_key(self, key: bytes) -> list[DocEntry]:
        rows = await self.peer.call("doc_query_key", doc=self.id, key=b64(key))
        return [_entry(row) for row in rows]

    async def read_content(self, content_hash: str) -> bytes:
        return unb64(await self.peer.call("doc_read_content", doc=self.id, hash=content_hash))

    async def contents(self, prefix: bytes = b"") -> dict[tuple[str, bytes], bytes]:
        """{(author, key): content} of every entry under ``prefix``, read inside the Rust peer."""
        rows = await self.peer.call("doc_contents", doc=self.id, prefix=b64(prefix))
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
        ``neighbor_down`` / ``sync_finished`` (``peer``)."""
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
    async def start(cls, *, data_dir: Path | None = None, secret: bytes | None = None) -> AsterPeer:
        """Start a node: in memory, or persistent in ``data_dir``; ``secret`` fixes its id."""
        env = dict(os.environ, ASTER_NO_UVLOOP="1", RUST_LOG=os.environ.get("ASTER_RUST_LOG", "error"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env, limit=LINE_LIMIT)
        peer = cls(proc)
        try:
            info = await peer.call("start", data_dir=None if data_dir is None else str(data_dir),
                                   secret=None if secret is None else secret.hex(), timeout=START_TIMEOUT)
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


def _endpoint_addr(endpoint_id: EndpointId, addrs: list[str]) -> EndpointAddr:
    addr = EndpointAddr.from_id(endpoint_id)
    for text in addrs:
        addr = addr.with_ip_addr(text)
    return addr


@contextlib.asynccontextmanager
async def aster_peer(*, data_dir: Path | None = None, secret: bytes | None = None) -> AsyncIterator[AsterPeer]:
    """A running Rust node, closed on exit."""
    peer = await AsterPeer.start(data_dir=data_dir, secret=secret)
    try:
        yield peer
    finally:
        await peer.close()


# -- peer side (this file run as a script, in the child process) --------------------------------


class _Server:
    def __init__(self, out: Any) -> None:
        import aster._aster as aster  # noqa: PLC0415 - only ever imported in the child

        self.aster = aster
        self.out = out
        self.node: Any = None
        self.docs: dict[str, Any] = {}
        self.subs: dict[int, asyncio.Task[None]] = {}
        self.gossip: dict[int, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()

    def send(self, msg: dict[str, Any]) -> None:
        self.out.write(json.dumps(msg).encode() + b"\n")
        self.out.flush()

    async def handle(self, msg: dict[str, Any]) -> None:
        rid = msg.pop("id")
        op = msg.pop("op")
        try:
            handler: Callable[..., Awaitable[Any]] = getattr(self, f"op_{op}")
            result = await handler(**msg)
        except Exception as exc:  # every failure goes back to the caller
            self.send({"id": rid, "error": str(exc), "type": type(exc).__name__})
        else:
            self.send({"id": rid, "result": result})

    # -- node --

    async def op_start(self, data_dir: str | None, secret: str | None) -> dict[str, Any]:
        a = self.aster
        cfg = a.EndpointConfig(alpns=[], relay_mode="disabled", bind_addr="127.0.0.1:0",
                               portmapper_config="disabled",
                               secret_key=None if secret is None else bytes.fromhex(secret))
        if data_dir is None:
            self.node = await a.IrohNode.memory_with_alpns([], cfg)
        else:
            self.node = await a.IrohNode.persistent_with_alpns(data_dir, [], cfg)
        self.blobs = a.blobs_client(self.node)
        self.gossip_client = a.gossip_client(self.node)
        self.docs_client = a.docs_client(self.node)
        self.net = a.net_client(self.node)
        info = self.node.node_addr_info().to_dict()
        return {"id": info["endpoint_id"], "addrs": info["direct_addresses"]}

    async def op_shutdown(self) -> None:
        for task in list(self.subs.values()):
            task.cancel()
        self.gossip.clear()
        self.docs.clear()
        if self.node is not None:
            await self.node.close()
        self.done.set()

    async def op_learn_addr(self, endpoint: str, addrs: list[str]) -> None:
        addr = self.aster.NodeAddr(endpoint, None, addrs)
        with contextlib.suppress(Exception):
            conn = await asyncio.wait_for(self.net.connect_node_addr(addr, LEARN_ALPN), 10.0)
            conn.close(0, b"")

    async def op_metrics(self) -> dict[str, int]:
        m = self.net.transport_metrics()
        return {name: getattr(m, name) for name in dir(m) if not name.startswith("_")}

    # -- subscriptions --

    def _pump(self, sid: int, next_event: Callable[[], Awaitable[dict[str, Any] | None]]) -> None:
        async def run() -> None:
            end = "closed"
            try:
                while (event := await next_event()) is not None:
                    self.send({"sub": sid, "event": event})
            except asyncio.CancelledError:
                end = "unsubscribed"
            except Exception as exc:
                end = f"{type(exc).__name__}: {exc}"
            finally:
                self.subs.pop(sid, None)
                self.gossip.pop(sid, None)
                self.send({"sub": sid, "end": end})

        self.subs[sid] = asyncio.ensure_future(run())

    async def op_unsubscribe(self, sub: int) -> None:
        task = self.subs.get(sub)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- blobs --

    async def op_blob_add(self, data: str) -> str:
        digest: str = await self.blobs.add_bytes(unb64(data))
        return digest

    async def op_blob_add_collection(self, files: list[list[str]]) -> str:
        digest: str = await self.blobs.add_collection([(name, unb64(data)) for name, data in files])
        return digest

    async def op_blob_ticket(self, hash: str, collection: bool) -> str:
        if collection:
            return str(self.blobs.create_collection_ticket(hash))
        return str(self.blobs.create_ticket(hash))

    async def op_blob_download_ticket(self, ticket: str) -> str:
        return b64(bytes(await self.blobs.download_blob(ticket)))

    async def op_blob_download_hash(self, hash: str, provider: str, format: str) -> None:
        await self.blobs.download_hash(hash, provider, format)

    async def op_blob_download_collection(self, hash: str, provider: str) -> list[list[str]]:
        rows = await self.blobs.download_collection_hash(hash, provider)
        return [[name, b64(bytes(data))] for name, data in rows]

    async def op_blob_read(self, hash: str) -> str:
        return b64(bytes(await self.blobs.read_to_bytes(hash)))

    async def op_blob_status(self, hash: str) -> list[Any]:
        status = await self.blobs.blob_status(hash)
        return [status.status, status.size]

    async def op_blob_list_collection(self, hash: str) -> list[list[Any]]:
        return [[name, h, size] for name, h, size in await self.blobs.list_collection(hash)]

    # -- gossip --

    async def op_gossip_subscribe(self, sub: int, topic: str, bootstrap: list[str]) -> None:
        async def first() -> dict[str, Any] | None:
            handle = await self.gossip_client.subscribe(bytes.fromhex(topic), bootstrap)
            self.gossip[sub] = handle
            return {"kind": "joined"}

        started = False

        async def next_event() -> dict[str, Any] | None:
            nonlocal started
            if not started:
                started = True
                return await first()
            kind, data = await self.gossip[sub].recv()
            event: dict[str, Any] = {"kind": kind}
            if data is not None:
                event["content"] = b64(bytes(data))
            return event

        self._pump(sub, next_event)

    async def op_gossip_broadcast(self, sub: int, data: list[str]) -> None:
        handle = self.gossip[sub]
        for item in data:
            await handle.broadcast(unb64(item))

    # -- docs --

    def _doc(self, doc: str) -> Any:
        return self.docs[doc]

    async def op_author_create(self) -> str:
        author: str = await self.docs_client.create_author()
        return author

    async def op_doc_create(self) -> str:
        handle = await self.docs_client.create()
        doc_id: str = handle.doc_id()
        self.docs[doc_id] = handle
        return doc_id

    async def op_doc_join(self, ticket: str) -> str:
        handle = await self.docs_client.join(ticket)
        doc_id: str = handle.doc_id()
        self.docs[doc_id] = handle
        return doc_id

    async def op_doc_join_subscribe(self, sub: int, ticket: str) -> str:
        handle, receiver = await self.docs_client.join_and_subscribe(ticket)
        doc_id: str = handle.doc_id()
        self.docs[doc_id] = handle
        self._pump_doc(sub, receiver)
        return doc_id

    async def op_doc_set(self, doc: str, author: str, key: str, value: str) -> None:
        await self._doc(doc).set_bytes(author, unb64(key), unb64(value))

    async def op_doc_set_many(self, doc: str, author: str, items: list[list[str]]) -> float:
        handle = self._doc(doc)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for key, value in items:
            await handle.set_bytes(author, unb64(key), unb64(value))
        return loop.time() - start

    async def op_doc_get_exact(self, doc: str, author: str, key: str) -> str | None:
        value = await self._doc(doc).get_exact(author, unb64(key))
        return None if value is None else b64(bytes(value))

    @staticmethod
    def _row(entry: Any) -> dict[str, Any]:
        return {"key": b64(bytes(entry.key)), "author": entry.author_id, "hash": entry.content_hash,
                "len": entry.content_len, "timestamp": entry.timestamp}

    async def op_doc_query_prefix(self, doc: str, prefix: str) -> list[dict[str, Any]]:
        return [self._row(e) for e in await self._doc(doc).query_key_prefix(unb64(prefix))]

    async def op_doc_query_key(self, doc: str, key: str) -> list[dict[str, Any]]:
        return [self._row(e) for e in await self._doc(doc).query_key_exact(unb64(key))]

    async def op_doc_read_content(self, doc: str, hash: str) -> str:
        return b64(bytes(await self._doc(doc).read_entry_content(hash)))

    async def op_doc_contents(self, doc: str, prefix: str) -> list[list[str]]:
        handle = self._doc(doc)
        rows = []
        for entry in await handle.query_key_prefix(unb64(prefix)):
            value = bytes(await handle.read_entry_content(entry.content_hash))
            rows.append([entry.author_id, b64(bytes(entry.key)), b64(value)])
        return rows

    async def op_doc_share(self, doc: str, mode: str, with_addr: bool) -> str:
        handle = self._doc(doc)
        ticket = await (handle.share_with_addr(mode) if with_addr else handle.share(mode))
        return str(ticket)

    async def op_doc_start_sync(self, doc: str, peers: list[str]) -> None:
        await self._doc(doc).start_sync(peers)

    async def op_doc_leave(self, doc: str) -> None:
        await self._doc(doc).leave()

    async def op_doc_set_download_policy(self, doc: str, mode: str, prefixes: list[str]) -> None:
        await self._doc(doc).set_download_policy(mode, [unb64(p) for p in prefixes])

    async def op_doc_get_download_policy(self, doc: str) -> list[Any]:
        policy = await self._doc(doc).get_download_policy()
        return [policy.mode, [b64(bytes(p)) for p in policy.prefixes]]

    async def op_doc_subscribe(self, sub: int, doc: str) -> None:
        self._pump_doc(sub, await self._doc(doc).subscribe())

    def _pump_doc(self, sub: int, receiver: Any) -> None:
        async def next_event() -> dict[str, Any] | None:
            ev = await receiver.recv()
            if ev is None:
                return None
            event: dict[str, Any] = {"kind": ev.kind}
            if ev.entry is not None:
                event["entry"] = self._row(ev.entry)
            for name, field in (("from", "from_peer"), ("hash", "hash"), ("peer", "peer")):
                value = getattr(ev, field)
                if value is not None:
                    event[name] = value
            return event

        self._pump(sub, next_event)

    # -- main loop --

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        eof = asyncio.ensure_future(reader.readline())
        done = asyncio.ensure_future(self.done.wait())
        while True:
            await asyncio.wait({eof, done}, return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                break
            line = eof.result()
            if not line:
                break
            task = asyncio.ensure_future(self.handle(json.loads(line)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            eof = asyncio.ensure_future(reader.readline())
        eof.cancel()
        if not self.done.is_set():
            await self.op_shutdown()


def _child_main() -> None:
    # The protocol gets its own copy of stdout; fd 1 then points at stderr, so nothing the
    # native code prints can corrupt the JSON lines.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    asyncio.run(_Server(out).serve())


if __name__ == "__main__":
    _child_main()
