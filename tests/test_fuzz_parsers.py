"""Fuzzing every parser in irohpy.base: bad input raises an IrohError subclass and nothing else,
and whatever parses round-trips."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy import (
    EndpointAddr,
    EndpointTicket,
    PublicKey,
    RelayUrl,
    SecretKey,
    Signature,
    Ticket,
    TransportAddr,
)
from irohpy.base.keys import decode_base32, decode_z32, encode_base32
from irohpy.base.postcard import Reader
from irohpy.errors import IrohError

T = TypeVar("T")

FAST = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=100, deadline=None)

VECTORS = json.loads(Path("/work/shared/spec/vectors/endpoint-tickets.json").read_text())["vectors"]
VALID_TICKETS = [v["ticket"] for v in VECTORS] + [
    "endpointacxfr74igmsbvsbnn73wcecg5vt3kbzncqwfrdiampuufwnhkublmaqacbuhi5dqhixs6zdfojyc43lffyxqcad7aaaadaai"
]
VALID_PAYLOADS = [EndpointTicket.parse(t).to_bytes() for t in VALID_TICKETS]
B32_CHARS = "abcdefghijklmnopqrstuvwxyz234567ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def attempt(parse: Callable[[], T]) -> T | None:
    """Run ``parse``; an IrohError means "rejected", any other exception fails the test."""
    try:
        return parse()
    except IrohError:
        return None


def check_ticket(text: str) -> None:
    ticket = attempt(lambda: EndpointTicket.parse(text))
    anything = attempt(lambda: Ticket.parse_any(text))
    if ticket is None:
        return
    assert anything == ticket
    again = EndpointTicket.parse(str(ticket))
    assert again == ticket and str(again) == str(ticket)
    assert str(ticket).startswith("endpoint") and str(ticket) == str(ticket).lower()


# -- tickets --------------------------------------------------------------------


@FAST
@given(st.text(max_size=200))
def test_ticket_random_text(text: str) -> None:
    check_ticket(text)
    check_ticket("endpoint" + text)


@FAST
@given(st.binary(max_size=200))
def test_ticket_random_payload(payload: bytes) -> None:
    check_ticket("endpoint" + encode_base32(payload))


@FAST
@given(st.sampled_from(VALID_PAYLOADS), st.data())
def test_ticket_truncated_payloads(payload: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(payload) - 1))
    text = "endpoint" + encode_base32(payload[:cut])
    assert attempt(lambda: EndpointTicket.parse(text)) is None
    check_ticket(text)


@FAST
@given(st.sampled_from(VALID_PAYLOADS), st.data())
def test_ticket_mutated_payloads(payload: bytes, data: st.DataObject) -> None:
    mutated = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if kind == "flip":
            mutated[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            mutated[i] = data.draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            mutated.insert(i, data.draw(st.integers(0, 255)))
        elif len(mutated) > 1:
            del mutated[i]
    check_ticket("endpoint" + encode_base32(bytes(mutated)))


@FAST
@given(st.sampled_from(VALID_TICKETS), st.data())
def test_ticket_mutated_strings(ticket: str, data: st.DataObject) -> None:
    chars = list(ticket)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(chars) - 1))
        kind = data.draw(st.sampled_from(["replace", "insert", "delete", "case"]))
        char = data.draw(st.one_of(st.sampled_from(B32_CHARS), st.characters()))
        if kind == "replace":
            chars[i] = char
        elif kind == "insert":
            chars.insert(i, char)
        elif kind == "delete":
            del chars[i]
        else:
            chars[i] = chars[i].swapcase()
    check_ticket("".join(chars))


# -- postcard -------------------------------------------------------------------

READS: list[Callable[[Reader], object]] = [
    lambda r: r.u8(),
    lambda r: r.bool(),
    lambda r: r.u16(),
    lambda r: r.u32(),
    lambda r: r.u64(),
    lambda r: r.i8(),
    lambda r: r.i16(),
    lambda r: r.i32(),
    lambda r: r.i64(),
    lambda r: r.bytes_(),
    lambda r: r.str_(),
    lambda r: r.fixed(4),
    lambda r: r.variant(),
    lambda r: r.option(r.str_),
    lambda r: r.seq(r.u16),
    lambda r: r.seq(lambda: r.seq(r.bool)),
    lambda r: TransportAddr.decode_postcard(r),
    lambda r: EndpointAddr.decode_postcard(r),
    lambda r: r.finish(),
]


@FAST
@given(st.binary(max_size=64), st.lists(st.sampled_from(READS), min_size=1, max_size=8))
def test_postcard_reader_random_bytes(data: bytes, reads: list[Callable[[Reader], object]]) -> None:
    reader = Reader(data)
    for read in reads:
        if attempt(functools.partial(read, reader)) is None and reader.remaining == 0:
            break


@FAST
@given(st.binary(min_size=32, max_size=80))
def test_endpoint_addr_random_bytes(data: bytes) -> None:
    reader = Reader(data)
    addr = attempt(lambda: EndpointAddr.decode_postcard(reader))
    if addr is not None:
        assert EndpointTicket(addr) == EndpointTicket.parse(str(EndpointTicket(addr)))


# -- keys -----------------------------------------------------------------------


@FAST
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64),
        st.text(alphabet=B32_CHARS, min_size=52, max_size=52),
        st.binary(min_size=32, max_size=32).map(lambda b: b.hex()),
        st.binary(min_size=32, max_size=32).map(encode_base32),
    )
)
def test_key_text(text: str) -> None:
    public = attempt(lambda: PublicKey.parse(text))
    if public is not None:
        assert PublicKey.parse(str(public)) == public
        assert PublicKey.parse(public.to_base32()) == public
        assert PublicKey.from_z32(public.to_z32()) == public
    secret = attempt(lambda: SecretKey.parse(text))
    if secret is not None:
        assert SecretKey.parse(secret.to_bytes().hex()) == secret
        assert secret.to_bytes().hex() not in repr(secret)
    attempt(lambda: PublicKey.from_z32(text))
    attempt(lambda: decode_base32(text))
    attempt(lambda: decode_z32(text))


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_public_key_from_random_bytes(raw: bytes) -> None:
    key = attempt(lambda: PublicKey.from_bytes(raw))
    if key is not None:
        assert key.to_bytes() == raw
        assert PublicKey.parse(str(key)) == key


@FAST
@given(st.binary(max_size=40), st.binary(min_size=64, max_size=64))
def test_public_key_from_bytes_any_length(raw: bytes, sig: bytes) -> None:
    attempt(lambda: PublicKey.from_bytes(raw))
    key = SecretKey.from_bytes(b"\x05" * 32).public()
    attempt(lambda: key.verify(raw, Signature.from_bytes(sig)))
    attempt(lambda: Signature.from_bytes(raw))


@SLOW
@given(
    st.one_of(
        st.binary(max_size=100),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=32, max_size=32).map(lambda b: b.hex().encode() + b"\n"),
        st.text(alphabet="0123456789abcdefg \n\r\t", min_size=60, max_size=70).map(str.encode),
    )
)
def test_key_file_contents(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "key")
        with open(path, "wb") as f:
            f.write(content)
        secret = attempt(lambda: SecretKey.load(path))
        if secret is not None:
            again = os.path.join(tmp, "again")
            secret.save(again)
            assert SecretKey.load(again) == secret


# -- relay URLs and socket addresses --------------------------------------------


@FAST
@given(
    st.one_of(
        st.text(max_size=60),
        st.tuples(
            st.sampled_from(["http://", "https://", "HTTP:", "https:\\\\", " http://"]),
            st.text(alphabet="abcXYZ019.-_:[]%@/\\?#ü^ \t", max_size=40),
        ).map("".join),
    )
)
def test_relay_url(text: str) -> None:
    url = attempt(lambda: RelayUrl.parse(text))
    if url is not None:
        again = RelayUrl.parse(str(url))
        assert again == url and str(again) == str(url)
        assert url.scheme in ("http", "https") and 0 <= url.port <= 65535
        assert TransportAddr.Relay(url) == TransportAddr.Relay(str(url))


@FAST
@given(
    st.one_of(
        st.text(max_size=60),
        st.tuples(st.ip_addresses(v=4).map(str), st.text(alphabet="0123456789:", max_size=8)).map("".join),
        st.tuples(
            st.ip_addresses(v=6).map(lambda a: f"[{a}"), st.text(alphabet="0123456789:]%", max_size=10)
        ).map("".join),
    )
)
def test_ip_addr(text: str) -> None:
    addr = attempt(lambda: TransportAddr.Ip.parse(text))
    if addr is not None:
        assert TransportAddr.Ip.parse(str(addr)) == addr
        assert TransportAddr.Ip(*addr.sockaddr) == addr
