"""pkarr signed packets as iroh writes them (sans-IO).

Layout: ``public_key (32) || signature (64) || timestamp_us (u64 BE) || DNS message``. The
signature covers the BEP 44 bencoding of (timestamp, DNS message). The DNS message is a reply
with id 0 whose answers are TXT records ``_iroh.<z32>`` (TTL 30), one ``key=value`` each.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from irohpy.base.keys import PublicKey, SecretKey, Signature
from irohpy.errors import PkarrError
from irohpy.lookup.attrs import parse_txt_strings, to_txt_strings
from irohpy.lookup.base import EndpointInfo
from irohpy.lookup.signing import bep44_signable

KEY_LEN = 32
SIG_LEN = 64
HEADER_LEN = KEY_LEN + SIG_LEN + 8
MAX_DNS_LEN = 1000
MAX_PACKET_LEN = HEADER_LEN + MAX_DNS_LEN
TTL = 30
IROH_LABEL = "_iroh"
_TIMESTAMP = struct.Struct(">Q")

_clock_lock = threading.Lock()
_last_us = 0


def next_timestamp_us() -> int:
    """Wall-clock µs, but at least one more than the last value this process handed out.

    Relays keep only a strictly newer packet, so two publishes in the same µs must still order.
    """
    global _last_us
    with _clock_lock:
        _last_us = max(time.time_ns() // 1000, _last_us + 1)
        return _last_us


def owner_name(public_key: PublicKey) -> dns.name.Name:
    """``_iroh.<z32>``: the z32 key is the last label, so names read as relative to it."""
    return dns.name.Name((IROH_LABEL.encode(), public_key.to_z32().encode(), b""))


def build_dns(info: EndpointInfo) -> bytes:
    """The DNS reply iroh signs: id 0, one TXT record (IN, TTL 30) per attribute, names compressed."""
    message = dns.message.Message(id=0)
    message.flags = dns.flags.QR
    strings = to_txt_strings(info.data)
    if strings:
        rrset = dns.rrset.RRset(owner_name(info.endpoint_id), dns.rdataclass.IN, dns.rdatatype.TXT)
        rrset.update_ttl(TTL)
        for text in strings:
            rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [text.encode()]))
        message.answer.append(rrset)
    return message.to_wire(want_shuffle=False)


def parse_dns(data: bytes) -> dns.message.Message:
    """Parse a DNS message, turning any parser failure into PkarrError."""
    try:
        return dns.message.from_wire(data, ignore_trailing=False)
    # dnspython raises a spread of types (FormError, ValueError, UnicodeError, ...) on bad input.
    except (dns.exception.DNSException, ValueError, TypeError, IndexError, KeyError, struct.error) as exc:
        raise PkarrError(f"the packet's DNS message does not parse: {type(exc).__name__}") from None


def _is_iroh_name(name: dns.name.Name, z32: bytes) -> bool:
    """``_iroh.<z32>`` in full, or with a zone appended after the z32 label."""
    labels = tuple(label.lower() for label in name.labels)
    return labels[:2] == (IROH_LABEL.encode(), z32)


@dataclass(frozen=True)
class SignedPacket:
    public_key: PublicKey
    signature: Signature
    timestamp_us: int
    dns: bytes

    @classmethod
    def sign(cls, secret: SecretKey, info: EndpointInfo, timestamp_us: int) -> SignedPacket:
        if info.endpoint_id != secret.public():
            raise PkarrError("the endpoint info is for another key than the signing one")
        message = build_dns(info)
        if len(message) > MAX_DNS_LEN:
            raise PkarrError(f"the DNS message is {len(message)} bytes, more than {MAX_DNS_LEN}")
        _check_timestamp(timestamp_us)
        signature = secret.sign(bep44_signable(timestamp_us, message))
        return cls(secret.public(), signature, timestamp_us, message)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPacket:
        """The full form (key first); the signature is not checked here, call ``verify``."""
        data = bytes(data)
        if len(data) < HEADER_LEN:
            raise PkarrError(f"a signed packet has at least {HEADER_LEN} bytes, got {len(data)}")
        return cls.from_relay_payload(PublicKey.from_bytes(data[:KEY_LEN]), data[KEY_LEN:])

    @classmethod
    def from_relay_payload(cls, public_key: PublicKey, body: bytes) -> SignedPacket:
        """The pkarr relay's PUT/GET body: the packet without its key (the key is in the URL)."""
        body = bytes(body)
        if len(body) < HEADER_LEN - KEY_LEN:
            raise PkarrError(f"a pkarr payload has at least {HEADER_LEN - KEY_LEN} bytes, got {len(body)}")
        if len(body) > MAX_PACKET_LEN - KEY_LEN:
            raise PkarrError(f"the DNS message is longer than {MAX_DNS_LEN} bytes")
        signature = Signature.from_bytes(body[:SIG_LEN])
        (timestamp,) = _TIMESTAMP.unpack_from(body, SIG_LEN)
        return cls(public_key, signature, timestamp, body[SIG_LEN + 8:])

    def to_relay_payload(self) -> bytes:
        return self.signature.to_bytes() + _TIMESTAMP.pack(self.timestamp_us) + self.dns

    def to_bytes(self) -> bytes:
        return self.public_key.to_bytes() + self.to_relay_payload()

    def verify(self) -> None:
        """Raise InvalidSignature unless the key signed (timestamp, DNS message)."""
        self.public_key.verify(bep44_signable(self.timestamp_us, self.dns), self.signature)

    def txt_records(self) -> Iterator[tuple[dns.name.Name, int, list[bytes]]]:
        """(owner name, TTL, character-strings) of every TXT answer, SOA/NS and the rest ignored."""
        for rrset in parse_dns(self.dns).answer:
            if rrset.rdtype == dns.rdatatype.TXT and rrset.rdclass == dns.rdataclass.IN:
                for rdata in rrset:
                    yield rrset.name, rrset.ttl, list(rdata.strings)

    def endpoint_info(self) -> EndpointInfo:
        """The published data: the ``_iroh.<z32>`` TXT answers read as iroh attributes."""
        z32 = self.public_key.to_z32().encode()
        strings = []
        for name, _, parts in self.txt_records():
            if _is_iroh_name(name, z32):
                try:
                    strings.append(b"".join(parts).decode())
                except UnicodeDecodeError:
                    raise PkarrError("an _iroh TXT string is not UTF-8") from None
        return EndpointInfo(self.public_key, parse_txt_strings(strings))

    def newer_than(self, other: SignedPacket) -> bool:
        """iroh's order: the later timestamp, then the lexicographically larger DNS message."""
        return (self.timestamp_us, self.dns) > (other.timestamp_us, other.dns)


def _check_timestamp(timestamp_us: int) -> None:
    if isinstance(timestamp_us, bool) or not isinstance(timestamp_us, int) or not 0 <= timestamp_us < 1 << 64:
        raise PkarrError("a pkarr timestamp is a u64 of microseconds")

