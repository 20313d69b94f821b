"""The provider side of iroh-blobs: a Router protocol that serves Get and GetMany from a store.

One request per bidi stream. The request read is bounded in size (1 MiB), item counts and time;
each write must make progress within a short stall timeout; connections are capped in total
and per peer; a connection gets a bounded number of concurrent requests; and the responses in
flight are bounded in total and per peer, with waiting peers served round robin. So a peer
that never reads, or opens streams as fast as it can, pins little and starves nobody (see
:class:`ProviderLimits`). Long responses yield to the event loop every few milliseconds.
Anything the provider cannot or will not serve
resets the stream with iroh's codes: ``ERR_LIMIT`` for an oversized or too slow request,
``ERR_INTERNAL`` for a malformed one or missing data (what iroh-blobs sends when its store
cannot export a blob). Only complete blobs are served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from irohpy.base.keys import EndpointId
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import BlobRequestError, BlobsError, DecodeError, IrohError, ReadError, StreamStopped
from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.hashseq import HashSeq
from irohpy.protocols.blobs.metrics import BlobsMetrics
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.slots import FairSlots
from irohpy.protocols.blobs.store import Store
from irohpy.protocols.blobs.wire import (
    ALPN,
    ERR_INTERNAL,
    ERR_LIMIT,
    MAX_MESSAGE_SIZE,
    GetManyRequest,
    GetRequest,
    Request,
    decode_request,
    size_header,
)

__all__ = ["ALPN", "BlobsProtocol", "ProviderEvent", "ProviderLimits"]

log = logging.getLogger(__name__)

MAX_HASH_SEQ_SIZE = 32 * 1024 * 1024
"""Hash sequences are read whole to find children; larger ones (a million children) are refused."""
WRITE_BATCH = 64 * 1024
YIELD_EVERY = 0.010
"""A response hands the event loop back at least this often (seconds of CPU)."""
ERR_CONNECTION_LIMIT = ERR_LIMIT


@dataclass(frozen=True)
class ProviderLimits:
    """What one provider will do at once, and for how long it waits on a peer.

    - ``max_connections`` / ``max_connections_per_peer``: connections served at once; more
      are closed at once with ``ERR_LIMIT``. At the total cap, a new connection first takes
      the place of the one idle longest (no request for ``idle_evict_after`` seconds), which
      is closed with ``ERR_LIMIT``: identities are free, so idle connections from many of
      them must not lock honest peers out.
    - ``max_streams_per_connection``: requests one connection has open at once; more wait
      (unaccepted) in QUIC.
    - ``max_streams_per_peer``: responses under way for one peer (EndpointId) over all its
      connections, producing or waiting for the peer to read; more wait their turn. Each
      stream of a peer that never reads still receives its flow-control window (1.25 MB
      from iroh) before it stalls, so this bounds what such a peer pulls per stall period.
    - ``max_responses`` / ``max_responses_per_peer``: responses producing data at once, in
      total and per peer (EndpointId). A response takes a slot per 64 KiB batch and gives
      it back while the peer reads, so busy peers take turns round robin (each gets an
      equal share of our CPU, however many streams it opens) and a stalled requester holds
      none. Producing is CPU work on one thread, so a few slots are enough.
    - ``request_timeout``: time to receive a whole request.
    - ``stall_timeout``: how long one write may wait for the peer to read before the stream
      is reset with ``ERR_LIMIT`` (a requester that never reads holds a slot this long).
    """

    max_connections: int = 128
    max_connections_per_peer: int = 4
    max_streams_per_connection: int = 16
    max_responses: int = 8
    max_responses_per_peer: int = 2
    max_streams_per_peer: int = 8
    request_timeout: float = 10.0
    stall_timeout: float = 5.0
    idle_evict_after: float = 1.0


@dataclass(slots=True)
class _Served:
    """One connection being served: its requests in flight and when the last one ended."""

    peer: EndpointId | None
    requests: int = 0
    idle_since: float = 0.0


@dataclass(frozen=True)
class ProviderEvent:
    """What a request did: ``kind`` is ``started``, ``progress``, ``done`` or ``failed``.

    ``connected`` and ``closed`` (``stream_id`` -1) bracket each connection, as iroh-blobs'
    ClientConnected and ConnectionClosed do.
    """

    kind: str
    remote: EndpointId | None
    connection_id: int
    stream_id: int
    hash: bytes
    bytes_sent: int = 0
    error: str = ""


class _Refused(BlobsError):
    """This request cannot be served; ``code`` is what the stream is reset with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class BlobsProtocol:
    """Serves blobs from ``store`` on ALPN ``/iroh-bytes/4``; register it with a Router.

    ``on_event`` (optional) is called with a :class:`ProviderEvent` as requests start,
    progress (once per 64 KiB written) and end; it must not block.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_event: Callable[[ProviderEvent], None] | None = None,
        limits: ProviderLimits = ProviderLimits(),
        metrics: BlobsMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or BlobsMetrics()
        self._on_event = on_event
        self.limits = limits
        self._responses = FairSlots(limits.max_responses, limits.max_responses_per_peer)
        self._served: dict[Connection, _Served] = {}
        self._peer_streams: dict[EndpointId | None, asyncio.Semaphore] = {}
        self.requests_served = 0
        self.requests_refused = 0
        self.connections_refused = 0
        self.connections_evicted = 0
        self.bytes_sent = 0

    async def accept(self, conn: Connection) -> None:
        """Serve every stream the peer opens until the connection ends."""
        peer = conn.remote_id
        limits = self.limits
        if self._connections_of(peer) >= limits.max_connections_per_peer or (
            len(self._served) >= limits.max_connections and not self._evict_idle()
        ):
            self.connections_refused += 1
            conn.close(ERR_CONNECTION_LIMIT, b"too many connections")
            return
        self._served[conn] = _Served(peer, idle_since=asyncio.get_running_loop().time())
        if peer not in self._peer_streams:
            self._peer_streams[peer] = asyncio.Semaphore(limits.max_streams_per_peer)
        try:
            await self._serve_connection(conn)
        finally:
            self._let_go(conn)

    def _connections_of(self, peer: EndpointId | None) -> int:
        return sum(1 for s in self._served.values() if s.peer == peer)

    def _let_go(self, conn: Connection) -> None:
        """Forget ``conn`` (once: an evicted connection was let go when it was evicted)."""
        served = self._served.pop(conn, None)
        if served is not None and not self._connections_of(served.peer):
            self._peer_streams.pop(served.peer, None)

    def _evict_idle(self) -> bool:
        """Close the connection idle longest, if one is idle long enough; True if one was."""
        now = asyncio.get_running_loop().time()
        idle = [(s.idle_since, c) for c, s in self._served.items() if not s.requests]
        if not idle:
            return False
        since, conn = min(idle, key=lambda item: item[0])
        if now - since < self.limits.idle_evict_after:
            return False
        self._let_go(conn)
        self.connections_evicted += 1
        conn.close(ERR_CONNECTION_LIMIT, b"evicted: idle while the provider is full")
        return True

    async def _serve_connection(self, conn: Connection) -> None:
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.limits.max_streams_per_connection)
        self._emit(ProviderEvent("connected", conn.remote_id, conn.stable_id, -1, b""))
        try:
            while True:
                await slots.acquire()
                try:
                    send, recv = await conn.accept_bi()
                except IrohError:
                    slots.release()
                    break
                served = self._served.get(conn)
                if served is None:  # evicted while this stream was on its way
                    slots.release()
                    send.reset(ERR_CONNECTION_LIMIT)
                    recv.stop(ERR_CONNECTION_LIMIT)
                    break
                served.requests += 1
                task = asyncio.ensure_future(self._serve_stream(conn, send, recv))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _, served=served: self._request_ended(served, slots))
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._emit(ProviderEvent("closed", conn.remote_id, conn.stable_id, -1, b""))

    @staticmethod
    def _request_ended(served: _Served, slots: asyncio.Semaphore) -> None:
        served.requests -= 1
        served.idle_since = asyncio.get_running_loop().time()
        slots.release()

    async def shutdown(self) -> None:
        """Nothing to flush: the router cancels running requests after this."""

    def _emit(self, event: ProviderEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def _serve_stream(self, conn: Connection, send: SendStream, recv: RecvStream) -> None:
        request_hash = b""
        sent = 0

        def event(kind: str, error: str = "") -> ProviderEvent:
            return ProviderEvent(kind, conn.remote_id, conn.stable_id, send.id, request_hash, sent, error)

        try:
            request = await self._read_request(recv)
            await asyncio.sleep(0)  # decoding a large request took a few ms: let others run first
            request_hash = request.hash if isinstance(request, GetRequest) else b""
            turn = _Turn(self._responses, conn.remote_id)
            async with self._peer_streams[conn.remote_id]:
                try:
                    await turn.take()
                    self._emit(event("started"))
                    async for n in self._send_response(send, request, turn):
                        sent += n
                        self.bytes_sent += n
                        self.metrics.bytes_served.inc(n)
                        self._emit(event("progress"))
                finally:
                    turn.give_back()
                await send.finish()
            self.requests_served += 1
            self.metrics.requests.labels("served").inc()
            self._emit(event("done"))
        except _Refused as exc:
            self.requests_refused += 1
            self.metrics.requests.labels("refused").inc()
            log.debug("refusing blobs request from %s: %s", conn.remote_id, exc)
            send.reset(exc.code)
            recv.stop(exc.code)
            self._emit(event("failed", str(exc)))
        except StreamStopped as exc:
            # The requester stopped reading; QUIC already ended our side of the stream.
            log.debug("blobs request from %s stopped by the peer: %s", conn.remote_id, exc)
            self.metrics.requests.labels("failed").inc()
            self._emit(event("failed", str(exc)))
        except IrohError as exc:
            log.debug("blobs request from %s failed: %s", conn.remote_id, exc)
            self.metrics.requests.labels("failed").inc()
            send.reset(ERR_INTERNAL)
            self._emit(event("failed", str(exc)))
        except (OSError, ValueError) as exc:
            # The store failed (a file vanished, a disk error): this request ends, the provider does not.
            log.warning("blobs request from %s failed in the store: %s", conn.remote_id, exc)
            self.metrics.requests.labels("failed").inc()
            send.reset(ERR_INTERNAL)
            self._emit(event("failed", str(exc)))

    async def _read_request(self, recv: RecvStream) -> Request:
        timeout = self.limits.request_timeout
        try:
            async with asyncio.timeout(timeout):
                data = await recv.read_to_end(MAX_MESSAGE_SIZE)
        except TimeoutError:
            raise _Refused(f"no complete request within {timeout:g} s", ERR_LIMIT) from None
        except ReadError as exc:
            raise _Refused(str(exc), ERR_LIMIT) from None
        try:
            return decode_request(data)
        except BlobRequestError as exc:
            raise _Refused(str(exc), ERR_INTERNAL) from None

    async def _send_response(self, send: SendStream, request: Request, turn: _Turn):  # type: ignore[no-untyped-def]
        """Yield the byte count of each batch written, so the caller can report progress."""
        if isinstance(request, GetManyRequest):
            for index, ranges in request.ranges.non_empty(len(request.hashes)):
                async for n in self._send_blob(send, request.hashes[index], ranges, turn):
                    yield n
        else:
            count = 1
            children: HashSeq | None = None
            if _selects_children(request):
                children = await self._hash_seq(request.hash)
                count = len(children) + 1
            for index, ranges in request.ranges.non_empty(count):
                blob = request.hash if index == 0 else children[index - 1]  # type: ignore[index]
                async for n in self._send_blob(send, blob, ranges, turn):
                    yield n
        if turn.batch:
            yield await self._write(send, turn)

    async def _hash_seq(self, hash_: bytes) -> HashSeq:
        if await self.store.has(hash_) != "complete":
            raise _Refused(f"blob {hash_.hex()} not found", ERR_INTERNAL)
        if await self.store.size(hash_) > MAX_HASH_SEQ_SIZE:
            raise _Refused(f"hash sequence {hash_.hex()} is too large to serve", ERR_LIMIT)
        try:
            return HashSeq.from_bytes(await self.store.get_bytes(hash_))
        except DecodeError:
            raise _Refused(f"blob {hash_.hex()} is not a hash sequence", ERR_INTERNAL) from None

    async def _send_blob(self, send: SendStream, hash_: bytes, ranges: ChunkRanges,  # type: ignore[no-untyped-def]
                         turn: _Turn):
        """Append one blob's response to the turn's batch, writing whenever the batch is full."""
        await turn.pace()
        if await self.store.has(hash_) != "complete":
            raise _Refused(f"blob {hash_.hex()} not found", ERR_INTERNAL)
        read, outboard = await self.store.reader(hash_)
        turn.batch += size_header(outboard.size)
        for piece in bao.encode_ranges(read, outboard, ranges):
            turn.batch += piece
            if len(turn.batch) >= WRITE_BATCH:
                yield await self._write(send, turn)
            else:
                await turn.pace()

    async def _write(self, send: SendStream, turn: _Turn) -> int:
        """Write the turn's batch, then wait (without a response slot) until the peer can take more.

        Waiting before producing the next batch, not after, keeps a requester that never
        reads down to what QUIC already holds for it.
        """
        data, turn.batch = turn.batch, bytearray()
        await send.write(data)
        timeout = self.limits.stall_timeout
        turn.give_back()
        try:
            async with asyncio.timeout(timeout):
                await send.ready()
        except TimeoutError:
            raise _Refused(f"peer read nothing for {timeout:g} s", ERR_LIMIT) from None
        await turn.take()
        return len(data)


class _Turn:
    """One response's claim on the shared slots: held while it produces data, given back while
    it waits on the peer, and the event loop handed back every ``YIELD_EVERY`` seconds.
    ``batch`` is the response bytes produced but not yet written."""

    def __init__(self, slots: FairSlots, peer: EndpointId | None) -> None:
        self._slots = slots
        self._peer = peer
        self._held = False
        self._since = time.perf_counter()
        self.batch = bytearray()

    async def take(self) -> None:
        if await self._slots.acquire(self._peer):
            self._since = time.perf_counter()
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots.release(self._peer)

    async def pace(self) -> None:
        if time.perf_counter() - self._since >= YIELD_EVERY:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


def _selects_children(request: GetRequest) -> bool:
    """Whether any blob after the first has chunks selected (so the root is a hash sequence)."""
    entries = request.ranges.entries
    for i, (offset, ranges) in enumerate(entries):
        end = entries[i + 1][0] if i + 1 < len(entries) else None
        if not ranges.is_empty() and (end is None or end > 1):
            return True
    return False

