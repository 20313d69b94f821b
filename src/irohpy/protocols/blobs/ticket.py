"""BlobTicket (kind ``blob``): where to get a blob, its hash, and whether it is a hash sequence.

iroh-blobs still writes its legacy layout (``src/ticket.rs``): variant 0, then
``{endpoint_id, {relay_url: Option, direct_addresses: BTreeSet<SocketAddr>}}``, the format and
the hash. So a ticket carries at most one relay URL and no custom addresses; others are
dropped when encoding, exactly as iroh does.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import ClassVar, Self

from irohpy.base.addr import EndpointAddr, IpAddr, RelayAddr
from irohpy.base.keys import KEY_LENGTH, PublicKey
from irohpy.base.postcard import Reader, Writer
from irohpy.base.relay_url import RelayUrl
from irohpy.base.ticket import Ticket
from irohpy.errors import DecodeError
from irohpy.protocols.blobs.hashseq import HASH_LEN, check_hash

_VARIANT_0 = 0
_V4, _V6 = 0, 1


class BlobFormat(enum.IntEnum):
    """RAW: the hash names the content. HASH_SEQ: it names a hash sequence, fetched with its children."""

    RAW = 0
    HASH_SEQ = 1


def _write_socket_addr(writer: Writer, addr: IpAddr) -> None:
    packed = addr.host.packed
    writer.variant(_V4 if addr.host.version == 4 else _V6).fixed(packed, len(packed)).u16(addr.port)


def _read_socket_addr(reader: Reader) -> IpAddr:
    family = reader.variant()
    if family == _V4:
        return IpAddr(ipaddress.IPv4Address(reader.fixed(4)), reader.u16())
    if family == _V6:
        return IpAddr(ipaddress.IPv6Address(reader.fixed(16)), reader.u16())
    raise DecodeError(f"unknown socket address family variant {family}")


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
        relays = self.addr.relay_urls()
        writer = Writer().variant(_VARIANT_0).fixed(self.addr.id.to_bytes(), KEY_LENGTH)
        writer.option(relays[0] if relays else None, lambda url: writer.str_(str(url)))
        writer.seq(self.addr.ip_addrs(), lambda ip: _write_socket_addr(writer, ip))
        writer.variant(int(self.format)).fixed(self.hash, HASH_LEN)
        return writer.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        reader = Reader(data)
        variant = reader.variant()
        if variant != _VARIANT_0:
            raise DecodeError(f"unknown blob ticket format variant {variant}")
        endpoint_id = PublicKey.from_bytes(reader.fixed(KEY_LENGTH))
        relay = reader.option(lambda: RelayUrl.parse(reader.str_()))
        ips = reader.seq(lambda: _read_socket_addr(reader))
        fmt = reader.variant()
        if fmt not in (BlobFormat.RAW, BlobFormat.HASH_SEQ):
            raise DecodeError(f"unknown blob format variant {fmt}")
        digest = reader.fixed(HASH_LEN)
        reader.finish()
        addrs = [*([RelayAddr(relay)] if relay is not None else []), *ips]
        return cls(EndpointAddr(endpoint_id, frozenset(addrs)), digest, BlobFormat(fmt))
