"""The provider side of iroh-blobs: a Router protocol that serves Get and GetMany from a store.

One request per bidi stream. The request read is bounded in size (1 MiB) and time, each write
must make progress within a deadline, a connection gets a bounded number of concurrent
requests and all connections together a bounded number of responses in flight, so no peer
can pin memory or tasks. Anything the provider cannot or will not serve
resets the stream with iroh's codes: ``ERR_LIMIT`` for an oversized or too slow request,
``ERR_INTERNAL`` for a malformed one or missing data (what iroh-blobs sends when its store
cannot export a blob). Only complete blobs are served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from irohpy.base.keys import EndpointId
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import BlobRequestError, BlobsError, DecodeError, IrohError, ReadError, StreamStopped
from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.hashseq import HashSeq
from irohpy.protocols.blobs.ranges import ChunkRanges
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

__all__ = ["ALPN", "BlobsProtocol", "ProviderEvent"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
MAX_STREAMS_PER_CONNECTION = 16
MAX_RESPONSES = 64
"""Responses being sent at once across all connections; more wait their turn."""
MAX_HASH_SEQ_SIZE = 32 * 1024 * 1024
"""Hash sequences are read whole to find children; larger ones (a million children) are refused."""
WRITE_BATCH = 256 * 1024


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
    progress (once per 256 KiB written) and end; it must not block.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_event: Callable[[ProviderEvent], None] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        max_responses: int = MAX_RESPONSES,
    ) -> None:
        self.store = store
        self._on_event = on_event
        self._request_timeout = request_timeout
        self._write_timeout = write_timeout
        self._max_streams = max_streams
        self._responses = asyncio.Semaphore(max_responses)
        self.requests_served = 0
        self.requests_refused = 0
        self.bytes_sent = 0

    async def accept(self, conn: Connection) -> None:
        """Serve every stream the peer opens until the connection ends."""
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self._max_streams)
        self._emit(ProviderEvent("connected", conn.remote_id, conn.stable_id, -1, b""))
        try:
            while True:
                await slots.acquire()
                try:
                    send, recv = await conn.accept_bi()
                except IrohError:
                    slots.release()
                    break
                task = asyncio.ensure_future(self._serve_stream(conn, send, recv))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._emit(ProviderEvent("closed", conn.remote_id, conn.stable_id, -1, b""))

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
            request_hash = request.hash if isinstance(request, GetRequest) else b""
            async with self._responses:
                self._emit(event("started"))
                async for n in self._send_response(send, request):
                    sent += n
                    self.bytes_sent += n
                    self._emit(event("progress"))
                await send.finish()
            self.requests_served += 1
            self._emit(event("done"))
        except _Refused as exc:
            self.requests_refused += 1
            log.debug("refusing blobs request from %s: %s", conn.remote_id, exc)
            send.reset(exc.code)
            recv.stop(exc.code)
            self._emit(event("failed", str(exc)))
        except StreamStopped as exc:
            # The requester stopped reading; QUIC already ended our side of the stream.
            log.debug("blobs request from %s stopped by the peer: %s", conn.remote_id, exc)
            self._emit(event("failed", str(exc)))
        except IrohError as exc:
            log.debug("blobs request from %s failed: %s", conn.remote_id, exc)
            send.reset(ERR_INTERNAL)
            self._emit(event("failed", str(exc)))
        except (OSError, ValueError) as exc:
            # The store failed (a file vanished, a disk error): this request ends, the provider does not.
            log.warning("blobs request from %s failed in the store: %s", conn.remote_id, exc)
            send.reset(ERR_INTERNAL)
            self._emit(event("failed", str(exc)))

    async def _read_request(self, recv: RecvStream) -> Request:
        try:
            async with asyncio.timeout(self._request_timeout):
                data = await recv.read_to_end(MAX_MESSAGE_SIZE)
        except TimeoutError:
            raise _Refused(f"no complete request within {self._request_timeout:g} s", ERR_LIMIT) from None
        except ReadError as exc:
            raise _Refused(str(exc), ERR_LIMIT) from None
        try:
            return decode_request(data)
        except BlobRequestError as exc:
            raise _Refused(str(exc), ERR_INTERNAL) from None

    async def _send_response(self, send: SendStream, request: Request):  # type: ignore[no-untyped-def]
        """Yield the byte count of each batch written, so the caller can report progress."""
        if isinstance(request, GetManyRequest):
            for index, ranges in request.ranges.non_empty(len(request.hashes)):
                async for n in self._send_blob(send, request.hashes[index], ranges):
                    yield n
            return
        count = 1
        children: HashSeq | None = None
        if _selects_children(request):
            children = await self._hash_seq(request.hash)
            count = len(children) + 1
        for index, ranges in request.ranges.non_empty(count):
            blob = request.hash if index == 0 else children[index - 1]  # type: ignore[index]
            async for n in self._send_blob(send, blob, ranges):
                yield n

    async def _hash_seq(self, hash_: bytes) -> HashSeq:
        if await self.store.has(hash_) != "complete":
            raise _Refused(f"blob {hash_.hex()} not found", ERR_INTERNAL)
        if await self.store.size(hash_) > MAX_HASH_SEQ_SIZE:
            raise _Refused(f"hash sequence {hash_.hex()} is too large to serve", ERR_LIMIT)
        try:
            return HashSeq.from_bytes(await self.store.get_bytes(hash_))
        except DecodeError:
            raise _Refused(f"blob {hash_.hex()} is not a hash sequence", ERR_INTERNAL) from None

    async def _send_blob(self, send: SendStream, hash_: bytes, ranges: ChunkRanges):  # type: ignore[no-untyped-def]
        if await self.store.has(hash_) != "complete":
            raise _Refused(f"blob {hash_.hex()} not found", ERR_INTERNAL)
        read, outboard = await self.store.reader(hash_)
        batch = bytearray(size_header(outboard.size))
        for piece in bao.encode_ranges(read, outboard, ranges):
            batch += piece
            if len(batch) >= WRITE_BATCH:
                yield await self._write(send, batch)
                batch = bytearray()
        if batch:
            yield await self._write(send, batch)

    async def _write(self, send: SendStream, data: bytearray) -> int:
        try:
            async with asyncio.timeout(self._write_timeout):
                await send.write(data)
        except TimeoutError:
            raise _Refused(f"peer read nothing for {self._write_timeout:g} s", ERR_LIMIT) from None
        return len(data)


def _selects_children(request: GetRequest) -> bool:
    """Whether any blob after the first has chunks selected (so the root is a hash sequence)."""
    entries = request.ranges.entries
    for i, (offset, ranges) in enumerate(entries):
        end = entries[i + 1][0] if i + 1 < len(entries) else None
        if not ranges.is_empty() and (end is None or end > 1):
            return True
    return False

