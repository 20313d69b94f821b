"""BlobTicket (kind ``blob``): where to get a blob, its hash, and whether it is a hash sequence.

iroh-blobs still writes its legacy layout (``src/ticket.rs``): variant 0, then
``{endpoint_id, {relay_url: Option, direct_addresses: BTreeSet<SocketAddr>}}``, the format and
the hash. So a ticket carries at most one relay URL and no custom addresses; others are
dropped when encoding, exactly as iroh does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Self

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import KEY_LENGTH, PublicKey
from irohpy.base.postcard import Reader, Writer
from irohpy.base.ticket import Ticket
from irohpy.errors import DecodeError
from irohpy.protocols.blobs.hashseq import HASH_LEN, check_hash

_VARIANT_0 = 0


class BlobFormat(enum.IntEnum):
    """RAW: the hash names the content. HASH_SEQ: it names a hash sequence, fetched with its children."""

    RAW = 0
    HASH_SEQ = 1


@dataclass(frozen=True)
class BlobTicket(Ticket):
    """Everything ``irohpy receive`` needs: the provider's address, the format and the hash."""

    KIND: ClassVar[str] = "blob"

    addr: EndpointAddr
    hash: bytes
    format: BlobFormat = BlobFormat.RAW

    def __post_init__(self) -> None:
        if not isinstance(self.addr, EndpointAddr):
            raise TypeError(f"addr must be an EndpointAddr, not {type(self.addr).__name__}")
        object.__setattr__(self, "hash", check_hash(self.hash))
        object.__setattr__(self, "format", BlobFormat(self.format))

    @property
    def recursive(self) -> bool:
        """True for a hash sequence: the receiver fetches its children too."""
        return self.format is BlobFormat.HASH_SEQ

    def to_bytes(self) -> bytes:
        writer = Writer().variant(_VARIANT_0).fixed(self.addr.id.to_bytes(), KEY_LENGTH)
        self.addr.encode_addr_info(writer)
        writer.variant(int(self.format)).fixed(self.hash, HASH_LEN)
        return writer.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        reader = Reader(data)
        variant = reader.variant()
        if variant != _VARIANT_0:
            raise DecodeError(f"unknown blob ticket format variant {variant}")
        addr = EndpointAddr.decode_addr_info(PublicKey.from_bytes(reader.fixed(KEY_LENGTH)), reader)
        fmt = reader.variant()
        if fmt not in (BlobFormat.RAW, BlobFormat.HASH_SEQ):
            raise DecodeError(f"unknown blob format variant {fmt}")
        digest = reader.fixed(HASH_LEN)
        reader.finish()
        return cls(addr, digest, BlobFormat(fmt))
