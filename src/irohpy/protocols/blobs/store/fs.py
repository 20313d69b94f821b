"""A store in a directory, built so that downloads resume across processes and crashes lie about nothing.

Layout under the root::

    lock                    held with flock by the one process using the store
    complete/<hash>.obao    outboard (blobs over 16 KiB), made durable before the data is moved in
    complete/<hash>.data    the blob; its presence is what makes a blob complete
    partial/<hash>.data     a download's data file, as long as the blob, holes where not yet written
    partial/<hash>.obao     its outboard, holes where no verified pair has come yet
    partial/<hash>.state    claimed size + bitfield of verified chunks, from the first save on (replaced atomically)
    tags.json               tags (replaced atomically)
    tmp/                    files being written; emptied on open

A chunk is marked in the state file only after its data is fsynced, and a blob becomes
complete by one rename after its outboard is durable, so a crash at any point leaves at
worst some verified chunks to fetch again. A finished download's outboard is the pairs that
came with its verified chunks, once they check out against its hash (``bao.check_outboard``);
only when they do not (a partial from before pairs were kept) is the blob hashed again.
Progress is saved every ``sync_bytes`` written or ``sync_interval`` seconds, and on close. Blobs are streamed to and from disk and hashed
in batches of a few MiB, so a 1 GB blob never sits in memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import functools
import mmap
import os
import shutil
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from irohpy.errors import BaoError, BlobsError, DecodeError
from irohpy.protocols.blobs.bao import (
    PAIR_SIZE,
    Leaf,
    Outboard,
    check_outboard,
    compute_outboard,
    compute_outboard_from,
)
from irohpy.protocols.blobs.hashseq import check_hash
from irohpy.protocols.blobs.ranges import GROUP_SIZE, ChunkRanges, groups_for_size
from irohpy.protocols.blobs.store.base import (
    EMPTY_HASH,
    BlobNotFound,
    BlobStatus,
    ReadFn,
    Store,
    atomic_write,
)
from irohpy.protocols.blobs.store.bitfield import ChunkBits
from irohpy.protocols.blobs.store.tags import Tag, decode_tags, encode_tags

T = TypeVar("T")

SYNC_BYTES = 16 << 20
SYNC_INTERVAL = 1.0


@dataclass(eq=False)
class _Partial:
    """A download in progress; its data file is opened per write, so thousands of them cost no descriptors."""

    bits: ChunkBits
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    saved: bool = False
    dirty: int = 0
    synced_at: float = field(default_factory=time.monotonic)
    closed: bool = False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Write a small file through a temporary sibling, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_SYNCFS = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


_SYNCFS_FROM = 8
"""From this many files on, one syncfs beats an fsync each; below, fsync waits for nobody else's writes."""


def _sync_files(directory: Path, files: list[Path]) -> None:
    """Make ``files`` durable: many at once with one syncfs of the filesystem where Linux offers it
    (one journal commit instead of one per file, 30x faster for a thousand small files), else fsync each."""
    if _SYNCFS is not None and len(files) >= _SYNCFS_FROM:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
        return
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _shrink(path: Path, size: int) -> None:
    """Cut a partial's data file to ``size`` if it is longer; never grow it (a sparse file still has a size)."""
    if path.stat().st_size > size:
        os.truncate(path, size)


def _hash_file(fd: int, size: int) -> Outboard:
    """Hash an open file's first ``size`` bytes, one read-only mapping of a few MiB at a time.

    bao reads group-aligned (so page-aligned) pieces; each mapping is unmapped once bao drops
    it, so neither the heap nor the resident set ever holds more than a piece.
    """
    if size == 0:
        return compute_outboard(b"")

    def piece(offset: int, length: int) -> memoryview:
        return memoryview(mmap.mmap(fd, length, offset=offset, prot=mmap.PROT_READ))

    return compute_outboard_from(piece, size)


async def _settle(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking step in a thread and see it through even if the caller is cancelled.

    The steps change files and the in-memory state together, so they must not be abandoned halfway.
    """
    fut = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                continue
        raise


class FsStore(Store):
    """Blobs, partial downloads and tags in ``root``; one process at a time (others get BlobsError)."""

    def __init__(
        self, root: Path | str, *, sync_bytes: int = SYNC_BYTES, sync_interval: float = SYNC_INTERVAL
    ) -> None:
        self.root = Path(root)
        self._sync_bytes = sync_bytes
        self._sync_interval = sync_interval
        self._complete_dir = self.root / "complete"
        self._partial_dir = self.root / "partial"
        self._tmp_dir = self.root / "tmp"
        for d in (self._complete_dir, self._partial_dir, self._tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise BlobsError(f"blob store {self.root} is in use by another process") from None
        self._partials: dict[bytes, _Partial] = {}
        self._recover()

    # -- paths and recovery ---------------------------------------------------

    def _complete_path(self, hash: bytes, ext: str) -> Path:
        return self._complete_dir / f"{hash.hex()}.{ext}"

    def _partial_path(self, hash: bytes, ext: str) -> Path:
        return self._partial_dir / f"{hash.hex()}.{ext}"

    def _partial_files(self, hash: bytes) -> tuple[Path, Path]:
        """A download's data and outboard files (the state file is written after both are durable)."""
        return self._partial_path(hash, "data"), self._partial_path(hash, "obao")

    def _tmp_path(self, ext: str) -> Path:
        return self._tmp_dir / f"{uuid.uuid4().hex}.{ext}"

    def _recover(self) -> None:
        """Drop what a crash can leave behind: temporary files, outboards without data, half-made partials."""
        for tmp in [*self._tmp_dir.iterdir(), *self._complete_dir.glob(".*.tmp"), *self.root.glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
        for obao in self._complete_dir.glob("*.obao"):
            if not obao.with_suffix(".data").exists():
                obao.unlink(missing_ok=True)
        for data in self._complete_dir.glob("*.data"):
            if data.stat().st_size > GROUP_SIZE and not data.with_suffix(".obao").exists():
                data.unlink(missing_ok=True)
        for path in self._partial_dir.iterdir():
            other = path.with_suffix(".data" if path.suffix == ".state" else ".state")
            done = (self._complete_dir / path.name).with_suffix(".data").exists()
            if path.suffix not in (".data", ".state", ".obao") or not other.exists() or done:
                path.unlink(missing_ok=True)

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise BlobsError(f"blob store {self.root} is closed")

    # -- complete blobs -------------------------------------------------------

    def _install(self, tmp_data: Path, outboard: Outboard) -> None:
        """Make a fully written, fsynced data file the complete blob ``outboard.root``.

        Blobs of one chunk group have an empty outboard and no ``.obao`` file; for the rest
        the outboard is made durable before the data's rename, the step that marks completion.
        """
        data_path = self._complete_path(outboard.root, "data")
        if data_path.exists():
            tmp_data.unlink()
            return
        if outboard.data:
            _write_durably(self._complete_path(outboard.root, "obao"), outboard.data)
            _fsync_dir(self._complete_dir)
        os.replace(tmp_data, data_path)

    def _import_bytes(self, data: bytes) -> Outboard:
        outboard = compute_outboard(data)
        if not self._complete_path(outboard.root, "data").exists():
            tmp = self._tmp_path("data")
            _write_durably(tmp, data)
            self._install(tmp, outboard)
        return outboard

    def _import_files(self, paths: list[Path]) -> list[Outboard]:
        """Copy every file in, make them all durable at once, hash each, then install."""
        tmps: list[Path] = []
        try:
            for path in paths:
                tmps.append(self._tmp_path("data"))
                shutil.copyfile(path, tmps[-1])
            _sync_files(self._tmp_dir, tmps)
            outboards = []
            for tmp in tmps:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    outboards.append(_hash_file(fd, os.fstat(fd).st_size))
                finally:
                    os.close(fd)
            for tmp, outboard in zip(tmps, outboards, strict=True):
                self._install(tmp, outboard)
            return outboards
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)

    async def import_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        self._check_open()
        outboard = await asyncio.to_thread(self._import_bytes, bytes(data))
        await self._drop_partial(outboard.root)
        return outboard.root

    async def import_files(self, paths: Sequence[Path | str]) -> list[bytes]:
        self._check_open()
        outboards = await asyncio.to_thread(self._import_files, [Path(p) for p in paths])
        for outboard in outboards:
            await self._drop_partial(outboard.root)
        return [outboard.root for outboard in outboards]

    async def has(self, hash: bytes) -> BlobStatus | None:
        self._check_open()
        hash = check_hash(hash)
        if self._complete_path(hash, "data").exists():
            return "complete"
        return "partial" if self._load_partial(hash) else None

    async def size(self, hash: bytes) -> int | None:
        self._check_open()
        hash = check_hash(hash)
        try:
            return self._complete_path(hash, "data").stat().st_size
        except FileNotFoundError:
            partial = self._load_partial(hash)
            return partial.bits.size if partial else None

    async def verified_size(self, hash: bytes) -> int | None:
        self._check_open()
        hash = check_hash(hash)
        try:
            return self._complete_path(hash, "data").stat().st_size
        except FileNotFoundError:
            partial = self._load_partial(hash)
            return partial.bits.size if partial and partial.bits.size_verified else None

    async def get_bytes(self, hash: bytes) -> bytes:
        self._check_open()
        hash = check_hash(hash)
        try:
            return await asyncio.to_thread(self._complete_path(hash, "data").read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {hash.hex()} is not in the store") from None

    async def reader(self, hash: bytes) -> tuple[ReadFn, Outboard]:
        """Reads are ``pread`` on a file descriptor closed when ``read`` is garbage collected;
        they keep working if the blob is deleted meanwhile."""
        self._check_open()
        hash = check_hash(hash)
        try:
            fd = os.open(self._complete_path(hash, "data"), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {hash.hex()} is not in the store") from None
        try:
            size = os.fstat(fd).st_size
            outboard = Outboard(hash, size, self._complete_path(hash, "obao").read_bytes() if size > GROUP_SIZE else b"")
        except BaseException:
            os.close(fd)
            raise

        def read(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        weakref.finalize(read, os.close, fd)
        return read, outboard

    async def export(self, hash: bytes, path: Path | str, *, overwrite: bool = False) -> Path:
        self._check_open()
        hash = check_hash(hash)
        source = self._complete_path(hash, "data")
        if not source.exists():
            raise BlobNotFound(f"blob {hash.hex()} is not in the store")
        target = Path(path)
        await asyncio.to_thread(
            atomic_write, target, lambda tmp: shutil.copyfile(source, tmp), overwrite=overwrite
        )
        return target

    # -- partial blobs --------------------------------------------------------

    def _load_partial(self, hash: bytes) -> _Partial | None:
        """The in-memory entry of a partial blob, loaded from disk on first use."""
        partial = self._partials.get(hash)
        if partial is not None:
            return partial
        state = self._partial_path(hash, "state")
        try:
            bits = ChunkBits.from_bytes(state.read_bytes())
            _shrink(self._partial_path(hash, "data"), bits.size)
        except (FileNotFoundError, DecodeError):
            state.unlink(missing_ok=True)
            for path in self._partial_files(hash):
                path.unlink(missing_ok=True)
            return None
        partial = self._partials[hash] = _Partial(bits, saved=True)
        return partial

    def _save_due(self, partial: _Partial) -> bool:
        return not partial.closed and partial.dirty > 0 and (
            partial.dirty >= self._sync_bytes or time.monotonic() - partial.synced_at >= self._sync_interval
        )

    def _snapshot(self, partial: _Partial) -> bytes:
        partial.saved = True
        partial.dirty = 0
        partial.synced_at = time.monotonic()
        return partial.bits.to_bytes()

    def _write_states(self, states: list[tuple[bytes, bytes]]) -> None:
        """Save bitfields once the data they vouch for is durable; many at once share the syncs.

        A state file torn by a crash fails to parse and its partial is dropped: never wrong, at worst lost.
        """
        _sync_files(self._partial_dir, [path for h, _ in states for path in self._partial_files(h) if path.exists()])
        for h, state in states:
            path = self._partial_path(h, "state")
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(state)
            os.replace(tmp, path)
        _sync_files(self._partial_dir, [self._partial_path(h, "state") for h, _ in states])

    def _finish(self, size: int, hash: bytes) -> None:
        """Hash the finished download and move it in as complete, or drop it if it is not ``hash``."""
        fd = os.open(self._partial_path(hash, "data"), os.O_RDONLY)
        try:
            os.fsync(fd)
            outboard = self._received_outboard(hash, size) or _hash_file(fd, size)
        finally:
            os.close(fd)
        if outboard.root == hash:
            self._install(self._partial_path(hash, "data"), outboard)
        self._partial_path(hash, "state").unlink(missing_ok=True)
        for path in self._partial_files(hash):
            path.unlink(missing_ok=True)
        if outboard.root != hash:
            raise BaoError(f"blob {hash.hex()} hashed to {outboard.root.hex()} once complete; its data was dropped")

    def _received_outboard(self, hash: bytes, size: int) -> Outboard | None:
        """The pairs kept from the download, if they make the blob's whole outboard."""
        if size <= GROUP_SIZE:
            return None
        try:
            outboard = Outboard(hash, size, self._partial_path(hash, "obao").read_bytes())
            check_outboard(outboard)
        except (FileNotFoundError, BaoError):
            return None
        return outboard

    async def _complete(self, partial: _Partial, hash: bytes) -> bool:
        """Finish a download whose every chunk is marked; False if another writer found it corrupt."""
        async with partial.lock:
            if not partial.closed:
                partial.closed = True
                try:
                    await _settle(self._finish, partial.bits.size, hash)
                finally:
                    self._partials.pop(hash, None)
        return self._complete_path(hash, "data").exists()

    async def _drop_partial(self, hash: bytes) -> None:
        partial = self._partials.pop(hash, None)
        if partial is not None:
            async with partial.lock:
                partial.closed = True
        self._partial_path(hash, "state").unlink(missing_ok=True)
        for path in self._partial_files(hash):
            path.unlink(missing_ok=True)

    async def missing_ranges(self, hash: bytes) -> ChunkRanges:
        self._check_open()
        hash = check_hash(hash)
        if self._complete_path(hash, "data").exists():
            return ChunkRanges.empty()
        partial = self._load_partial(hash)
        return partial.bits.missing() if partial else ChunkRanges.all()

    async def begin_partial(self, hash: bytes, size: int) -> bool:
        self._check_open()
        hash = check_hash(hash)
        if self._complete_path(hash, "data").exists():
            return True
        if size == 0:
            if hash != EMPTY_HASH:
                raise BaoError(f"blob {hash.hex()} cannot be empty")
            await self.import_bytes(b"")
            return True
        partial = self._load_partial(hash)
        if partial is None:
            bits = ChunkBits.new(size)
            # Empty, not sized: the files grow as verified leaves and pairs are written.
            for path in self._partial_files(hash):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            partial = self._partials[hash] = _Partial(bits)
        elif partial.bits.size != size:
            if partial.bits.size_verified:
                raise BaoError(f"size {size} contradicts the verified size {partial.bits.size} of {hash.hex()}")
            async with partial.lock:
                if partial.closed:
                    return self._complete_path(hash, "data").exists()
                partial.bits = partial.bits.resized(size)
                _shrink(self._partial_path(hash, "data"), size)
                os.truncate(self._partial_path(hash, "obao"), 0)  # pairs of another tree shape
                await _settle(self._write_states, [(hash, self._snapshot(partial))])
        if partial.bits.complete:
            return await self._complete(partial, hash)
        return False

    async def write_leaves(self, hash: bytes, leaves: Iterable[Leaf],
                           pairs: Iterable[tuple[int, bytes]] = ()) -> bool:
        self._check_open()
        hash = check_hash(hash)
        if self._complete_path(hash, "data").exists():
            return True
        partial = self._load_partial(hash)
        if partial is None:
            raise BlobNotFound(f"blob {hash.hex()} has no partial download (call begin_partial first)")
        if partial.closed:
            return await self._complete(partial, hash)
        pairs = list(pairs)
        if pairs:
            self._write_pairs(hash, partial.bits.size, pairs)
        fd = os.open(self._partial_path(hash, "data"), os.O_WRONLY)
        try:
            for leaf in leaves:
                if leaf.offset < 0 or leaf.offset + len(leaf.data) > partial.bits.size:
                    raise ValueError(f"leaf {leaf.offset}+{len(leaf.data)} outside a blob of {partial.bits.size} bytes")
                _pwrite_all(fd, leaf.data, leaf.offset)
                partial.bits.mark(leaf.offset, len(leaf.data))
                partial.dirty += len(leaf.data)
        finally:
            os.close(fd)
        if partial.bits.complete:
            return await self._complete(partial, hash)
        if self._save_due(partial):
            async with partial.lock:
                if self._save_due(partial):
                    await _settle(self._write_states, [(hash, self._snapshot(partial))])
        return False

    def _write_pairs(self, hash: bytes, size: int, pairs: list[tuple[int, bytes]]) -> None:
        """Write pairs at their places in the partial outboard; runs of consecutive ones (a
        response's pairs come in pre-order) in one write each."""
        count = groups_for_size(size) - 1
        runs: list[tuple[int, list[bytes]]] = []
        for index, pair in pairs:
            if not 0 <= index < count or len(pair) != PAIR_SIZE:
                raise ValueError(f"pair {index} of {len(pair)} bytes outside an outboard of {count} pairs")
            if runs and runs[-1][0] + len(runs[-1][1]) == index:
                runs[-1][1].append(pair)
            else:
                runs.append((index, [pair]))
        fd = os.open(self._partial_path(hash, "obao"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for first, run in runs:
                _pwrite_all(fd, b"".join(run), first * PAIR_SIZE)
        finally:
            os.close(fd)

    # -- listing, deleting, tags, closing ---------------------------------------

    async def blobs(self) -> dict[bytes, BlobStatus]:
        self._check_open()
        out: dict[bytes, BlobStatus] = {}
        for directory, ext, status in (
            (self._partial_dir, "state", "partial"),
            (self._complete_dir, "data", "complete"),
        ):
            for path in directory.glob(f"*.{ext}"):
                try:
                    hash = bytes.fromhex(path.stem)
                except ValueError:
                    continue
                if len(hash) == 32:
                    out[hash] = status  # type: ignore[assignment]
        out.update((h, "partial") for h in self._partials if h not in out)
        return out

    async def delete(self, hash: bytes) -> None:
        self._check_open()
        hash = check_hash(hash)
        await self._drop_partial(hash)
        self._complete_path(hash, "data").unlink(missing_ok=True)
        self._complete_path(hash, "obao").unlink(missing_ok=True)

    async def list_tags(self) -> dict[str, Tag]:
        self._check_open()
        try:
            return decode_tags((self.root / "tags.json").read_bytes())
        except FileNotFoundError:
            return {}

    async def _save_tags(self, tags: dict[str, Tag]) -> None:
        self._check_open()
        _write_durably(self.root / "tags.json", encode_tags(tags))

    def _in_use(self) -> set[bytes]:
        return set(self._partials)

    async def close(self) -> None:
        """Save every download's progress, close its file, and release the store for other processes."""
        if self._lock_fd is None:
            return
        states = []
        for hash, partial in list(self._partials.items()):
            async with partial.lock:
                if not partial.closed and (partial.dirty or not partial.saved):
                    states.append((hash, self._snapshot(partial)))
                partial.closed = True
        self._partials.clear()
        try:
            if states:
                await _settle(self._write_states, states)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None
