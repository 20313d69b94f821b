"""A Mainline DHT node over asyncio UDP: the thin I/O layer around the sans-IO core.

It answers other nodes' queries (ping, find_node, get_peers, announce_peer, BEP 44 get/put),
and performs iterative lookups for its own get and put. It has no background tasks: every
query it sends is owned by the call that sent it, has a timeout, and fails with DhtError when
the node is closed. Bootstrap nodes are explicit; none are contacted unless configured.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from typing import Any

from irohpy.base.keys import PublicKey, SecretKey, Signature
from irohpy.errors import BindError, DhtError, IrohError
from irohpy.lookup.dht import krpc
from irohpy.lookup.dht.krpc import (
    METHOD_UNKNOWN,
    PROTOCOL_ERROR,
    ErrorReply,
    NodeInfo,
    Query,
    Response,
)
from irohpy.lookup.dht.lookup import IterativeLookup
from irohpy.lookup.dht.routing import K, RoutingTable, distance
from irohpy.lookup.dht.storage import MutableItem, MutableStore, TokenManager, mutable_target

Address = tuple[str, int]
MAX_PEERS_PER_HASH = 100
MAX_INFO_HASHES = 1000


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.node: DhtNode | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.node is not None:
            self.node._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (e.g. port unreachable) just mean a query will time out."""


class DhtNode:
    """One DHT node. Create with ``await DhtNode.bind(...)``; always ``await node.close()``."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        *,
        node_id: bytes,
        bootstrap: Iterable[Address],
        k: int,
        query_timeout: float,
        lookup_timeout: float,
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self.node_id = node_id
        self.bootstrap_nodes: tuple[Address, ...] = tuple(bootstrap)
        self.query_timeout = query_timeout
        self.lookup_timeout = lookup_timeout
        self.routing = RoutingTable(node_id, k=k)
        self.store = MutableStore()
        self._tokens = TokenManager(self._loop.time())
        self._peers: dict[bytes, dict[Address, float]] = {}
        self._pending: dict[bytes, tuple[asyncio.Future[krpc.Message], Address]] = {}
        self._closed = False
        self.dropped_datagrams = 0
        sockname = transport.get_extra_info("sockname")
        self.address: Address = (sockname[0], sockname[1])

    @classmethod
    async def bind(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bootstrap: Iterable[Address] = (),
        node_id: bytes | None = None,
        k: int = K,
        query_timeout: float = 2.0,
        lookup_timeout: float = 20.0,
    ) -> DhtNode:
        """Bind a UDP socket (IPv4). ``bootstrap`` is empty by default: nothing public is contacted."""
        loop = asyncio.get_running_loop()
        node_id = node_id if node_id is not None else os.urandom(krpc.ID_LENGTH)
        if len(node_id) != krpc.ID_LENGTH:
            raise ValueError("node ids are 20 bytes")
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                _Protocol, local_addr=(host, port), family=socket.AF_INET
            )
        except OSError as exc:
            raise BindError(f"cannot bind DHT socket on {host}:{port}: {exc}") from None
        node = cls(
            transport,
            node_id=node_id,
            bootstrap=bootstrap,
            k=k,
            query_timeout=query_timeout,
            lookup_timeout=lookup_timeout,
        )
        protocol.node = node
        return node

    @property
    def info(self) -> NodeInfo:
        return NodeInfo(self.node_id, *self.address)

    async def close(self) -> None:
        """Fail every outstanding query with DhtError and close the socket."""
        if self._closed:
            return
        self._closed = True
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(DhtError("DHT node closed"))
        self._pending.clear()
        self._transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> DhtNode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- receiving --------------------------------------------------------------

    def _datagram(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        try:
            message = krpc.decode(data)
        except IrohError:
            self.dropped_datagrams += 1
            return
        if isinstance(message, Query):
            self._send(self._answer(message, addr), addr)
            return
        pending = self._pending.get(message.t)
        if pending is None or pending[1] != addr or pending[0].done():
            self.dropped_datagrams += 1
            return
        pending[0].set_result(message)

    def _answer(self, query: Query, addr: Address) -> krpc.Message:
        """The reply to one query; the sender joins our table (it is evidently alive)."""
        now = self._loop.time()
        self.routing.add(NodeInfo(query.node_id, *addr), now)
        me, t = self.node_id, query.t
        if query.method == "ping":
            return Response(t, me)
        if query.method == "find_node":
            assert query.target is not None
            return Response(t, me, nodes=tuple(self.routing.closest(query.target)))
        if query.method in ("get_peers", "get"):
            assert query.target is not None
            nodes = tuple(self.routing.closest(query.target))
            token = self._tokens.issue(addr[0], now)
            if query.method == "get_peers":
                peers = tuple(self._peers.get(query.target, {}))
                return Response(t, me, nodes=nodes, token=token, values=peers)
            item = self.store.get(query.target, now)
            if item is None or (query.seq is not None and item.seq <= query.seq):
                return Response(t, me, nodes=nodes, token=token)
            return Response(
                t, me, nodes=nodes, token=token, k=item.public_key.to_bytes(), seq=item.seq,
                v=item.value, sig=item.signature.to_bytes(),
            )
        if query.method in ("announce_peer", "put"):
            assert query.token is not None
            if not self._tokens.valid(query.token, addr[0], now):
                return ErrorReply(t, PROTOCOL_ERROR, "bad token")
            if query.method == "announce_peer":
                self._announce(query, addr, now)
                return Response(t, me)
            if query.salt is not None:
                return ErrorReply(t, PROTOCOL_ERROR, "salted items are not supported")
            assert query.k is not None and query.seq is not None
            assert query.v is not None and query.sig is not None
            try:
                item = MutableItem.from_wire(query.k, query.seq, query.v, query.sig)
                self.store.put(item, now, cas=query.cas)
            except DhtError as exc:
                return ErrorReply(t, exc.code, str(exc))
            return Response(t, me)
        return ErrorReply(t, METHOD_UNKNOWN, f"method {query.method!r} unknown")

    def _announce(self, query: Query, addr: Address, now: float) -> None:
        assert query.target is not None and query.port is not None
        port = addr[1] if query.implied_port else query.port
        if query.target not in self._peers and len(self._peers) >= MAX_INFO_HASHES:
            return
        peers = self._peers.setdefault(query.target, {})
        if len(peers) >= MAX_PEERS_PER_HASH:
            del peers[min(peers, key=peers.__getitem__)]
        peers[(addr[0], port)] = now

    # -- sending ----------------------------------------------------------------

    def _send(self, message: krpc.Message, addr: Address) -> None:
        if not self._closed:
            self._transport.sendto(krpc.encode(message), addr)

    async def request(
        self, address: Address, method: str, *, timeout: float | None = None, **fields: Any
    ) -> Response:
        """Send one query and wait for its response; DhtError on error reply, timeout or close.

        ``fields`` are :class:`~irohpy.lookup.dht.krpc.Query` fields (target, token, k, ...).
        """
        if self._closed:
            raise DhtError("DHT node closed")
        t = os.urandom(4)
        while t in self._pending:
            t = os.urandom(4)
        query = Query(t, method, self.node_id, **fields)
        future: asyncio.Future[krpc.Message] = self._loop.create_future()
        self._pending[t] = (future, address)
        try:
            self._send(query, address)
            async with asyncio.timeout(timeout if timeout is not None else self.query_timeout):
                reply = await future
        except TimeoutError:
            raise DhtError(f"no answer to {method} from {address[0]}:{address[1]}") from None
        finally:
            self._pending.pop(t, None)
        if isinstance(reply, ErrorReply):
            raise DhtError(f"{method} refused: {reply.message}", code=reply.code)
        assert isinstance(reply, Response)
        self.routing.add(NodeInfo(reply.node_id, *address), self._loop.time())
        return reply

    async def bootstrap(self) -> int:
        """Join the DHT through the configured bootstrap nodes; returns the routing table size."""
        seeds: list[NodeInfo] = []

        async def ask(host: str, port: int) -> None:
            try:
                async with asyncio.timeout(self.query_timeout):
                    infos = await self._loop.getaddrinfo(
                        host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
                    )
                resolved: Address = (infos[0][4][0], infos[0][4][1])
                reply = await self.request(resolved, "find_node", target=self.node_id)
            except (OSError, TimeoutError, IndexError, DhtError):
                return
            seeds.append(NodeInfo(reply.node_id, *resolved))
            seeds.extend(reply.nodes)

        await asyncio.gather(*(ask(h, p) for h, p in self.bootstrap_nodes))
        await self._iterate(self.node_id, "find_node", seeds)
        return len(self.routing)

    async def _seeds(self, target: bytes) -> list[NodeInfo]:
        if not len(self.routing) and self.bootstrap_nodes:
            await self.bootstrap()
        return self.routing.closest(target)

    async def _iterate(
        self, target: bytes, method: str, seeds: Iterable[NodeInfo], public_key: PublicKey | None = None
    ) -> IterativeLookup:
        """Drive one IterativeLookup to completion (or lookup_timeout), owning its queries."""
        lookup = IterativeLookup(
            target, seeds, own_id=self.node_id, k=self.routing.k, timeout=self.query_timeout + 1.0
        )
        inflight: dict[asyncio.Task[Response], NodeInfo] = {}
        try:
            async with asyncio.timeout(self.lookup_timeout):
                while not lookup.done:
                    for node in lookup.next_queries(self._loop.time()):
                        task = self._loop.create_task(self.request(node.address, method, target=target))
                        inflight[task] = node
                    if not inflight:
                        break
                    finished, _ = await asyncio.wait(
                        inflight, timeout=self.query_timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        node = inflight.pop(task)
                        try:
                            reply = task.result()
                        except DhtError:
                            self.routing.mark_failed(node.node_id)
                            lookup.on_failure(node.node_id)
                            continue
                        lookup.on_response(
                            node.node_id, reply.nodes, token=reply.token,
                            item=_item_from(reply, public_key),
                        )
        except TimeoutError:
            pass  # A lookup that cannot finish in time still reports what it found.
        finally:
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
        return lookup

    # -- BEP 44 -----------------------------------------------------------------

    async def put_mutable(self, secret_key: SecretKey, seq: int, value: bytes) -> int:
        """Sign and store (k, seq, v) on the nodes closest to SHA1(k); returns how many took it."""
        return await self.put_item(MutableItem.sign(secret_key, seq, value))

    async def put_item(self, item: MutableItem) -> int:
        """Store a signed item (checked here first) on the k closest nodes (us included if we are
        one of them); returns how many accepted it."""
        item.check()
        lookup = await self._iterate(item.target, "get", await self._seeds(item.target))
        fields = {
            "k": item.public_key.to_bytes(), "seq": item.seq, "v": item.value,
            "sig": item.signature.to_bytes(),
        }
        closest = lookup.closest_responded()
        targets = [n for n in closest if n.node_id in lookup.tokens]
        stored_here = 0
        if len(closest) < self.routing.k or distance(self.node_id, item.target) < distance(
            closest[-1].node_id, item.target
        ):
            # We are among the k closest ourselves, so we are one of the storage nodes.
            try:
                self.store.put(item, self._loop.time())
                stored_here = 1
            except DhtError:
                pass  # Refused like a remote node would refuse it (we hold a newer seq).
        results = await asyncio.gather(
            *(
                self.request(n.address, "put", token=lookup.tokens[n.node_id], **fields)
                for n in targets
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DhtError):
                raise result
        return stored_here + sum(isinstance(r, Response) for r in results)

    async def get_mutable(self, public_key: PublicKey) -> tuple[int, bytes, Signature] | None:
        """The most recent valid item signed by ``public_key``: (seq, value, sig), or None."""
        target = mutable_target(public_key)
        lookup = await self._iterate(target, "get", await self._seeds(target), public_key)
        best = lookup.best_item
        local = self.store.get(target, self._loop.time())
        if local is not None and (best is None or local.seq > best.seq):
            best = local
        return None if best is None else (best.seq, best.value, best.signature)


def _item_from(reply: Response, public_key: PublicKey | None) -> MutableItem | None:
    """The reply's item if it is for ``public_key`` and verifies; forged items are ignored."""
    if public_key is None or reply.k != public_key.to_bytes():
        return None
    if reply.seq is None or reply.v is None or reply.sig is None:
        return None
    try:
        return MutableItem.from_wire(reply.k, reply.seq, reply.v, reply.sig)
    except DhtError:
        return None
