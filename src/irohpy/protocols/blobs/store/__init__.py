"""Blob stores: where providers read blobs from and downloaders write verified data to.

``MemStore()`` keeps everything in memory; ``FsStore(root)`` keeps it in a directory so
downloads resume across processes. Both implement :class:`Store`, every method async:

- ``import_bytes(data)`` / ``import_file(path)`` -> hash; ``import_path(path, collection=False)``
  -> :class:`ImportResult` (a directory becomes a collection, named as sendme names it);
- ``has(hash)`` -> ``"complete"`` | ``"partial"`` | None; ``size(hash)``; ``get_bytes(hash)``;
  ``reader(hash)`` -> ``(read(offset, length), Outboard)`` for complete blobs;
- ``export(hash, path, overwrite=False)``, ``export_collection(hash, dir, overwrite=False)``,
  ``collection(hash)``;
- downloads: ``missing_ranges(hash)`` -> ChunkRanges (open-ended until the size is verified),
  ``begin_partial(hash, size)`` -> bool, ``write_leaves(hash, leaves, pairs=())`` -> bool, True
  once the blob is complete (its outboard from the verified pairs, or hashed again; root checked;
  marked complete atomically);
- ``set_tag(name, hash, format)``, ``delete_tag(name)``, ``list_tags()``, ``gc()``,
  ``blobs()``, ``delete(hash)``; ``close()`` or ``async with``.

Missing blobs raise :class:`BlobNotFound` (a BlobsError and a LookupError).

Against the work split's contract: downloads use ``begin_partial`` + ``write_leaves`` (there is
no separate ``writer(hash)``), and ``missing_ranges`` keeps its last range open until the size
is verified; ``import_files``, ``collection``, ``blobs`` and ``delete`` are additions.
"""

from __future__ import annotations

from irohpy.protocols.blobs.store.base import BlobNotFound, BlobStatus, ImportResult, ReadFn, Store
from irohpy.protocols.blobs.store.fs import FsStore
from irohpy.protocols.blobs.store.mem import MemStore
from irohpy.protocols.blobs.store.tags import Tag

__all__ = ["BlobNotFound", "BlobStatus", "FsStore", "ImportResult", "MemStore", "ReadFn", "Store", "Tag"]
