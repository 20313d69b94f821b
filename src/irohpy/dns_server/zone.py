"""Answering DNS queries from stored signed packets (sans-IO: bytes in, bytes out).

A packet's names end in its z32 key; the server appends each configured origin, so
``_iroh.<z32>`` in the packet answers ``_iroh.<z32>.<origin>``. SOA and NS records inside
packets are ignored: the zone's authority is this server, not the publisher.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from irohpy.base.keys import PublicKey
from irohpy.errors import IrohError
from irohpy.lookup.pkarr import SignedPacket, parse_dns

UDP_PAYLOAD = 512
_IGNORED = frozenset({dns.rdatatype.SOA, dns.rdatatype.NS})

Lookup = Callable[[PublicKey], SignedPacket | None]


def _formerr(wire: bytes) -> bytes | None:
    """A bare FORMERR with the query's id, or None (drop) when there is not even a header."""
    if len(wire) < 12:
        return None
    (qid,) = struct.unpack_from(">H", wire)
    return struct.pack(">HHHHHH", qid, dns.flags.QR | dns.rcode.FORMERR, 0, 0, 0, 0)


def _key_of(relative: dns.name.Name) -> PublicKey | None:
    if not relative.labels:
        return None
    try:
        return PublicKey.from_z32(relative.labels[-1].decode("ascii").lower())
    except (IrohError, UnicodeDecodeError):
        return None


def _records(packet: SignedPacket, origin: dns.name.Name) -> list[dns.rrset.RRset]:
    """The packet's answers, renamed into ``origin``; names not ending in the key are skipped."""
    z32 = packet.public_key.to_z32().encode()
    out = []
    for rrset in parse_dns(packet.dns).answer:
        labels = tuple(label.lower() for label in rrset.name.labels if label)
        if rrset.rdtype in _IGNORED or not labels or labels[-1] != z32:
            continue
        renamed = dns.rrset.RRset(dns.name.Name(labels + origin.labels), rrset.rdclass, rrset.rdtype)
        renamed.update(rrset)
        out.append(renamed)
    return out


def answer(wire: bytes, origins: tuple[dns.name.Name, ...], lookup: Lookup, *,
           udp: bool) -> tuple[bytes | None, str]:
    """The response to one query and a one-word result for metrics (``answer``, ``nxdomain``, ...).

    Malformed queries get FORMERR (or nothing, if not even the header parses); responses are
    never answered, so two servers cannot loop.
    """
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, TypeError, IndexError, KeyError, struct.error):
        reply = _formerr(wire)
        return reply, "formerr" if reply is not None else "dropped"
    if query.flags & dns.flags.QR:
        return None, "dropped"
    response = dns.message.make_response(query)
    # Over UDP, answers beyond the client's payload size are truncated (TC) so it retries over TCP.
    max_size = (max(UDP_PAYLOAD, query.payload) if query.edns >= 0 else UDP_PAYLOAD) if udp else 65535
    response.flags |= dns.flags.AA
    response.flags &= ~dns.flags.RA
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR if query.opcode() == dns.opcode.QUERY else dns.rcode.NOTIMP)
        return response.to_wire(max_size=max_size, prefer_truncation=True), "formerr"
    question = query.question[0]
    rcode, result = dns.rcode.NXDOMAIN, "nxdomain"
    for origin in origins:
        if not question.name.is_subdomain(origin):
            continue
        key = _key_of(question.name.relativize(origin))
        packet = lookup(key) if key is not None else None
        if packet is None:
            continue
        try:
            records = _records(packet, origin)
        except IrohError:
            continue
        # A name with records below it but none of its own exists too (an empty non-terminal).
        if any(r.name.is_subdomain(question.name) for r in records):
            rcode, result = dns.rcode.NOERROR, "answer"
            response.answer = [r for r in records if r.name == question.name
                               and question.rdtype in (r.rdtype, dns.rdatatype.ANY)
                               and question.rdclass in (r.rdclass, dns.rdataclass.ANY)]
            break
    response.set_rcode(rcode)
    return response.to_wire(max_size=max_size, prefer_truncation=True), result
