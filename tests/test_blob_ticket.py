"""BlobTicket against iroh-blobs' legacy layout (iroh-wire.md §6.5, iroh-blobs src/ticket.rs)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irohpy import EndpointAddr, PublicKey, SecretKey, Ticket, TransportAddr
from irohpy.errors import DecodeError, TicketError
from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket

# iroh-blobs `test_ticket_base32`: no addresses, raw format.
RUST_ID = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6"
RUST_HASH = "0b84d358e4c8be6c38626b2182ff575818ba6bd3f4b90464994be14cb354a072"
RUST_BYTES = "00" + RUST_ID + "00" + "00" + "00" + RUST_HASH


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def test_rust_known_answer() -> None:
    ticket = BlobTicket(EndpointAddr(PublicKey.parse(RUST_ID)), bytes.fromhex(RUST_HASH), BlobFormat.RAW)
    assert ticket.to_bytes().hex() == RUST_BYTES
    text = str(ticket)
    assert text == "blob" + b32(bytes.fromhex(RUST_BYTES))
    assert BlobTicket.parse(text) == ticket
    assert Ticket.parse_any(text) == ticket
    assert not ticket.recursive


def test_relay_and_addresses_layout() -> None:
    addr = (
        EndpointAddr(PublicKey.parse(RUST_ID))
        .with_relay_url("https://relay.example")
        .with_ip_addr("[::1]:1024")
        .with_ip_addr("127.0.0.1:1024")
    )
    ticket = BlobTicket(addr, bytes.fromhex(RUST_HASH), BlobFormat.HASH_SEQ)
    # Option<RelayUrl> = 01 + string; BTreeSet<SocketAddr> in Ord order: V4 before V6.
    expected = (
        "00" + RUST_ID
        + "01" + "16" + b"https://relay.example/".hex()
        + "02" + "00" + "7f000001" + "8008" + "01" + "00000000000000000000000000000001" + "8008"
        + "01" + RUST_HASH
    )
    assert ticket.to_bytes().hex() == expected
    parsed = BlobTicket.parse(str(ticket))
    assert parsed == ticket and parsed.recursive
    assert [str(a) for a in parsed.addr.ip_addrs()] == ["127.0.0.1:1024", "[::1]:1024"]


def test_only_the_first_relay_is_kept() -> None:
    """The legacy layout holds one relay URL and no custom addresses, as in iroh."""
    addr = EndpointAddr(PublicKey.parse(RUST_ID)).with_relay_url("https://b.example").with_relay_url(
        "https://a.example").with_addrs([TransportAddr.Custom(7, b"x")])
    ticket = BlobTicket(addr, bytes(32))
    parsed = BlobTicket.parse(str(ticket))
    assert [str(u) for u in parsed.addr.relay_urls()] == ["https://a.example/"]
    assert parsed.addr.ip_addrs() == []


def test_hash_must_be_32_bytes() -> None:
    key = SecretKey.generate().public()
    with pytest.raises(ValueError):
        BlobTicket(EndpointAddr(key), b"short")
    with pytest.raises(TypeError):
        BlobTicket(EndpointAddr(key), "00" * 32)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "01" + RUST_ID + "000000" + RUST_HASH,  # unknown ticket variant
        "00" + RUST_ID + "000002" + RUST_HASH,  # unknown blob format
        "00" + RUST_ID + "0000" + "00" + RUST_HASH[:-2],  # truncated hash
        "00" + RUST_ID + "000000" + RUST_HASH + "00",  # trailing byte
        "00" + RUST_ID + "02" + "00" + "00" + RUST_HASH,  # bad option tag
        "00" + RUST_ID + "00" + "01" + "02" + "7f000001" + "8008" + "00" + RUST_HASH,  # bad family
    ],
)
def test_bad_payloads_are_ticket_errors(payload: str) -> None:
    with pytest.raises(TicketError):
        BlobTicket.parse("blob" + b32(bytes.fromhex(payload)))


def test_wrong_kind() -> None:
    with pytest.raises(TicketError):
        BlobTicket.parse("endpoint" + b32(bytes.fromhex(RUST_BYTES)))


@given(st.binary(max_size=200))
def test_fuzz_from_bytes(data: bytes) -> None:
    try:
        ticket = BlobTicket.from_bytes(data)
    except DecodeError:
        return
    assert BlobTicket.from_bytes(ticket.to_bytes()) == ticket
