"""Identities, addresses, relay URLs and tickets: the value types every other layer shares.

Everything here is pure (no I/O besides key files) and byte-compatible with iroh-base and
iroh-tickets.
"""

from __future__ import annotations

from irohpy.base.addr import CustomAddr, EndpointAddr, IpAddr, RelayAddr, TransportAddr
from irohpy.base.keys import EndpointId, PublicKey, SecretKey, Signature
from irohpy.base.relay_url import RelayUrl
from irohpy.base.ticket import EndpointTicket, Ticket

__all__ = [
    "CustomAddr",
    "EndpointAddr",
    "EndpointId",
    "EndpointTicket",
    "IpAddr",
    "PublicKey",
    "RelayAddr",
    "RelayUrl",
    "SecretKey",
    "Signature",
    "Ticket",
    "TransportAddr",
]
