"""pkarr signed packets and _iroh TXT attributes, checked against the rules of spec §7.1–7.2."""

from __future__ import annotations

import struct

import dns.message
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.addr import IpAddr
from irohpy.base.keys import SecretKey, Signature
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import InvalidSignature, IrohError, PkarrError
from irohpy.lookup.attrs import parse_txt_strings, to_txt_strings
from irohpy.lookup.base import EndpointData, EndpointInfo
from irohpy.lookup.pkarr import (
    HEADER_LEN, MAX_DNS_LEN, TTL, SignedPacket, next_timestamp_us,
)
from irohpy.lookup.signing import bep44_signable

SECRET = SecretKey(bytes([0x2A]) * 32)
Z32 = "df9sse9bp1nuftim3yhxiuk6w6r5hddsskjygpydux7esxjstioo"  # spec §1.2
RELAY = RelayUrl("https://relay.example/")
TS = 0x0102030405060708


def info(**kw: object) -> EndpointInfo:
    data = EndpointData(frozenset(kw.get("relays", [RELAY])), frozenset(kw.get("addrs", [])),  # type: ignore[call-overload]
                        kw.get("user_data"))  # type: ignore[arg-type]
    return EndpointInfo(SECRET.public(), data)


def test_z32_matches_spec_vector() -> None:
    assert SECRET.public().to_z32() == Z32


def test_header_layout_and_signed_bytes() -> None:
    packet = SignedPacket.sign(SECRET, info(), TS)
    raw = packet.to_bytes()
    assert raw[:32] == SECRET.public().to_bytes()
    assert raw[32:96] == packet.signature.to_bytes()
    assert raw[96:104] == bytes.fromhex("0102030405060708")
    assert raw[HEADER_LEN:] == packet.dns
    assert packet.to_relay_payload() == raw[32:]
    signed = b"3:seqi%de1:v%d:" % (TS, len(packet.dns)) + packet.dns
    assert bep44_signable(TS, packet.dns) == signed
    SECRET.public().verify(signed, packet.signature)


def test_dns_message_is_id0_reply_with_compressed_relative_names() -> None:
    addrs = [IpAddr.parse("192.0.2.1:7"), IpAddr.parse("[2001:db8::1]:9")]
    packet = SignedPacket.sign(SECRET, info(addrs=addrs, user_data="hello"), TS)
    wire = packet.dns
    qid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", wire)
    assert (qid, flags & 0x8000, qd, an, ns, ar) == (0, 0x8000, 0, 4, 0, 0)
    owner = b"\x05_iroh" + bytes([52]) + Z32.encode() + b"\x00"
    assert wire[12:12 + len(owner)] == owner  # z32 is the last label, then the root
    first = 12 + len(owner)
    assert struct.unpack_from(">HHIH", wire, first)[:3] == (16, 1, TTL) and TTL == 30
    assert wire.count(b"\xc0\x0c") == 3  # later owners are pointers to the first
    message = dns.message.from_wire(wire)
    texts = sorted(b"".join(r.strings).decode() for rrset in message.answer for r in rrset)
    assert texts == ["addr=192.0.2.1:7", "addr=[2001:db8::1]:9", "relay=https://relay.example/", "user-data=hello"]
    assert all(rrset.rdtype == dns.rdatatype.TXT and rrset.ttl == 30 for rrset in message.answer)
    assert SignedPacket.sign(SECRET, info(addrs=addrs, user_data="hello"), TS).dns == wire  # deterministic


def test_round_trips_and_endpoint_info() -> None:
    original = info(addrs=[IpAddr.parse("10.0.0.1:1234")], user_data="a=b")
    packet = SignedPacket.sign(SECRET, original, next_timestamp_us())
    for parsed in (SignedPacket.from_bytes(packet.to_bytes()),
                   SignedPacket.from_relay_payload(SECRET.public(), packet.to_relay_payload())):
        assert parsed == packet
        parsed.verify()
        got = parsed.endpoint_info()
        assert got.endpoint_id == SECRET.public()
        assert got.data.relay_urls == original.data.relay_urls
        assert got.data.ip_addrs == original.data.ip_addrs
        assert got.data.user_data == "a"  # split on '=' keeps two parts, as iroh does


def test_bad_signature_and_wrong_key() -> None:
    packet = SignedPacket.sign(SECRET, info(), TS)
    raw = bytearray(packet.to_bytes())
    raw[-1] ^= 1
    with pytest.raises(InvalidSignature):
        SignedPacket.from_bytes(bytes(raw)).verify()
    other = SecretKey(bytes([7]) * 32).public()
    with pytest.raises(InvalidSignature):
        SignedPacket.from_relay_payload(other, packet.to_relay_payload()).verify()
    forged = SignedPacket(packet.public_key, Signature(bytes(64)), TS, packet.dns)
    with pytest.raises(IrohError):
        forged.verify()


def test_ordering_and_monotonic_timestamps() -> None:
    a = SignedPacket.sign(SECRET, info(), 10)
    b = SignedPacket.sign(SECRET, info(), 11)
    assert b.newer_than(a) and not a.newer_than(b) and not a.newer_than(a)
    small = SignedPacket(a.public_key, a.signature, 10, b"\x00")
    large = SignedPacket(a.public_key, a.signature, 10, b"\x01")
    assert large.newer_than(small) and not small.newer_than(large)
    stamps = [next_timestamp_us() for _ in range(1000)]
    assert all(y >= x + 1 for x, y in zip(stamps, stamps[1:], strict=False))


def test_limits() -> None:
    many = [IpAddr.parse(f"10.0.{i // 250}.{i % 250}:1") for i in range(60)]
    with pytest.raises(PkarrError):
        SignedPacket.sign(SECRET, info(addrs=many), TS)
    packet = SignedPacket.sign(SECRET, info(), TS)
    with pytest.raises(PkarrError):
        SignedPacket.from_relay_payload(SECRET.public(), packet.to_relay_payload() + bytes(MAX_DNS_LEN))
    with pytest.raises(PkarrError):
        SignedPacket.from_bytes(packet.to_bytes()[:HEADER_LEN - 1])
    with pytest.raises(PkarrError):
        SignedPacket.sign(SECRET, info(user_data="x" * 246), TS)
    with pytest.raises(PkarrError):
        SignedPacket.sign(SecretKey(bytes([1]) * 32), info(), TS)


def test_attrs_rules() -> None:
    data = EndpointData(frozenset([RELAY]), frozenset([IpAddr.parse("[::1]:5")]), "u")
    assert parse_txt_strings(to_txt_strings(data)) == data
    with pytest.raises(PkarrError):
        parse_txt_strings(["relay=https://relay.example/", "color=blue"])
    with pytest.raises(PkarrError):
        parse_txt_strings(["no-equals-sign"])
    assert parse_txt_strings(["addr=1_abcd", "user-data=" + "x" * 246]) == EndpointData()


_TXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["relay", "addr", "user-data"]), st.text(max_size=60)),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_fuzz_from_bytes(data: bytes) -> None:
    try:
        packet = SignedPacket.from_bytes(data)
        packet.verify()
    except IrohError:
        return


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_relay_payload_and_dns(dns_tail: bytes) -> None:
    body = bytes(64) + struct.pack(">Q", 1) + dns_tail
    try:
        packet = SignedPacket.from_relay_payload(SECRET.public(), body)
        packet.endpoint_info()
    except IrohError:
        return


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["relay=https://a.example/", "addr=1.2.3.4:5", "user-data=x"]), max_size=5),
       st.integers(0, 40))
def test_fuzz_mutated_dns(strings: list[str], flip: int) -> None:
    data = parse_txt_strings(strings)
    dns_bytes = bytearray(SignedPacket.sign(SECRET, EndpointInfo(SECRET.public(), data), TS).dns)
    if dns_bytes:
        dns_bytes[flip % len(dns_bytes)] ^= 0xFF
    packet = SignedPacket(SECRET.public(), Signature(bytes(64)), TS, bytes(dns_bytes))
    try:
        packet.endpoint_info()
    except IrohError:
        return


@settings(max_examples=300, deadline=None)
@given(st.lists(_TXT, max_size=6))
def test_fuzz_attrs(strings: list[str]) -> None:
    try:
        parse_txt_strings(strings)
    except IrohError:
        return
