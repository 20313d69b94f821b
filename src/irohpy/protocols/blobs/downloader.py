"""Fetch blobs and hash sequences into a store, from one provider or several at once.

Work is planned from what the store still misses (so a restarted download asks only for
unverified chunk groups), cut into units of whole 16 KiB groups, and pulled by each
provider's workers from one queue: a fast provider simply takes more units. When the queue
runs dry, an idle provider re-requests the unverified rest of a unit that a clearly slower
provider is still sending, and whichever finishes first wins. A provider that fails, stalls
or serves data that does not verify (``BaoError``) is dropped, and its unfinished units go
back to the queue. Every byte is verified by :class:`bao.ResponseDecoder` before the store
sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import BaoError, BlobsError, DecodeError, IrohError
from irohpy.protocols.blobs import bao
from irohpy.protocols.blobs.hashseq import HashSeq, check_hash
from irohpy.protocols.blobs.metrics import BlobsMetrics
from irohpy.protocols.blobs.ranges import GROUP_CHUNKS, GROUP_SIZE, ChunkRanges
from irohpy.protocols.blobs.store import Store
from irohpy.protocols.blobs.ticket import BlobFormat
from irohpy.protocols.blobs.wire import ALPN, MAX_GET_MANY_HASHES, ChunkRangesSeq, GetManyRequest

__all__ = [
    "Connected",
    "Done",
    "Download",
    "DownloadEvent",
    "DownloadStats",
    "Downloader",
    "Progress",
    "ProviderDropped",
    "ProviderStats",
    "SizesKnown",
]

log = logging.getLogger(__name__)

UNIT_SIZE = 4 * 1024 * 1024
STALL_TIMEOUT = 15.0
CONNECT_TIMEOUT = 10.0
IN_FLIGHT = 2
PROGRESS_INTERVAL = 0.1
READ_SIZE = 1 << 20
VERIFY_WINDOW = 2 << 20
"""Verify (and store, and report) every 2 MiB: wide enough for numpy, fine enough for progress."""
SLOWER = 2.0
"""End game: re-request a unit when its provider would take this many times longer than us."""

FIRST_GROUP = ChunkRanges.from_range(0, GROUP_CHUNKS)
LAST_CHUNK = ChunkRanges.from_range(1 << 62)
"""A range past any blob's end: a provider answers it with the last chunk, whose proof verifies the size."""
SIZE_PROBE = FIRST_GROUP | LAST_CHUNK
MAX_UNPROVEN = 64 * 1024
"""Verified leaves held back while a blob's size is not yet proven (a size probe needs 17 KiB)."""


# -- events ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderStats:
    """Verified bytes credited to one provider, and its recent speed in bytes per second."""

    provider: EndpointId
    bytes: int
    speed: float
    dropped: str | None = None


@dataclass(frozen=True)
class Connected:
    provider: EndpointId


@dataclass(frozen=True)
class SizesKnown:
    """Every blob's size is known: ``total_bytes`` overall, ``missing_bytes`` this download fetches.

    ``missing_bytes`` counts what the store did not have when the download started (the
    first groups fetched to learn the sizes included), so ``Progress.bytes`` runs up to it.
    """

    blobs: int
    total_bytes: int
    missing_bytes: int


@dataclass(frozen=True)
class Progress:
    bytes: int
    """Verified payload bytes fetched so far in this download."""
    missing_bytes: int
    """What this download fetches in all (as in :class:`SizesKnown`)."""
    chunks: int
    providers: tuple[ProviderStats, ...]


@dataclass(frozen=True)
class ProviderDropped:
    provider: EndpointId
    reason: str


@dataclass(frozen=True)
class DownloadStats:
    hash: bytes
    blobs: int
    total_bytes: int
    bytes_fetched: int
    elapsed: float
    providers: tuple[ProviderStats, ...]

    @property
    def speed(self) -> float:
        return self.bytes_fetched / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Done:
    stats: DownloadStats


DownloadEvent = Connected | SizesKnown | Progress | ProviderDropped | Done


# -- planning --------------------------------------------------------------------


@dataclass(eq=False)
class _Unit:
    """Chunk ranges of one or more blobs, fetched with one GetMany request."""

    items: list[tuple[bytes, ChunkRanges]]
    nbytes: int
    running: list[_Provider] = field(default_factory=list)
    finished: bool = False
    started: float = 0.0


def _proves_size(leaves: Sequence[bao.Leaf], size: int) -> bool:
    """Whether a verified leaf reaches the blob's end: its proof authenticates ``size``."""
    return any(leaf.offset + len(leaf.data) == size for leaf in leaves)


def _range_bytes(ranges: ChunkRanges, size: int) -> int:
    total = 0
    for start, end in ranges.intervals():
        stop = size if end is None else min(size, end * 1024)
        total += max(0, stop - start * 1024)
    return total


def _split(hash_: bytes, missing: ChunkRanges, size: int, unit_groups: int) -> list[tuple[ChunkRanges, int]]:
    """Cut a blob's missing chunk ranges into pieces of at most ``unit_groups`` whole groups."""
    pieces = []
    step = unit_groups * GROUP_CHUNKS
    end_chunk = -(-size // 1024) if size else 1
    for start, end in missing.intervals():
        stop = end_chunk if end is None else min(end, end_chunk)
        for first in range(start, stop, step):
            piece = ChunkRanges.from_range(first, min(first + step, stop))
            pieces.append((piece, _range_bytes(piece, size)))
    return pieces


def plan_units(blobs: Sequence[tuple[bytes, ChunkRanges, int]], unit_size: int) -> list[_Unit]:
    """Units of about ``unit_size`` bytes: big blobs are cut, small ones packed together."""
    unit_groups = max(1, unit_size // GROUP_SIZE)
    units: list[_Unit] = []
    pack: list[tuple[bytes, ChunkRanges]] = []
    pack_bytes = 0
    for hash_, missing, size in blobs:
        for piece, nbytes in _split(hash_, missing, size, unit_groups):
            if nbytes >= unit_size // 2:
                units.append(_Unit([(hash_, piece)], nbytes))
                continue
            pack.append((hash_, piece))
            pack_bytes += nbytes
            if pack_bytes >= unit_size or len(pack) >= 1024:
                units.append(_Unit(pack, pack_bytes))
                pack, pack_bytes = [], 0
    if pack:
        units.append(_Unit(pack, pack_bytes))
    return units


# -- providers -------------------------------------------------------------------


class _Abandoned(Exception):
    """A request given up without blame: its unit was finished by another provider, or its provider dropped."""


@dataclass(eq=False)
class _Provider:
    target: EndpointAddr | EndpointId
    id: EndpointId
    conn: Connection | None = None
    bytes: int = 0
    started: float | None = None
    speed: float = 0.0
    dropped: str | None = None
    last_sample: float = 0.0
    last_credit: float = 0.0
    window: int = 0

    def credit(self, nbytes: int) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = self.last_sample = now
        self.bytes += nbytes
        self.window += nbytes
        self.last_credit = now
        elapsed = now - self.last_sample
        if elapsed >= 0.25:
            rate = self.window / elapsed
            self.speed = rate if not self.speed else (self.speed + rate) / 2
            self.window, self.last_sample = 0, now

    def stats(self) -> ProviderStats:
        return ProviderStats(self.id, self.bytes, self.speed, self.dropped)


def _target_id(target: EndpointAddr | EndpointId) -> EndpointId:
    return target.id if isinstance(target, EndpointAddr) else target


# -- the download ----------------------------------------------------------------


ChildrenCheck = Callable[[list[bytes]], Awaitable[None]]


class Download:
    """One running download: iterate it for events, or ``await download.wait()`` for the stats.

    Use it as an async context manager so that leaving early cancels it and closes its
    connections.
    """

    def __init__(self, downloader: Downloader, hash_: bytes, providers: Sequence[EndpointAddr | EndpointId],
                 fmt: BlobFormat, before_children: ChildrenCheck | None = None) -> None:
        if not providers:
            raise ValueError("a download needs at least one provider")
        self._dl = downloader
        self.hash = check_hash(hash_)
        self.format = BlobFormat(fmt)
        self._providers = [_Provider(p, _target_id(p)) for p in providers]
        self._before_children = before_children
        self._events: deque[DownloadEvent] = deque()
        self._wake = asyncio.Event()
        self._queue: deque[_Unit] = deque()
        self._in_flight: list[_Unit] = []
        self._work = asyncio.Event()
        #: Store writes under way; one may be completing (hashing) a blob, see _store_leaves.
        self._writes: set[asyncio.Future[bool]] = set()
        self._fetched = 0
        self._chunks = 0
        self._missing_bytes = 0
        self._last_progress = 0.0
        self._task: asyncio.Task[DownloadStats] = asyncio.ensure_future(self._run())
        self._task.add_done_callback(lambda _: self._wake.set())

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, IrohError):
            await self._task

    async def wait(self) -> DownloadStats:
        return await asyncio.shield(self._task)

    async def __aiter__(self) -> AsyncIterator[DownloadEvent]:
        while True:
            while self._events:
                event = self._events.popleft()
                yield event
                if isinstance(event, Done):
                    return
            if self._task.done():
                self._task.result()
                return
            self._wake.clear()
            await self._wake.wait()

    # -- events --

    def _emit(self, event: DownloadEvent) -> None:
        if isinstance(event, Progress) and self._events and isinstance(self._events[-1], Progress):
            self._events[-1] = event
        else:
            self._events.append(event)
        self._wake.set()

    def _progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self._emit(Progress(self._fetched, self._missing_bytes, self._chunks,
                                tuple(p.stats() for p in self._providers)))

    def _drop(self, provider: _Provider, reason: str) -> None:
        if provider.dropped is None:
            provider.dropped = reason
            log.info("dropping provider %s: %s", provider.id.fmt_short(), reason)
            self._dl.metrics.providers_dropped.inc()
            self._emit(ProviderDropped(provider.id, reason))
            if provider.conn is not None:
                provider.conn.close(0, b"")
        self._work.set()

    def _alive(self) -> list[_Provider]:
        return [p for p in self._providers if p.dropped is None]

    # -- phases --

    async def _run(self) -> DownloadStats:
        started = time.monotonic()
        store = self._dl.store
        try:
            await self._connect_all()
            hashes = [self.hash]
            if self.format is BlobFormat.HASH_SEQ:
                await self._fetch([self.hash])
                try:
                    hashes += HashSeq.from_bytes(await store.get_bytes(self.hash)).hashes
                except DecodeError as exc:
                    raise BlobsError(f"{self.hash.hex()} is not a hash sequence: {exc}") from None
                if self._before_children is not None:
                    await self._fetch(hashes[1:2])
                    await self._before_children(hashes[1:])
            unique = list(dict.fromkeys(hashes))
            total = await self._fetch(unique, announce=True)
            self._progress(force=True)
            stats = DownloadStats(self.hash, len(unique), total, self._fetched, time.monotonic() - started,
                                  tuple(p.stats() for p in self._providers))
            self._emit(Done(stats))
            self._dl.metrics.downloads_success.inc()
            return stats
        except BaseException:
            self._dl.metrics.downloads_error.inc()
            raise
        finally:
            for provider in self._providers:
                if provider.conn is not None:
                    provider.conn.close(0, b"")
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _fetch(self, hashes: list[bytes], *, announce: bool = False) -> int:
        """Make every blob in ``hashes`` complete; returns their total size."""
        store = self._dl.store
        await self._fetch_sizes(hashes)
        todo: list[tuple[bytes, ChunkRanges, int]] = []
        total = 0
        for h in hashes:
            size = await store.size(h)
            if size is None:
                raise BlobsError(f"the store has no size for {h.hex()} after fetching it")
            total += size
            if await store.has(h) != "complete":
                wanted = await store.missing_ranges(h)
                # Nothing missing yet not complete: the write that had the last chunk ended
                # before it moved the blob in (cancelled, or the process stopped while hashing).
                if wanted.is_empty() and await store.begin_partial(h, size):
                    continue
                todo.append((h, wanted, size))
        missing = self._fetched + sum(_range_bytes(r, size) for _, r, size in todo)
        if announce:
            self._missing_bytes = missing
            self._emit(SizesKnown(len(hashes), total, missing))
        if todo:
            await self._transfer(todo)
        for h in hashes:
            if await store.has(h) != "complete":
                raise BlobsError(f"blob {h.hex()} is still incomplete after the transfer")
        return total

    async def _connect_all(self) -> None:
        async def connect(provider: _Provider) -> None:
            try:
                provider.conn = await self._dl.endpoint.connect(provider.target, ALPN, timeout=self._dl.connect_timeout)
                self._emit(Connected(provider.id))
            except IrohError as exc:
                self._drop(provider, f"connect failed: {exc}")

        await asyncio.gather(*(connect(p) for p in self._providers))
        if not self._alive():
            raise BlobsError("could not connect to any provider: "
                             + "; ".join(f"{p.id.fmt_short()}: {p.dropped}" for p in self._providers))

    async def _fetch_sizes(self, hashes: list[bytes]) -> None:
        """Learn unknown sizes with one request for the first chunk group and the last chunk of each blob.

        The last chunk's proof verifies the size before the store allocates anything for the
        blob, and the answer is useful data too: blobs up to 16 KiB arrive whole, larger ones
        get their first group. (The provider hashes the last group's chunks to prove the
        last one: at most 16 KiB per blob.)
        """
        store = self._dl.store
        unknown = [h for h in hashes if await store.verified_size(h) is None]
        if not unknown:
            return
        for start in range(0, len(unknown), MAX_GET_MANY_HASHES):
            await self._fetch_first_groups(unknown[start : start + MAX_GET_MANY_HASHES])

    async def _fetch_first_groups(self, hashes: list[bytes]) -> None:
        request = GetManyRequest(tuple(hashes), ChunkRangesSeq.from_ranges_infinite([SIZE_PROBE]))
        errors = []
        for provider in self._alive():
            try:
                await self._request(provider, request.to_bytes(), [(h, SIZE_PROBE) for h in hashes])
            except (IrohError, _Abandoned) as exc:
                errors.append(f"{provider.id.fmt_short()}: {exc}")
                self._drop(provider, f"getting sizes failed: {exc}")
                continue
            return
        raise BlobsError("no provider could tell the sizes: " + "; ".join(errors))

    async def _transfer(self, blobs: list[tuple[bytes, ChunkRanges, int]]) -> None:
        self._queue.extend(plan_units(blobs, self._dl.unit_size))
        workers = [
            asyncio.ensure_future(self._worker(p)) for _ in range(self._dl.in_flight) for p in self._alive()
        ]
        try:
            while self._queue or self._in_flight:
                if not self._alive():
                    raise BlobsError("every provider failed: " + "; ".join(
                        f"{p.id.fmt_short()}: {p.dropped}" for p in self._providers))
                self._work.clear()
                await self._work.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # A cancelled worker's write goes on: it may be the one completing a blob.
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _worker(self, provider: _Provider) -> None:
        while provider.dropped is None:
            unit = self._next_unit(provider)
            if unit is None:
                self._work.clear()
                # Wake up when a unit another provider runs would count as stalled, too:
                # nothing else signals that moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._until_stalled(provider)):
                        await self._work.wait()
                continue
            unit.running.append(provider)
            unit.started = unit.started or time.monotonic()
            try:
                items = await self._remaining(unit)
                if items:
                    request = GetManyRequest.with_ranges(items)
                    await self._request(provider, request.to_bytes(), items, unit=unit)
                unit.finished = True
            except _Abandoned:
                pass
            except BaoError as exc:
                self._dl.metrics.verification_failures.inc()
                self._drop(provider, f"served data that does not verify: {exc}")
            except IrohError as exc:
                self._drop(provider, str(exc))
            finally:
                unit.running.remove(provider)
                self._settle(unit)

    def _settle(self, unit: _Unit) -> None:
        if unit.finished:
            if unit in self._in_flight:
                self._in_flight.remove(unit)
        elif not unit.running and unit in self._in_flight:
            self._in_flight.remove(unit)
            self._queue.appendleft(unit)
        self._work.set()

    def _next_unit(self, provider: _Provider) -> _Unit | None:
        if self._queue:
            unit = self._queue.popleft()
            self._in_flight.append(unit)
            return unit
        # End game: help with a unit whose provider is much slower than this one, or stalled.
        now = time.monotonic()
        best: _Unit | None = None
        for unit in self._in_flight:
            if unit.finished or len(unit.running) != 1 or provider in unit.running:
                continue
            other = unit.running[0]
            stalled = now - max(other.last_credit, unit.started) > self._dl.stall_timeout / 3
            slower = other.speed * SLOWER < provider.speed and now - unit.started > 2 * unit.nbytes / max(
                other.speed, 1.0)
            if (stalled or slower) and (best is None or unit.nbytes > best.nbytes):
                best = unit
        return best

    def _until_stalled(self, provider: _Provider) -> float | None:
        """Seconds until a unit only another provider runs would count as stalled (None: none)."""
        now = time.monotonic()
        delays = [max(u.running[0].last_credit, u.started) + self._dl.stall_timeout / 3 - now
                  for u in self._in_flight
                  if not u.finished and len(u.running) == 1 and provider not in u.running]
        return max(min(delays), 0.05) if delays else None

    async def _remaining(self, unit: _Unit) -> list[tuple[bytes, ChunkRanges]]:
        """What of the unit is still unverified in the store (all of it before sizes are known)."""
        items = []
        for h, ranges in unit.items:
            if await self._dl.store.has(h) == "complete":
                continue
            missing = await self._dl.store.missing_ranges(h)
            rest = ranges & missing
            if not rest.is_empty():
                items.append((h, rest))
        return items

    async def _request(self, provider: _Provider, request: bytes, items: list[tuple[bytes, ChunkRanges]], *,
                       unit: _Unit | None = None) -> None:
        """Send one request, verify its response blob by blob, and store what verifies."""
        if provider.conn is None or provider.dropped is not None:
            raise _Abandoned()
        stall = self._dl.stall_timeout
        store = self._dl.store
        async with asyncio.timeout(stall):
            send, recv = await provider.conn.open_bi()
            await send.write(request)
            await send.finish()
        try:
            pending = b""
            for h, ranges in items:
                decoder = bao.ResponseDecoder(h, ranges, window=VERIFY_WINDOW)
                leaves = decoder.feed(pending)
                proven = await store.verified_size(h)
                complete: bool | None = None
                held: list[bao.Leaf] = []
                while True:
                    if complete is None and decoder.size is not None:
                        if proven is not None and decoder.size != proven:
                            raise BaoError(f"size header {decoder.size} contradicts the verified size {proven}")
                        held += leaves
                        leaves = []
                        if proven is not None or decoder.size == 0 or _proves_size(held, decoder.size):
                            # Only now is the size known to be genuine: the store may size state by it.
                            complete = await store.begin_partial(h, decoder.size)
                            leaves, held = held, []
                        elif sum(len(leaf.data) for leaf in held) > MAX_UNPROVEN:
                            raise BlobsError(f"provider sent {h.hex()[:12]} data without proving its size")
                    if leaves and not complete:
                        await self._store_leaves(provider, h, leaves, decoder.take_pairs())
                    if decoder.done:
                        break
                    if unit is not None and unit.finished:
                        raise _Abandoned()
                    async with asyncio.timeout(stall):
                        data = await recv.read(READ_SIZE)
                    if not data:
                        raise BlobsError(f"provider ended the response early (blob {h.hex()[:12]})")
                    leaves = decoder.feed(data)
                pending = decoder.unused
            if pending:
                raise BlobsError("provider sent more than was asked for")
            async with asyncio.timeout(stall):
                if await recv.read(1):
                    raise BlobsError("provider sent more than was asked for")
        except TimeoutError:
            recv.stop(0)
            raise BlobsError(f"provider stalled: nothing for {stall:g} s") from None
        except BaseException:
            recv.stop(0)
            raise

    async def _store_leaves(self, provider: _Provider, hash_: bytes, leaves: list[bao.Leaf],
                            pairs: list[tuple[int, bytes]]) -> None:
        nbytes = sum(len(leaf.data) for leaf in leaves)
        # The write that fills a blob's last chunks also hashes and promotes it. A worker is
        # cancelled once another provider has finished its unit, and that provider may have
        # found nothing missing because this write was under way: so the write is shielded
        # and _transfer waits for it, or the blob stays partial with every chunk present.
        write = asyncio.ensure_future(self._dl.store.write_leaves(hash_, leaves, pairs))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        write.add_done_callback(lambda done: self._stored(provider, nbytes, done))
        await asyncio.shield(write)

    def _stored(self, provider: _Provider, nbytes: int, write: asyncio.Future[bool]) -> None:
        """Count a finished write, also one whose worker was cancelled meanwhile."""
        if write.cancelled() or write.exception() is not None:
            return
        provider.credit(nbytes)
        self._dl.metrics.download_bytes.inc(nbytes)
        self._fetched += nbytes
        self._chunks += -(-nbytes // 1024)
        self._progress()


class Downloader:
    """Downloads into ``store`` over ``endpoint``; one instance serves many downloads."""

    def __init__(self, endpoint: Endpoint, store: Store, *, unit_size: int = UNIT_SIZE,
                 stall_timeout: float = STALL_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                 in_flight: int = IN_FLIGHT) -> None:
        self.endpoint = endpoint
        self.store = store
        self.unit_size = unit_size
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.in_flight = in_flight
        self.metrics = endpoint.metrics().group(BlobsMetrics)

    def download(self, hash_: bytes, providers: Sequence[EndpointAddr | EndpointId],
                 format: BlobFormat = BlobFormat.RAW, *, before_children: ChildrenCheck | None = None) -> Download:
        """Start fetching; the returned :class:`Download` yields events and ends with :class:`Done`.

        ``before_children`` (hash sequences only) is awaited with the children's hashes once the
        sequence and its first child (a collection's names) are in the store, before the other
        children are fetched; an exception it raises ends the download, e.g. a file in the way.
        """
        return Download(self, hash_, providers, format, before_children)

    async def fetch(self, hash_: bytes, providers: Sequence[EndpointAddr | EndpointId],
                    format: BlobFormat = BlobFormat.RAW) -> DownloadStats:
        """Fetch to completion and return the stats; raises BlobsError if no provider can finish it."""
        async with self.download(hash_, providers, format) as download:
            return await download.wait()
