"""The child process behind ``tests/aster_peer.py``: one Rust iroh node (aster-rpc), JSON lines on stdio.

Standard library and aster's native module only, so it starts fast. The native module is
loaded on its own, without the ``aster`` package: that package's ``__init__`` installs uvloop
as the loop policy and imports its whole RPC framework, none of which this node uses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

LEARN_ALPN = b"irohpy/test/learn-addr"
"""A made-up ALPN: dialing with it teaches the node an address without starting a protocol."""
LINE_LIMIT = 256 * 1024 * 1024
CLOSE_WAIT = 0.5
PARALLEL_LOOKUPS = 32


def _load_aster() -> ModuleType:
    spec = importlib.util.find_spec("aster")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("aster-rpc is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = next(folder.glob("_aster*.so"), None) or next(folder.glob("_aster*.pyd"))
    loader = importlib.machinery.ExtensionFileLoader("aster._aster", str(path))
    module_spec = importlib.util.spec_from_file_location("aster._aster", path, loader=loader)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class _Server:
    def __init__(self, out: Any) -> None:
        self.aster = _load_aster()
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

    async def op_start(self, secret: str | None) -> dict[str, Any]:
        a = self.aster
        cfg = a.EndpointConfig(alpns=[], relay_mode="disabled", bind_addr="127.0.0.1:0",
                               portmapper_config="disabled",
                               secret_key=None if secret is None else bytes.fromhex(secret))
        self.node = await a.IrohNode.memory_with_alpns([], cfg)
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
            # close() sends CONNECTION_CLOSE at once, then waits out QUIC's draining period
            # (about 3 s after a peer left first); the process exits anyway, so cut that short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.node.close(), CLOSE_WAIT)
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

    async def _per_key(self, keys: list[str], lookup: Callable[[bytes], Awaitable[list[Any]]]) -> list[Any]:
        """``lookup`` for every key, a bounded number at a time (each takes about 1 ms)."""
        slots = asyncio.Semaphore(PARALLEL_LOOKUPS)

        async def one(key: str) -> list[Any]:
            async with slots:
                return await lookup(unb64(key))

        return [row for rows in await asyncio.gather(*(one(k) for k in keys)) for row in rows]

    async def op_doc_entries(self, doc: str, keys: list[str]) -> list[dict[str, Any]]:
        handle = self._doc(doc)

        async def lookup(key: bytes) -> list[dict[str, Any]]:
            return [self._row(e) for e in await handle.query_key_exact(key)]

        return await self._per_key(keys, lookup)

    async def op_doc_contents(self, doc: str, keys: list[str]) -> list[list[str]]:
        handle = self._doc(doc)

        async def lookup(key: bytes) -> list[list[str]]:
            rows = []
            for entry in await handle.query_key_exact(key):
                value = bytes(await handle.read_entry_content(entry.content_hash))
                rows.append([entry.author_id, b64(bytes(entry.key)), b64(value)])
            return rows

        return await self._per_key(keys, lookup)

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
    out.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: tokio threads of the native module may still be calling
    # back into Python, which aborts a finalizing interpreter.
    os._exit(0)


if __name__ == "__main__":
    _child_main()
