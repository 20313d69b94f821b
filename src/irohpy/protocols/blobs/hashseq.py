"""HashSeq: a blob that is a concatenation of 32-byte BLAKE3 hashes (iroh-blobs ``hashseq.rs``).

A hash sequence names other blobs, so one ``Get`` request with ranges for its children fetches
them all; collections are hash sequences whose first entry is a metadata blob.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from irohpy.errors import DecodeError

HASH_LEN = 32


def check_hash(value: object, what: str = "hash") -> bytes:
    """A 32-byte BLAKE3 hash as ``bytes``; anything else is a TypeError or ValueError."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be 32 bytes, not {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != HASH_LEN:
        raise ValueError(f"{what} must be {HASH_LEN} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class HashSeq:
    """An immutable sequence of hashes; ``bytes(seq)`` is the blob."""

    hashes: tuple[bytes, ...] = ()

    def __init__(self, hashes: Iterable[bytes] = ()) -> None:
        object.__setattr__(self, "hashes", tuple(check_hash(h) for h in hashes))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> HashSeq:
        """Parse a hash sequence blob; its length must be a multiple of 32."""
        raw = bytes(data)
        if len(raw) % HASH_LEN:
            raise DecodeError(f"a hash sequence is a multiple of {HASH_LEN} bytes, got {len(raw)}")
        return cls(raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN))

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __len__(self) -> int:
        return len(self.hashes)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.hashes)

    def __getitem__(self, index: int) -> bytes:
        return self.hashes[index]

    def get(self, index: int) -> bytes | None:
        """The hash at ``index``, or None past the end (as a request offset may be)."""
        return self.hashes[index] if 0 <= index < len(self.hashes) else None
