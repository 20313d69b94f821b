"""Collections: named files as a HashSeq plus a metadata blob (iroh-blobs ``format/collection.rs``).

The hash sequence's first entry is the hash of the metadata blob, postcard
``{header: b"CollectionV0." (13 raw bytes), names: Vec<String>}``; the remaining entries are
the files, paired with ``names`` by position. sendme shares directories this way, with names
relative to the shared directory and ``/`` as separator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import blake3

from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError
from irohpy.protocols.blobs.hashseq import HashSeq, check_hash

HEADER = b"CollectionV0."


def check_name(name: str) -> str:
    """Refuse names that could escape the export directory or are not portable paths."""
    if not isinstance(name, str):
        raise TypeError(f"a collection name must be str, not {type(name).__name__}")
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        raise DecodeError(f"unsafe collection name {name!r}: empty, absolute, '.' or '..' component")
    if "\0" in name or "\\" in name:
        raise DecodeError(f"unsafe collection name {name!r}: contains NUL or backslash")
    return name


def export_path(root: Path, name: str) -> Path:
    """Where ``name`` goes under ``root``; never outside it."""
    return root.joinpath(*PurePosixPath(check_name(name)).parts)


@dataclass(frozen=True)
class Collection:
    """An ordered list of ``(name, hash)``; ``to_blobs`` gives the two blobs that encode it."""

    entries: tuple[tuple[str, bytes], ...] = ()

    def __init__(self, entries: Iterable[tuple[str, bytes]] = ()) -> None:
        checked = tuple((check_name(name), check_hash(h)) for name, h in entries)
        object.__setattr__(self, "entries", checked)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self.entries)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    @property
    def hashes(self) -> list[bytes]:
        return [h for _, h in self.entries]

    def meta_bytes(self) -> bytes:
        writer = Writer().fixed(HEADER, len(HEADER))
        writer.seq(self.names, writer.str_)
        return writer.finish()

    def hash_seq(self) -> HashSeq:
        return HashSeq([blake3.blake3(self.meta_bytes()).digest(), *self.hashes])

    def to_blobs(self) -> tuple[bytes, bytes]:
        """``(metadata blob, hash sequence blob)``; the collection's hash is that of the second."""
        return self.meta_bytes(), self.hash_seq().to_bytes()

    def hash(self) -> bytes:
        return blake3.blake3(self.hash_seq().to_bytes()).digest()

    @staticmethod
    def decode_meta(data: bytes) -> list[str]:
        """The names in a metadata blob; a wrong header or unsafe name is a DecodeError."""
        reader = Reader(data)
        header = reader.fixed(len(HEADER))
        if header != HEADER:
            raise DecodeError(f"not a collection: metadata header is {header!r}, expected {HEADER!r}")
        names = reader.seq(reader.str_)
        reader.finish()
        return [check_name(name) for name in names]

    @classmethod
    def from_blobs(cls, hash_seq: HashSeq | bytes, meta: bytes) -> Collection:
        """Rebuild a collection from its hash sequence and metadata blob, checking they match."""
        seq = hash_seq if isinstance(hash_seq, HashSeq) else HashSeq.from_bytes(hash_seq)
        if not len(seq):
            raise DecodeError("not a collection: the hash sequence is empty")
        if blake3.blake3(meta).digest() != seq[0]:
            raise DecodeError("not a collection: the metadata blob does not match the first hash")
        names = cls.decode_meta(meta)
        if len(names) != len(seq) - 1:
            raise DecodeError(f"collection has {len(names)} names for {len(seq) - 1} blobs")
        return cls(zip(names, seq.hashes[1:], strict=True))
