"""QUIC Address Discovery (QAD, draft-seemann-quic-address-discovery as noq speaks it).

Each side may declare a role in transport parameter ``0x9f81a176``: send observed addresses,
receive them, or both. OBSERVED_ADDRESS frames (``0x9f81a6`` v4, ``0x9f81a7`` v6: sequence
number, IP, port) flow only where the sender's role sends and the receiver's role receives;
one that arrives otherwise is a PROTOCOL_VIOLATION. The frame codec is in
:mod:`irohpy.quic.frames`; this module holds what a connection does with it:

- a sender reports the address it sees the peer's packets come from, once the peer's role is
  known, and again with a new sequence number when that address changes or a report is lost;
- a receiver keeps the newest report: a sequence number not above the last one is stale and
  ignored, a repeat of the same address only advances the sequence, a new address is an
  :class:`ObservedAddressReceived` event.

Addresses are ``(host, port)`` pairs as a UDP socket names them; a sender holds back while its
peer is known only by another kind of address (the socket layer's mapped addresses), which
has nothing to report. Relays use it (``iroh-relay``'s QAD service on UDP 7842) so endpoints
learn their public address as peers will see it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from irohpy.errors import QuicError
from irohpy.quic.frames import FRAME_OBSERVED_ADDRESS_V4, FRAME_OBSERVED_ADDRESS_V6, ObservedAddress
from irohpy.quic.transport_params import ROLE_BOTH, ROLE_RECEIVE, ROLE_SEND

#: Our role when QAD is off: no transport parameter, no frames either way.
ROLE_NONE: Final = -1


def sends(role: int) -> bool:
    return role == ROLE_SEND or role == ROLE_BOTH


def receives(role: int) -> bool:
    return role == ROLE_RECEIVE or role == ROLE_BOTH


def check_role(role: int | None) -> int:
    """A configured role as this module's int (``ROLE_NONE`` for None); rejects unknown values."""
    if role is None:
        return ROLE_NONE
    if role != ROLE_SEND and role != ROLE_RECEIVE and role != ROLE_BOTH:
        raise QuicError(f"unknown observed address role {role}", error_code=QuicError.INTERNAL_ERROR)
    return role


def encode_address(addr: object) -> tuple[bytes, int] | None:
    """``(raw IP, port)`` of a ``(host, port)`` socket address; an IPv4-mapped IPv6 address (a
    dual-stack socket's view of an IPv4 peer) is reported as the IPv4 address it is. None for
    anything else."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    host = addr[0]
    port = addr[1]
    if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.packed, port
    return ip.packed, port


@dataclass(slots=True)
class ObservedAddressReceived:
    """The peer reports a new address it sees us at (QAD): our reflexive address on this path."""

    host: str
    port: int
    sequence: int


class AddressDiscovery:
    """One connection's QAD state; :class:`~irohpy.quic.connection.QuicConnection` drives it."""

    __slots__ = ("role", "peer_role", "_report", "_peer_addr", "_reported", "_next_seq", "_pending", "_last_seq", "_received")

    def __init__(self, role: int | None) -> None:
        self.role = check_role(role)
        #: The peer's role from its transport parameters (``ROLE_NONE`` until then, or if absent).
        self.peer_role = ROLE_NONE
        #: We send reports: our role sends and the peer's receives.
        self._report = False
        #: The peer's address as packets show it, and the one our last report named.
        self._peer_addr: tuple[bytes, int] | None = None
        self._reported: tuple[bytes, int] | None = None
        self._next_seq = 0
        self._pending = False
        #: The sequence number of the newest report we took (-1: none yet).
        self._last_seq = -1
        self._received: tuple[bytes, int] | None = None

    @property
    def transport_parameter(self) -> int | None:
        """Our role as the transport parameter carries it (None: not sent)."""
        return None if self.role == ROLE_NONE else self.role

    def on_peer_role(self, peer_role: int | None) -> None:
        """The peer's transport parameters arrived: decide whether we report."""
        self.peer_role = check_role(peer_role)
        self._report = sends(self.role) and receives(self.peer_role)
        if self._report and self._peer_addr is not None:
            self._pending = True

    def on_peer_address(self, addr: object) -> None:
        """An authenticated packet came from ``addr``: report it if it is new."""
        if self.role == ROLE_NONE:
            return
        encoded = encode_address(addr)
        if encoded is None or encoded == self._peer_addr:
            return
        self._peer_addr = encoded
        if self._report and encoded != self._reported:
            self._pending = True

    @property
    def wants_send(self) -> bool:
        return self._pending

    def take_frame(self) -> ObservedAddress | None:
        """The report to send now, each with the next sequence number; None if nothing is due."""
        addr = self._peer_addr
        if not self._pending or addr is None:
            self._pending = False
            return None
        self._pending = False
        frame = ObservedAddress(self._next_seq, addr[0], addr[1])
        self._next_seq += 1
        self._reported = addr
        return frame

    def on_lost(self) -> None:
        """A packet with a report was lost: report again (the current address, a new number)."""
        if self._report:
            self._pending = True

    def on_frame(self, frame: ObservedAddress) -> ObservedAddressReceived | None:
        """A report from the peer; the event when it names a new address, else None."""
        if not (sends(self.peer_role) and receives(self.role)):
            raise QuicError(
                "OBSERVED_ADDRESS not negotiated",
                error_code=QuicError.PROTOCOL_VIOLATION,
                frame_type=FRAME_OBSERVED_ADDRESS_V4 if len(frame.ip) == 4 else FRAME_OBSERVED_ADDRESS_V6,
            )
        if frame.sequence <= self._last_seq:
            return None
        self._last_seq = frame.sequence
        addr = (frame.ip, frame.port)
        if addr == self._received:
            return None
        self._received = addr
        return ObservedAddressReceived(str(ipaddress.ip_address(frame.ip)), frame.port, frame.sequence)
