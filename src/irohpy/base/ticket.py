"""Tickets: a kind prefix, then the lowercase unpadded RFC 4648 base32 of a postcard payload.

This is iroh-tickets' string form, so an ``EndpointTicket`` printed here parses in Rust iroh
and the other way round. To define your own kind, subclass :class:`Ticket`, set ``KIND`` and
implement ``to_bytes``/``from_bytes`` with :mod:`irohpy.base.postcard`::

    @dataclass(frozen=True)
    class RoomTicket(Ticket):
        KIND = "room"
        name: str

        def to_bytes(self) -> bytes:
            return Writer().str_(self.name).finish()

        @classmethod
        def from_bytes(cls, data: bytes) -> RoomTicket:
            reader = Reader(data)
            ticket = cls(reader.str_())
            reader.finish()  # refuse trailing bytes
            return ticket

Defining the class registers the kind, so ``Ticket.parse_any`` recognises its strings;
``RoomTicket.parse`` accepts only its own kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import decode_base32, encode_base32
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, TicketError

_KINDS: dict[str, type[Ticket]] = {}


def _full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Ticket(ABC):
    """Base of every ticket kind; ``str(ticket)`` is the ticket text."""

    KIND: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if kind is None:
            return
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"{cls.__qualname__}.KIND must be a non-empty str")
        existing = _KINDS.get(kind)
        # The same class defined again (a reload, a dataclass rebuilt with slots) takes over.
        if existing is not None and _full_name(existing) != _full_name(cls):
            raise TypeError(f"ticket kind {kind!r} is already taken by {_full_name(existing)}")
        _KINDS[kind] = cls

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The postcard payload."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a payload; raise DecodeError (or a subclass) if it is not one."""

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a ticket of this kind. The prefix is case-sensitive, the base32 is not."""
        kind = getattr(cls, "KIND", None)
        if kind is None:
            raise TypeError(f"{cls.__qualname__} has no KIND; use Ticket.parse_any")
        if not isinstance(text, str):
            raise TicketError(f"a ticket must be str, not {type(text).__name__}")
        if not text.startswith(kind):
            raise TicketError(f"not {_article(kind)} {kind!r} ticket: it does not start with {kind!r}")
        payload = text[len(kind) :]
        if not payload:
            raise TicketError(f"{kind!r} ticket is empty after its prefix")
        try:
            data = decode_base32(payload)
        except DecodeError as exc:
            raise TicketError(f"{kind!r} ticket is not valid base32: {exc}") from exc
        try:
            return cls.from_bytes(data)
        except TicketError:
            raise
        except DecodeError as exc:
            raise TicketError(f"{kind!r} ticket has an invalid payload: {exc}") from exc

    @staticmethod
    def parse_any(text: str) -> Ticket:
        """Parse a ticket of any registered kind.

        Kinds may be prefixes of each other ("end" and "endpoint"), and a payload may happen
        to start with letters that complete a longer kind, so the longest matching kind is
        tried first and shorter ones after it.
        """
        if not isinstance(text, str):
            raise TicketError(f"a ticket must be str, not {type(text).__name__}")
        candidates = sorted((k for k in _KINDS if text.startswith(k)), key=len, reverse=True)
        if not candidates:
            raise TicketError(f"unknown ticket kind; known kinds: {', '.join(sorted(_KINDS))}")
        errors: list[TicketError] = []
        for kind in candidates:
            try:
                return _KINDS[kind].parse(text)
            except TicketError as exc:
                errors.append(exc)
        raise errors[0]

    def __str__(self) -> str:
        return self.KIND + encode_base32(self.to_bytes())


_WIRE_VARIANT_1 = 0


@dataclass(frozen=True)
class EndpointTicket(Ticket):
    """An EndpointAddr as a string: everything a peer needs to dial this endpoint."""

    KIND: ClassVar[str] = "endpoint"

    addr: EndpointAddr

    def __post_init__(self) -> None:
        if not isinstance(self.addr, EndpointAddr):
            raise TypeError(f"addr must be an EndpointAddr, not {type(self.addr).__name__}")

    @classmethod
    def from_addr(cls, addr: EndpointAddr) -> Self:
        return cls(addr)

    def endpoint_addr(self) -> EndpointAddr:
        return self.addr

    def to_bytes(self) -> bytes:
        writer = Writer().variant(_WIRE_VARIANT_1)
        self.addr.encode_postcard(writer)
        return writer.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        reader = Reader(data)
        variant = reader.variant()
        if variant != _WIRE_VARIANT_1:
            raise DecodeError(f"unknown endpoint ticket format variant {variant}")
        addr = EndpointAddr.decode_postcard(reader)
        reader.finish()
        return cls(addr)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
