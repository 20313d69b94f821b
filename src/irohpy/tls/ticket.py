"""Session tickets that remember whose they are.

A resumed TLS 1.3 handshake exchanges no certificates, so the only proof of the peer's identity
is the earlier handshake that produced the ticket. Each ticket therefore records the peer's
EndpointId: a client resumes only with a ticket for the id it dials, and both sides read the
peer id back from the ticket when a session resumes.
"""

from __future__ import annotations

import dataclasses

from aioquic.tls import SessionTicket


@dataclasses.dataclass
class IrohSessionTicket(SessionTicket):
    """A :class:`SessionTicket` plus the EndpointId of the peer that authenticated in its session."""

    peer_id: bytes | None = None


def with_peer(ticket: SessionTicket, peer_id: bytes | None) -> IrohSessionTicket:
    """A copy of ``ticket`` tagged with ``peer_id``."""
    values = {f.name: getattr(ticket, f.name) for f in dataclasses.fields(SessionTicket)}
    return IrohSessionTicket(**values, peer_id=peer_id)


def ticket_peer(ticket: SessionTicket | None) -> bytes | None:
    """The EndpointId a ticket belongs to, or None for a ticket not issued through irohpy.tls."""
    if isinstance(ticket, IrohSessionTicket):
        return ticket.peer_id
    return None
