"""Tags: names that keep blobs alive through garbage collection.

A tag names a hash and its format. A HASH_SEQ tag also protects every blob the hash
sequence lists, so tagging a collection keeps its metadata and files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from irohpy.errors import DecodeError
from irohpy.protocols.blobs.hashseq import check_hash
from irohpy.protocols.blobs.ticket import BlobFormat


@dataclass(frozen=True)
class Tag:
    hash: bytes
    format: BlobFormat = BlobFormat.RAW

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", check_hash(self.hash))
        object.__setattr__(self, "format", BlobFormat(self.format))


def check_tag_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("a tag name is a non-empty str")
    return name


def encode_tags(tags: dict[str, Tag]) -> bytes:
    doc = {name: {"hash": tag.hash.hex(), "format": tag.format.name.lower()} for name, tag in sorted(tags.items())}
    return json.dumps(doc, indent=1).encode()


def decode_tags(data: bytes) -> dict[str, Tag]:
    """Parse a tags file; anything malformed is a DecodeError."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise DecodeError("tags file is not a JSON object")
        return {
            check_tag_name(name): Tag(bytes.fromhex(entry["hash"]), BlobFormat[entry["format"].upper()])
            for name, entry in doc.items()
        }
    except DecodeError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DecodeError(f"malformed tags file: {exc}") from None
