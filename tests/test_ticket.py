"""Tickets (irohpy.base.ticket) against iroh-wire.md §6 and the reference peer's vectors."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from irohpy import EndpointAddr, EndpointTicket, PublicKey, RelayUrl, SecretKey, Ticket, TransportAddr
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, InvalidKey, TicketError

VECTORS = json.loads(Path("/work/shared/spec/vectors/endpoint-tickets.json").read_text())["vectors"]

# iroh-wire.md §6.4
SPEC1_ID = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6"
SPEC1_BYTES = "00" + SPEC1_ID + "02" + "0010687474703a2f2f646572702e6d652e2f" + "01007f0000018008"
SPEC1_TICKET = (
    "endpointacxfr74igmsbvsbnn73wcecg5vt3kbzncqwfrdiampuufwnhkublmaqacbuhi5dqhixs6zdfojyc43lffyxqcad7aaaadaai"
)
SPEC2_ID = "663e2ccc1155a42dccc911a7318424b43d9d1fd2e4dc07207670cb71a0742934"
SPEC2_BYTES = (
    "00" + SPEC2_ID + "03"
    "001768747470733a2f2f72656c61792e6578616d706c652e2f"
    "01007f0000018008"
    "0101000000000000000000000000000000018008"
)
SPEC2_TICKET = (
    "endpointabtd4lgmcfk2ilomzei2ommees2d3hi72lsnybzaozymw4naoqutiayac5uhi5dqom5c6l3smvwgc6jomv4gc3lqnrss4lybab7qaaabq"
    "aeacaiaaaaaaaaaaaaaaaaaaaaaaaabqaea"
)
SPEC3_BYTES = "00" + SPEC2_ID + "01" + "01007f000001c59302"
SPEC3_TICKET = "endpointabtd4lgmcfk2ilomzei2ommees2d3hi72lsnybzaozymw4naoqutiaibab7qaaabywjqe"


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def test_spec_vector_1() -> None:
    ticket = EndpointTicket.parse(SPEC1_TICKET)
    assert str(ticket.addr.id) == SPEC1_ID
    assert [str(u) for u in ticket.addr.relay_urls()] == ["http://derp.me./"]
    assert [str(a) for a in ticket.addr.ip_addrs()] == ["127.0.0.1:1024"]
    assert ticket.to_bytes().hex() == SPEC1_BYTES
    assert str(ticket) == SPEC1_TICKET
    built = EndpointTicket(
        EndpointAddr(PublicKey.parse(SPEC1_ID))
        .with_relay_url("http://derp.me.")
        .with_ip_addr("127.0.0.1:1024")
    )
    assert built == ticket and str(built) == SPEC1_TICKET


def test_spec_vector_2() -> None:
    ticket = EndpointTicket.parse(SPEC2_TICKET)
    assert str(ticket.endpoint_addr().id) == SPEC2_ID
    assert [str(u) for u in ticket.addr.relay_urls()] == ["https://relay.example./"]
    assert [str(a) for a in ticket.addr.ip_addrs()] == ["127.0.0.1:1024", "[::1]:1024"]
    assert ticket.to_bytes().hex() == SPEC2_BYTES
    assert str(ticket) == SPEC2_TICKET
    assert EndpointTicket.from_bytes(bytes.fromhex(SPEC2_BYTES)) == ticket


def test_spec_vector_3() -> None:
    ticket = EndpointTicket.parse(SPEC3_TICKET)
    assert ticket.addr.ip_addrs() == [TransportAddr.Ip("127.0.0.1", 35269)]
    assert ticket.addr.relay_urls() == []
    assert ticket.to_bytes().hex() == SPEC3_BYTES
    assert str(ticket) == SPEC3_TICKET


@pytest.mark.parametrize("vector", VECTORS, ids=[f"v{i}" for i in range(len(VECTORS))])
def test_reference_peer_vectors(vector: dict) -> None:
    ticket = EndpointTicket.parse(vector["ticket"])
    addr = ticket.addr
    assert str(addr.id) == vector["endpoint_id_hex"]
    assert addr.id.to_bytes().hex() == vector["endpoint_id_bytes_hex"]
    expected_relays = [] if vector["relay_url_normalized"] is None else [vector["relay_url_normalized"]]
    assert [str(u) for u in addr.relay_urls()] == expected_relays
    assert [str(a) for a in addr.ip_addrs()] == vector["direct_addresses"]
    assert str(ticket) == vector["ticket"]

    endpoint_id = SecretKey.from_bytes(bytes.fromhex(vector["secret_key_hex"])).public()
    assert endpoint_id == addr.id
    built = EndpointAddr(
        endpoint_id, frozenset(TransportAddr.Ip.parse(a) for a in vector["direct_addresses"])
    )
    if vector["relay_url_in"] is not None:
        built = built.with_relay_url(RelayUrl.parse(vector["relay_url_in"]))
    assert str(EndpointTicket.from_addr(built)) == vector["ticket"]
    assert EndpointTicket(built) == ticket and hash(EndpointTicket(built)) == hash(ticket)


def test_payload_is_case_insensitive_but_the_kind_is_not() -> None:
    upper = "endpoint" + SPEC3_TICKET[len("endpoint") :].upper()
    assert EndpointTicket.parse(upper) == EndpointTicket.parse(SPEC3_TICKET)
    assert str(EndpointTicket.parse(upper)) == SPEC3_TICKET
    with pytest.raises(TicketError, match="does not start with"):
        EndpointTicket.parse(SPEC3_TICKET.upper())
    with pytest.raises(TicketError, match="does not start with"):
        EndpointTicket.parse("Endpoint" + SPEC3_TICKET[8:])


def _ticket(payload: bytes) -> str:
    return "endpoint" + b32(payload)


SPEC3 = bytes.fromhex(SPEC3_BYTES)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "does not start with"),
        ("endpoint", "empty"),
        ("blobabc", "does not start with"),
        ("endpoint!!!!", "base32"),
        ("endpointaaaa", "payload"),
        ("endpointa", "base32"),
        ("endpoint" + "a" * 3, "base32"),
        (" " + SPEC3_TICKET, "does not start with"),
        (SPEC3_TICKET + " ", "base32"),
        (SPEC3_TICKET + "\n", "base32"),
        (SPEC3_TICKET[:-1] + "f", "trailing bits"),
        ("nodeabtd4lgmcfk2ilomzei2ommees2d3hi72lsnybzaozymw4naoqutiaibab7qaaabywjqe", "does not start with"),
        (_ticket(SPEC3 + b"\x00"), "trailing"),
        (_ticket(SPEC3[:-1]), "truncated"),
        (_ticket(b"\x01" + SPEC3[1:]), "variant 1"),
        (_ticket(b"\x00" + (1).to_bytes(32, "little") + b"\x00"), "small-order"),
        (_ticket(SPEC3[:33] + b"\x01\x03"), "unknown transport address variant 3"),
        (_ticket(SPEC3[:33] + b"\x01\x01\x02"), "unknown socket address family"),
        (_ticket(SPEC3[:33] + b"\x01\x00\x03ws:"), "relay URL"),
        (_ticket(SPEC3[:33] + b"\x01\x00\x02\xc3\x28"), "UTF-8"),
        (_ticket(SPEC3[:33] + b"\xff\xff\xff\xff\x0f"), "claims"),
        (_ticket(SPEC3[:-3] + b"\x85\x00"), "overlong"),
        (_ticket(SPEC3[:-3] + b"\xff\xff\x04"), "does not fit"),
    ],
)
def test_bad_tickets(text: str, match: str) -> None:
    with pytest.raises(TicketError, match=match):
        EndpointTicket.parse(text)
    with pytest.raises(TicketError):
        Ticket.parse_any(text)


def test_payload_errors_keep_their_cause() -> None:
    with pytest.raises(TicketError) as info:
        EndpointTicket.parse(_ticket(b"\x00" + (1).to_bytes(32, "little") + b"\x00"))
    assert isinstance(info.value.__cause__, InvalidKey)
    with pytest.raises(TicketError) as info:
        EndpointTicket.parse("endpoint!!")
    assert isinstance(info.value.__cause__, DecodeError)


def test_non_str_input() -> None:
    with pytest.raises(TicketError):
        EndpointTicket.parse(SPEC3_TICKET.encode())  # type: ignore[arg-type]
    with pytest.raises(TicketError):
        Ticket.parse_any(None)  # type: ignore[arg-type]


def test_duplicates_and_order_in_the_payload_are_normalized() -> None:
    v4 = bytes.fromhex("01007f0000018008")
    v4b = bytes.fromhex("01000a0000018008")
    payload = bytes.fromhex("00" + SPEC2_ID) + b"\x03" + v4 + v4b + v4
    ticket = EndpointTicket.parse(_ticket(payload))
    assert [str(a) for a in ticket.addr.ip_addrs()] == ["10.0.0.1:1024", "127.0.0.1:1024"]
    assert ticket.to_bytes() == bytes.fromhex("00" + SPEC2_ID) + b"\x02" + v4b + v4


def test_endpoint_ticket_value() -> None:
    ticket = EndpointTicket.parse(SPEC1_TICKET)
    assert ticket == EndpointTicket.from_addr(ticket.addr)
    assert ticket != EndpointTicket.parse(SPEC3_TICKET)
    assert {ticket: 1}[EndpointTicket.parse(SPEC1_TICKET)] == 1
    assert ticket.endpoint_addr() is ticket.addr
    assert repr(ticket).startswith(f"EndpointTicket(addr=EndpointAddr({SPEC1_ID}, ")
    assert ticket.KIND == "endpoint"
    assert Ticket.parse_any(SPEC1_TICKET) == ticket
    with pytest.raises(TypeError):
        EndpointTicket(ticket.addr.id)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Ticket.parse(SPEC1_TICKET)


# -- user-defined kinds ---------------------------------------------------------


@dataclass(frozen=True)
class GreetingTicket(Ticket):
    """A custom kind as the module docstring describes it."""

    KIND: ClassVar[str] = "irohpygreeting"

    endpoint: PublicKey
    text: str
    tags: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        w = Writer()
        w.fixed(self.endpoint.to_bytes(), 32).str_(self.text).seq(self.tags, w.u16)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> GreetingTicket:
        r = Reader(data)
        ticket = cls(PublicKey.from_bytes(r.fixed(32)), r.str_(), tuple(r.seq(r.u16)))
        r.finish()
        return ticket


def test_custom_ticket_round_trip() -> None:
    endpoint = SecretKey.from_bytes(b"\x07" * 32).public()
    ticket = GreetingTicket(endpoint, "hello ✓", (1, 65535))
    text = str(ticket)
    assert text.startswith("irohpygreeting") and text == text.lower()
    assert GreetingTicket.parse(text) == ticket
    assert Ticket.parse_any(text) == ticket
    assert GreetingTicket.parse(text.replace(text[14:], text[14:].upper())) == ticket
    with pytest.raises(TicketError, match="does not start with"):
        GreetingTicket.parse(SPEC1_TICKET)
    with pytest.raises(TicketError, match="does not start with"):
        EndpointTicket.parse(text)
    with pytest.raises(TicketError, match="payload"):
        GreetingTicket.parse("irohpygreeting" + b32(b"\x00" * 32))


def test_unknown_kind() -> None:
    with pytest.raises(TicketError, match="unknown ticket kind.*endpoint"):
        Ticket.parse_any("nodeabc")


def test_kind_collisions_are_refused() -> None:
    with pytest.raises(TypeError, match="already taken"):

        class Impostor(EndpointTicket):
            KIND: ClassVar[str] = "endpoint"

    with pytest.raises(TypeError, match="non-empty"):

        class Nameless(GreetingTicket):
            KIND: ClassVar[str] = ""


@dataclass(frozen=True)
class ShortKindTicket(Ticket):
    """Its kind is a prefix of EndpointTicket's, and its payload can start with "point"."""

    KIND: ClassVar[str] = "end"

    data: bytes

    def to_bytes(self) -> bytes:
        return Writer().bytes_(self.data).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShortKindTicket:
        r = Reader(data)
        ticket = cls(r.bytes_())
        r.finish()
        return ticket


def test_kinds_that_are_prefixes_of_each_other() -> None:
    assert Ticket.parse_any(SPEC1_TICKET) == EndpointTicket.parse(SPEC1_TICKET)
    short = ShortKindTicket(b"hello")
    assert Ticket.parse_any(str(short)) == short
    # "point" in base32 is the bits 0x7b 0x90 0xd9 0x80..: a 123-byte string starting 90 d9 80.
    lookalike = ShortKindTicket(bytes([0x90, 0xD9, 0x80]) + bytes(120))
    text = str(lookalike)
    assert text.startswith("endpoint")
    with pytest.raises(TicketError):
        EndpointTicket.parse(text)
    assert Ticket.parse_any(text) == lookalike
