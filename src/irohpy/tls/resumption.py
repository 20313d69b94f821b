"""Session tickets of irohpy's own TLS: what a client keeps, what a server remembers.

A resumed handshake exchanges no certificates, so each ticket records the EndpointId that
authenticated in the session that issued it; both sides read the peer back from it.

A server's tickets are random identifiers into a bounded, single-use :class:`TicketStore`:
a ticket is consumed by the first ClientHello that presents it, which is also what keeps 0-RTT
data from being replayed into a second connection (RFC 8446 §8.1).
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from typing import Final

TICKET_LIFETIME: Final = 86400
"""Seconds a ticket may be used (RFC 8446 allows up to 7 days)."""
TICKET_CAPACITY: Final = 4096
MAX_EARLY_DATA: Final = 0xFFFFFFFF
"""QUIC's only allowed max_early_data_size (RFC 9001 §4.6.1)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ResumptionTicket:
    """A client's ticket for resuming with one server (whose EndpointId is ``peer_id``)."""

    ticket: bytes = dataclasses.field(repr=False)
    resumption_secret: bytes = dataclasses.field(repr=False)
    cipher_suite: int
    peer_id: bytes
    alpn: bytes
    age_add: int = dataclasses.field(repr=False)
    issued_at: float
    lifetime: int
    max_early_data_size: int | None
    transport_parameters: bytes | None = dataclasses.field(repr=False)
    """The server's transport parameters of that session, which 0-RTT data must respect."""

    def is_valid(self, now: float) -> bool:
        return self.issued_at <= now < self.issued_at + self.lifetime

    def obfuscated_age(self, now: float) -> int:
        return (int((now - self.issued_at) * 1000) + self.age_add) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSession:
    """What a server remembers of a session for the ticket it issued."""

    resumption_secret: bytes = dataclasses.field(repr=False)
    cipher_suite: int
    peer_id: bytes
    alpn: bytes
    issued_at: float
    lifetime: int
    max_early_data_size: int | None
    transport_parameters: bytes | None = dataclasses.field(default=None, repr=False)
    """Our transport parameters of that session: the limits a client's 0-RTT data assumes."""


class TicketStore:
    """Tickets a server issued, single use, at most ``capacity`` (oldest dropped first)."""

    def __init__(self, capacity: int = TICKET_CAPACITY) -> None:
        self.capacity = capacity
        self._sessions: OrderedDict[bytes, ServerSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def issue(self, session: ServerSession) -> bytes:
        ticket = os.urandom(32)
        self._sessions[ticket] = session
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
        return ticket

    def take(self, ticket: bytes, now: float) -> ServerSession | None:
        session = self._sessions.pop(ticket, None)
        if session is None or not session.issued_at <= now < session.issued_at + session.lifetime:
            return None
        return session


TICKETS_PER_SERVER: Final = 2
"""Tickets a client keeps per (server, ALPN); each resumes one connection."""


class TicketCache:
    """A client's tickets, keyed by (server EndpointId, ALPN), at most ``capacity`` keys.

    ``take`` removes the ticket it returns: the server accepts each ticket once, so using one
    twice would only cost a failed resumption.
    """

    def __init__(self, capacity: int = TICKET_CAPACITY) -> None:
        self.capacity = capacity
        self._tickets: OrderedDict[tuple[bytes, bytes], list[ResumptionTicket]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(tickets) for tickets in self._tickets.values())

    def put(self, ticket: ResumptionTicket) -> None:
        key = (ticket.peer_id, ticket.alpn)
        tickets = self._tickets.pop(key, [])
        tickets.append(ticket)
        self._tickets[key] = tickets[-TICKETS_PER_SERVER:]
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)

    def take(self, peer_id: bytes, alpns: list[bytes], now: float) -> ResumptionTicket | None:
        """The newest valid ticket of ``peer_id`` for the first of ``alpns`` that has one."""
        for alpn in alpns:
            tickets = self._tickets.get((peer_id, alpn))
            while tickets:
                ticket = tickets.pop()
                if not tickets:
                    del self._tickets[(peer_id, alpn)]
                if ticket.is_valid(now):
                    return ticket
        return None
