"""HashSeq and Collection blobs (iroh-wire.md §11.3, iroh-blobs hashseq.rs and format/collection.rs)."""

from __future__ import annotations

from pathlib import Path

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from irohpy.errors import DecodeError
from irohpy.protocols.blobs.collection import HEADER, Collection, export_path
from irohpy.protocols.blobs.hashseq import HashSeq

FILES = {
    "photos/a.txt": b"the first file\n",
    "photos/trip/b.txt": b"a file in a subdirectory\n",
    "photos/trip/c/d.txt": b"and one further down\n",
}
# The same three files shared as ./photos by another sendme-compatible implementation.
PHOTOS_HASH = "5f4f51f62ddbf573262350413348c4c905d5d10e5f87c72771c937948bcd569e"


def h(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def test_hash_seq_roundtrip_and_bad_length() -> None:
    hashes = [h(bytes([i])) for i in range(3)]
    seq = HashSeq(hashes)
    assert bytes(seq) == b"".join(hashes) and len(seq) == 3
    assert HashSeq.from_bytes(bytes(seq)) == seq
    assert seq.get(2) == hashes[2] and seq.get(3) is None and seq.get(-1) is None
    assert len(HashSeq.from_bytes(b"")) == 0
    for bad in (b"x", bytes(33), bytes(63)):
        with pytest.raises(DecodeError):
            HashSeq.from_bytes(bad)


def test_collection_known_answer() -> None:
    collection = Collection((name, h(data)) for name, data in sorted(FILES.items()))
    meta, seq = collection.to_blobs()
    # postcard {header: [u8; 13], names: Vec<String>}
    assert meta == HEADER + b"\x03" + b"".join(bytes([len(n)]) + n.encode() for n in sorted(FILES))
    assert HashSeq.from_bytes(seq)[0] == h(meta)
    assert collection.hash().hex() == PHOTOS_HASH == h(seq).hex()
    assert Collection.from_blobs(seq, meta) == collection
    assert collection.names == sorted(FILES)


def test_collection_mismatches_are_decode_errors() -> None:
    collection = Collection([("a", h(b"a")), ("b", h(b"b"))])
    meta, seq = collection.to_blobs()
    with pytest.raises(DecodeError):
        Collection.from_blobs(seq, meta + b"\x00")  # metadata does not match the first hash
    with pytest.raises(DecodeError):
        Collection.from_blobs(seq[:-32], meta)  # two names, one blob
    with pytest.raises(DecodeError):
        Collection.from_blobs(b"", meta)
    bad_header = b"CollectionV1." + meta[len(HEADER):]
    with pytest.raises(DecodeError):
        Collection.from_blobs(HashSeq([h(bad_header), h(b"a"), h(b"b")]), bad_header)


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/abs", "a//b", "a/", ".", "", "a\\b", "a\0b"])
def test_unsafe_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(DecodeError):
        export_path(tmp_path, name)
    meta = Collection().meta_bytes()[:-1] + b"\x01" + bytes([len(name.encode())]) + name.encode()
    with pytest.raises(DecodeError):
        Collection.from_blobs(HashSeq([h(meta), h(b"x")]), meta)


def test_export_path_stays_inside(tmp_path: Path) -> None:
    assert export_path(tmp_path, "photos/trip/b.txt") == tmp_path / "photos" / "trip" / "b.txt"


@given(st.binary(max_size=300))
def test_fuzz_meta(data: bytes) -> None:
    try:
        names = Collection.decode_meta(data)
    except DecodeError:
        return
    assert all(isinstance(n, str) for n in names)
