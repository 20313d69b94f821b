"""DocTicket (kind ``doc``): a capability for a document plus the peers to sync it with.

postcard, as iroh-docs ``ticket.rs``: variant 0, then ``Capability`` (``Write(NamespaceSecret)`` =
0 with the secret as 32 length-prefixed bytes, ``Read(NamespaceId)`` = 1 with 32 raw bytes), then
``Vec<EndpointAddr>``, which must not be empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from irohpy.base.addr import EndpointAddr
from irohpy.base.postcard import Reader, Writer
from irohpy.base.ticket import Ticket
from irohpy.errors import DecodeError
from irohpy.protocols.docs.keys import NamespaceId, NamespaceSecret

_VARIANT_0 = 0
_WRITE = 0
_READ = 1


@dataclass(frozen=True)
class DocTicket(Ticket):
    """``capability`` is a NamespaceSecret (write) or a NamespaceId (read)."""

    KIND: ClassVar[str] = "doc"

    capability: NamespaceSecret | NamespaceId
    nodes: tuple[EndpointAddr, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.capability, NamespaceSecret | NamespaceId):
            raise TypeError("capability must be a NamespaceSecret or a NamespaceId")
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise ValueError("a doc ticket needs at least one peer")

    @property
    def namespace(self) -> NamespaceId:
        cap = self.capability
        return cap.id() if isinstance(cap, NamespaceSecret) else cap

    @property
    def writable(self) -> bool:
        return isinstance(self.capability, NamespaceSecret)

    def to_bytes(self) -> bytes:
        w = Writer().variant(_VARIANT_0)
        if isinstance(self.capability, NamespaceSecret):
            w.variant(_WRITE).bytes_(self.capability.to_bytes())
        else:
            w.variant(_READ).fixed(self.capability.to_bytes(), 32)
        w.seq(self.nodes, lambda addr: addr.encode_postcard(w))
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data)
        if (variant := r.variant()) != _VARIANT_0:
            raise DecodeError(f"unknown doc ticket format variant {variant}")
        kind = r.variant()
        capability: NamespaceSecret | NamespaceId
        if kind == _WRITE:
            raw = r.bytes_()
            if len(raw) != 32:
                raise DecodeError(f"namespace secret must be 32 bytes, got {len(raw)}")
            capability = NamespaceSecret(raw)
        elif kind == _READ:
            capability = NamespaceId(r.fixed(32))
        else:
            raise DecodeError(f"unknown capability kind {kind}")
        nodes = tuple(r.seq(lambda: EndpointAddr.decode_postcard(r)))
        r.finish()
        if not nodes:
            raise DecodeError("a doc ticket needs at least one peer")
        return cls(capability, nodes)
