"""The Store interface, and what every store does the same way on top of its primitives.

A store keeps complete blobs (data plus outboard, served by providers), partial blobs
(a downloader's verified chunks so far) and tags. Importing a directory, exporting a
collection and garbage collection are built here from the primitives each store implements.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import blake3

from irohpy.errors import BlobsError, DecodeError
from irohpy.protocols.blobs.bao import Leaf, Outboard
from irohpy.protocols.blobs.collection import Collection, export_path
from irohpy.protocols.blobs.hashseq import HashSeq
from irohpy.protocols.blobs.ranges import ChunkRanges
from irohpy.protocols.blobs.store.tags import Tag, check_tag_name
from irohpy.protocols.blobs.ticket import BlobFormat

BlobStatus = Literal["complete", "partial"]
ReadFn = Callable[[int, int], bytes]
EMPTY_HASH = blake3.blake3(b"").digest()


class BlobNotFound(BlobsError, LookupError):
    """The store has no complete blob with this hash."""


@dataclass(frozen=True)
class ImportResult:
    """What an import produced: the hash to share, its format, total file bytes, and the collection if any."""

    hash: bytes
    format: BlobFormat
    size: int
    collection: Collection | None = None


def collect_files(path: Path) -> list[tuple[str, Path]]:
    """The regular files under a directory as (name, path), sorted by name.

    Names are relative to the directory's parent with ``/`` separators, so they start with
    the directory's own name, as sendme names them; symlinks are skipped.
    """
    base = path.resolve()
    if not base.name:
        raise ValueError(f"cannot share {path}: it has no name")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
        for fname in filenames:
            file = here / fname
            if not file.is_symlink() and file.is_file():
                files.append(("/".join(file.relative_to(base.parent).parts), file))
    return sorted(files)


def atomic_write(path: Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Create ``path`` through a temporary sibling and a rename, so it never appears half written."""
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Store(ABC):
    """Blobs by BLAKE3 hash: complete ones to serve, partial ones being downloaded, and tags."""

    # -- primitives -----------------------------------------------------------

    @abstractmethod
    async def import_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        """Store ``data`` as a complete blob and return its hash."""

    @abstractmethod
    async def import_files(self, paths: Sequence[Path | str]) -> list[bytes]:
        """Store each file's bytes as a complete blob and return their hashes (in bulk, for fewer disk syncs)."""

    @abstractmethod
    async def has(self, hash: bytes) -> BlobStatus | None:
        """Whether the blob is complete, partial, or unknown."""

    @abstractmethod
    async def size(self, hash: bytes) -> int | None:
        """The blob's size (a partial blob's may be unverified), or None if unknown."""

    @abstractmethod
    async def verified_size(self, hash: bytes) -> int | None:
        """The blob's size once proven: complete, or a partial whose last chunk verified."""

    @abstractmethod
    async def get_bytes(self, hash: bytes) -> bytes:
        """A complete blob's bytes; BlobNotFound otherwise."""

    @abstractmethod
    async def reader(self, hash: bytes) -> tuple[ReadFn, Outboard]:
        """``read(offset, length)`` and the outboard of a complete blob, for ``bao.encode_ranges``."""

    @abstractmethod
    async def export(self, hash: bytes, path: Path | str, *, overwrite: bool = False) -> Path:
        """Write a complete blob to ``path``; refuse to replace a file unless ``overwrite``."""

    @abstractmethod
    async def missing_ranges(self, hash: bytes) -> ChunkRanges:
        """The chunks a downloader still needs: all for an unknown blob, none for a complete one."""

    @abstractmethod
    async def begin_partial(self, hash: bytes, size: int) -> bool:
        """Start or resume a download whose provider announced ``size``; True if already complete.

        A partial blob with every chunk present (its last write stopped before moving it in)
        is finished here. A size contradicting one already verified is a BaoError (the provider lies).
        """

    @abstractmethod
    async def write_leaves(self, hash: bytes, leaves: Iterable[Leaf],
                           pairs: Iterable[tuple[int, bytes]] = ()) -> bool:
        """Write leaves verified by ``bao.ResponseDecoder``; True once the blob is complete.

        ``pairs`` are the outboard pairs verified with them (``ResponseDecoder.take_pairs``). A
        store that keeps them takes them as the outboard when the last missing chunk arrives, if
        they hash up to ``hash`` (``bao.check_outboard``); otherwise the whole blob is hashed
        again and must match ``hash`` before it is marked complete; if not, the partial data is
        dropped and BaoError raised.
        """

    @abstractmethod
    async def blobs(self) -> dict[bytes, BlobStatus]:
        """Every blob the store holds, complete or partial."""

    @abstractmethod
    async def delete(self, hash: bytes) -> None:
        """Remove a blob, complete or partial, if present."""

    @abstractmethod
    async def list_tags(self) -> dict[str, Tag]:
        """Every tag by name."""

    @abstractmethod
    async def _save_tags(self, tags: dict[str, Tag]) -> None:
        """Replace every tag at once."""

    @abstractmethod
    def _in_use(self) -> set[bytes]:
        """Partial blobs being written right now, which gc must keep."""

    async def close(self) -> None:
        """Save download progress and release resources; the store is unusable afterwards."""

    # -- built on the primitives ----------------------------------------------

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def import_file(self, path: Path | str) -> bytes:
        """Store a file's bytes as a complete blob and return its hash."""
        return (await self.import_files([path]))[0]

    async def set_tag(self, name: str, hash: bytes, format: BlobFormat = BlobFormat.RAW) -> None:
        tags = await self.list_tags()
        tags[check_tag_name(name)] = Tag(hash, format)
        await self._save_tags(tags)

    async def delete_tag(self, name: str) -> bool:
        """Remove a tag; False if there was none."""
        tags = await self.list_tags()
        if tags.pop(name, None) is None:
            return False
        await self._save_tags(tags)
        return True

    async def import_path(self, path: Path | str, *, collection: bool = False) -> ImportResult:
        """Import a file as a raw blob, or a directory (or, with ``collection``, a file) as a collection."""
        path = Path(path)
        if path.is_dir():
            files = collect_files(path)
        elif path.is_file():
            if not collection:
                return ImportResult(await self.import_file(path), BlobFormat.RAW, path.stat().st_size)
            files = [(path.resolve().name, path)]
        else:
            raise FileNotFoundError(f"{path} is neither a file nor a directory")
        coll = Collection(zip([name for name, _ in files], await self.import_files([f for _, f in files]), strict=True))
        meta, seq = coll.to_blobs()
        await self.import_bytes(meta)
        seq_hash = await self.import_bytes(seq)
        total = sum(file.stat().st_size for _, file in files)
        return ImportResult(seq_hash, BlobFormat.HASH_SEQ, total, coll)

    async def collection(self, hash: bytes) -> Collection:
        """The collection a complete hash sequence and its metadata blob describe."""
        seq = HashSeq.from_bytes(await self.get_bytes(hash))
        if not len(seq):
            raise DecodeError("not a collection: the hash sequence is empty")
        return Collection.from_blobs(seq, await self.get_bytes(seq[0]))

    async def export_collection(self, hash: bytes, directory: Path | str, *, overwrite: bool = False) -> list[Path]:
        """Write every file of a collection under ``directory``; refuse to replace files unless ``overwrite``."""
        coll = await self.collection(hash)
        root = Path(directory)
        targets = [(export_path(root, name), h) for name, h in coll]
        for target, h in targets:
            if await self.has(h) != "complete":
                raise BlobNotFound(f"collection file {target} (blob {h.hex()}) is not in the store")
            if not overwrite and target.exists():
                raise FileExistsError(f"{target} exists (pass overwrite=True to replace it)")
        return [await self.export(h, target, overwrite=overwrite) for target, h in targets]

    async def gc(self) -> list[bytes]:
        """Delete every blob no tag protects (partial downloads in progress are kept); return their hashes.

        Tag what you import before a gc may run: an untagged blob is garbage the moment it lands.
        """
        live = set(self._in_use())
        for tag in (await self.list_tags()).values():
            live.add(tag.hash)
            if tag.format == BlobFormat.HASH_SEQ and await self.has(tag.hash) == "complete":
                try:
                    live.update(HashSeq.from_bytes(await self.get_bytes(tag.hash)))
                except DecodeError:
                    pass
        dead = [h for h in await self.blobs() if h not in live]
        for h in dead:
            await self.delete(h)
        return dead
