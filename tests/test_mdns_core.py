"""iroh's mDNS format (wire spec §7.4), sans-IO: what we send and how we read what others send."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.addr import IpAddr
from irohpy.base.keys import SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import BindError, IrohError, MdnsError
from irohpy.lookup.base import AddressLookup, EndpointData, EndpointInfo
from irohpy.lookup.mdns import (
    MdnsAnnouncements,
    MdnsLookup,
    MdnsQuery,
    PeerTable,
    build_query,
    build_response,
    parse_message,
    peer_label,
)

KEY = SecretKey(bytes(range(32))).public()
OTHER = SecretKey(bytes(range(1, 33))).public()
RELAY_A = RelayUrl("https://a.relay.example/")
RELAY_B = RelayUrl("https://b.relay.example/")
DATA = EndpointData(
    frozenset({RELAY_B, RELAY_A}),
    frozenset({IpAddr("10.0.0.1", 4433), IpAddr("fe80::1", 4433), IpAddr("10.0.0.2", 7000)}),
    "hello=world",
)


def _decode(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire)


def test_peer_label_is_lowercase_base32() -> None:
    label = peer_label(KEY)
    assert len(label) == 52 and label == label.lower() and label == KEY.to_base32()


def test_query_is_a_ptr_question_for_the_service() -> None:
    msg = _decode(build_query())
    assert not msg.flags & dns.flags.QR
    assert len(msg.question) == 1
    q = msg.question[0]
    assert (q.name, q.rdtype, q.rdclass) == (
        dns.name.from_text("_irohv1._udp.local."),
        dns.rdatatype.PTR,
        dns.rdataclass.IN,
    )
    assert parse_message(build_query()) == MdnsQuery()


def test_response_layout_matches_iroh() -> None:
    msg = _decode(build_response(KEY, DATA) or b"")
    label = KEY.to_base32()
    instance = dns.name.from_text(f"{label}._irohv1._udp.local.")
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA
    assert not msg.question and not msg.authority
    records = [(rr, rd) for rr in msg.answer + msg.additional for rd in rr]
    assert all(rr.ttl == 0 for rr, _ in records)
    assert all(rr.rdtype != dns.rdatatype.PTR for rr, _ in records)
    srvs = sorted((rd.port, rd.target.to_text()) for rr, rd in records if rr.rdtype == dns.rdatatype.SRV)
    assert srvs == [(4433, f"{label}-4433.local."), (7000, f"{label}-7000.local.")]
    assert all(rr.name == instance for rr in msg.answer)
    extra = sorted((rr.name.to_text(), rd.address) for rr in msg.additional for rd in rr)
    assert extra == [
        (f"{label}-4433.local.", "10.0.0.1"),
        (f"{label}-4433.local.", "fe80::1"),
        (f"{label}-7000.local.", "10.0.0.2"),
    ]
    (txt,) = [rd for rr, rd in records if rr.rdtype == dns.rdatatype.TXT]
    assert list(txt.strings) == [b"relay=https://a.relay.example/", b"user-data=hello=world"]


def test_response_round_trips() -> None:
    parsed = parse_message(build_response(KEY, DATA) or b"")
    assert parsed == MdnsAnnouncements((EndpointInfo(KEY, EndpointData(frozenset({RELAY_A}), DATA.ip_addrs, DATA.user_data)),))


def test_nothing_to_announce() -> None:
    assert build_response(KEY, EndpointData()) is None
    relay_only = parse_message(build_response(KEY, EndpointData(frozenset({RELAY_A}))) or b"")
    assert relay_only == MdnsAnnouncements((EndpointInfo(KEY, EndpointData(frozenset({RELAY_A}))),))


def test_foreign_records_are_ignored() -> None:
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA
    msg.answer.append(dns.rrset.from_text("notakey._irohv1._udp.local.", 0, "IN", "TXT", '"relay=https://x.example/"'))
    msg.answer.append(dns.rrset.from_text("printer._ipp._tcp.local.", 120, "IN", "SRV", "0 0 631 printer.local."))
    msg.additional.append(dns.rrset.from_text("printer.local.", 120, "IN", "A", "10.0.0.9"))
    assert parse_message(msg.to_wire()) == MdnsAnnouncements(())
    other_query = dns.message.make_query("_http._tcp.local.", "PTR")
    assert parse_message(other_query.to_wire()) is None


def test_unknown_txt_keys_and_bad_relays_are_skipped() -> None:
    name = f"{KEY.to_base32()}._irohv1._udp.local."
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR
    msg.answer.append(dns.rrset.from_text(name, 0, "IN", "TXT", '"relay=notaurl" "x=y" "bare" "user-data=u"'))
    assert parse_message(msg.to_wire()) == MdnsAnnouncements((EndpointInfo(KEY, EndpointData(user_data="u")),))


def test_garbage_raises_mdns_error() -> None:
    with pytest.raises(MdnsError):
        parse_message(b"\x00\x01")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_parser_fuzz_raises_only_iroh_errors(data: bytes) -> None:
    try:
        parse_message(data)
    except IrohError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 600), st.integers(0, 255))
def test_parser_fuzz_mutated_responses(patch: bytes, offset: int, flip: int) -> None:
    wire = bytearray(build_response(KEY, DATA) or b"")
    offset %= len(wire)
    wire[offset : offset + len(patch)] = patch
    wire[offset] ^= flip
    try:
        parse_message(bytes(wire))
    except IrohError:
        pass


def test_peer_table_tracks_changes_and_expiry() -> None:
    table = PeerTable(expiry=5.0)
    info = EndpointInfo(OTHER, EndpointData(frozenset({RELAY_A})))
    assert table.update(info, now=0.0)
    assert not table.update(info, now=3.0)
    item = table.get(OTHER)
    assert item is not None and item.provenance == "mdns" and item.info == info
    assert table.expire(now=7.0) == []
    assert table.update(EndpointInfo(OTHER), now=7.5)
    assert table.expire(now=13.0) == [OTHER]
    assert table.get(OTHER) is None and table.infos() == []


async def test_unstarted_lookup_satisfies_the_protocol_and_times_out() -> None:
    lookup = MdnsLookup(KEY, resolve_timeout=0.05)
    assert isinstance(lookup, AddressLookup)
    assert [item async for item in lookup.resolve(OTHER)] == []
    lookup._on_datagram(build_response(OTHER, DATA) or b"")
    lookup._on_datagram(b"junk")
    items = [item async for item in lookup.resolve(OTHER)]
    assert [i.info.endpoint_id for i in items] == [OTHER]
    subscription = lookup.subscribe()
    first = await asyncio.wait_for(anext(subscription), 1)
    assert first.endpoint_id == OTHER
    await lookup.close()
    assert [info async for info in subscription] == []


@pytest.mark.parametrize("interface", ["fe80::1", "fe80::1%no-such-if0", "not-an-ip"])
async def test_bad_interface_raises_bind_error_and_cleans_up(interface: str) -> None:
    lookup = MdnsLookup(KEY, interfaces=[interface])
    with pytest.raises(BindError):
        await lookup.start()
    assert [item async for item in lookup.resolve(OTHER)] == []


async def test_queries_meanwhile_share_one_answer_and_close_cancels_it() -> None:
    lookup = MdnsLookup(KEY)
    lookup._on_datagram(build_query())
    assert not lookup._tasks, "nothing published yet, nothing to answer"
    lookup.publish(DATA)
    lookup._on_datagram(build_query())
    lookup._on_datagram(build_query())
    assert len(lookup._tasks) == 1
    await lookup.close()
    assert not lookup._tasks
