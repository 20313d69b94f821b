"""Ids, signatures, relay URLs and tickets cross-checked with the official iroh package.

These calls are pure (no sockets), so they need no network isolation: they only need the
package to import, which the ``iroh_ref`` fixture checks.
"""

from __future__ import annotations

import hashlib
import ipaddress
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irohpy import EndpointAddr, EndpointTicket, PublicKey, RelayUrl, SecretKey, Signature, TransportAddr
from irohpy.base.keys import encode_base32
from irohpy.errors import InvalidKey, InvalidRelayUrl, InvalidSignature, TicketError
from tests.test_keys import forge_identity_r_signature

FIXTURE_OK = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
"""The fixture is a module, identical for every example, so sharing it is safe."""
SEEDS = [hashlib.sha256(b"irohpy-refpeer-%d" % i).digest() for i in range(16)]

RELAYS = [
    None,
    "https://use1-1.relay.n0.iroh.link./",
    "https://relay.example.org:8443",
    "http://127.0.0.1:3340",
    "HTTP://Relay.Example.COM:80/",
    "http://[::1]:3340/",
    "https://a.b:443/x/../y?q=1#f",
]


def rust_normalized(iroh: ModuleType, url: str) -> str | None:
    """How iroh normalises a relay URL (it parses it when the ticket is built), or None."""
    addr = iroh.EndpointAddr(iroh.SecretKey.from_bytes(SEEDS[0]).public(), url, [])
    try:
        ticket = iroh.EndpointTicket.from_addr(addr)
    except iroh.IrohError:
        return None
    relay: str | None = iroh.EndpointTicket.from_string(str(ticket)).endpoint_addr().relay_url()
    return relay


# -- ids ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS[:8], ids=[f"seed{i}" for i in range(8)])
def test_ids_match(iroh_ref: ModuleType, seed: bytes) -> None:
    theirs = iroh_ref.SecretKey.from_bytes(seed).public()
    ours = SecretKey.from_bytes(seed).public()
    assert str(theirs) == str(ours)
    assert theirs.to_bytes() == ours.to_bytes()
    assert theirs.fmt_short() == ours.fmt_short()
    assert PublicKey.parse(str(theirs)) == ours
    assert PublicKey.from_bytes(theirs.to_bytes()) == ours
    assert iroh_ref.SecretKey.from_bytes(seed).to_bytes() == SecretKey.from_bytes(seed).to_bytes()

    b32 = ours.to_base32()
    for text in (b32, b32.upper(), b32[:20].upper() + b32[20:]):
        assert str(iroh_ref.EndpointId.from_string(text)) == str(ours)
        assert PublicKey.parse(text) == ours
    assert str(iroh_ref.EndpointId.from_string(str(ours))) == str(ours)


@pytest.mark.parametrize("seed", SEEDS[:4], ids=[f"seed{i}" for i in range(4)])
def test_uppercase_hex_is_rejected_by_both(iroh_ref: ModuleType, seed: bytes) -> None:
    upper = str(SecretKey.from_bytes(seed).public()).upper()
    with pytest.raises(iroh_ref.IrohError):
        iroh_ref.EndpointId.from_string(upper)
    with pytest.raises(InvalidKey):
        PublicKey.parse(upper)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        encode_base32(bytes(32))[:-1],
        encode_base32(bytes(32))[:-1] + "r",  # non-zero trailing bits
        "g" + "0" * 63,
    ],
)
def test_malformed_ids_are_rejected_by_both(iroh_ref: ModuleType, text: str) -> None:
    with pytest.raises(iroh_ref.IrohError):
        iroh_ref.EndpointId.from_string(text)
    with pytest.raises(InvalidKey):
        PublicKey.parse(text)


def test_off_curve_ids_are_rejected_by_both(iroh_ref: ModuleType) -> None:
    checked = 0
    for i in range(200):
        raw = hashlib.sha256(b"maybe-a-point-%d" % i).digest()
        try:
            iroh_ref.EndpointId.from_bytes(raw)
            rust_ok = True
        except iroh_ref.IrohError:
            rust_ok = False
        try:
            PublicKey.from_bytes(raw)
            ours_ok = True
        except InvalidKey:
            ours_ok = False
        assert rust_ok == ours_ok, raw.hex()
        checked += not rust_ok
    assert checked > 50


def test_small_order_ids_are_stricter_than_iroh(iroh_ref: ModuleType) -> None:
    """iroh's ``PublicKey::from_bytes`` accepts small-order points (only ``verify_strict`` refuses
    them later); we refuse them when parsing, since no one can hold a key for such an id."""
    identity = (1).to_bytes(32, "little")
    assert iroh_ref.EndpointId.from_bytes(identity).to_bytes() == identity
    with pytest.raises(InvalidKey):
        PublicKey.from_bytes(identity)


# -- signatures ---------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS[:4], ids=[f"seed{i}" for i in range(4)])
def test_signatures_cross_verify(iroh_ref: ModuleType, seed: bytes) -> None:
    theirs = iroh_ref.SecretKey.from_bytes(seed)
    ours = SecretKey.from_bytes(seed)
    for message in (b"", b"hello", bytes(range(256))):
        their_sig = theirs.sign(message).to_bytes()
        our_sig = ours.sign(message)
        assert their_sig == our_sig.to_bytes()  # Ed25519 is deterministic
        ours.public().verify(message, Signature.from_bytes(their_sig))
        theirs.public().verify(message, iroh_ref.Signature.from_bytes(our_sig.to_bytes()))
        flipped = bytearray(our_sig.to_bytes())
        flipped[5] ^= 0x40
        tampered = bytes(flipped)
        with pytest.raises(iroh_ref.IrohError):
            theirs.public().verify(message, iroh_ref.Signature.from_bytes(tampered))
        with pytest.raises(InvalidSignature):
            ours.public().verify(message, Signature.from_bytes(tampered))
        with pytest.raises(iroh_ref.IrohError):
            theirs.public().verify(message + b"!", iroh_ref.Signature.from_bytes(our_sig.to_bytes()))


def test_small_order_r_is_refused_by_both(iroh_ref: ModuleType) -> None:
    forged = forge_identity_r_signature(SEEDS[0], b"msg")
    with pytest.raises(iroh_ref.IrohError):
        iroh_ref.SecretKey.from_bytes(SEEDS[0]).public().verify(b"msg", iroh_ref.Signature.from_bytes(forged))
    with pytest.raises(InvalidSignature):
        SecretKey.from_bytes(SEEDS[0]).public().verify(b"msg", Signature.from_bytes(forged))


# -- relay URLs ---------------------------------------------------------------


@pytest.mark.parametrize("url", [r for r in RELAYS if r is not None])
def test_relay_url_normalization_matches(iroh_ref: ModuleType, url: str) -> None:
    assert rust_normalized(iroh_ref, url) == str(RelayUrl.parse(url))


URL_PIECES = st.sampled_from(
    [
        "a",
        "B",
        "relay",
        "com",
        "0",
        "1",
        "255",
        "256",
        "01",
        "0x1",
        "-",
        "_",
        ".",
        "..",
        "%41",
        "ü",
        "!",
        "xn--a",
        " ",
        "\t",
    ]
)


@settings(FIXTURE_OK, max_examples=100)
@given(
    scheme=st.sampled_from(["http", "HTTP", "https", "hTTps", "ws", "ftp"]),
    sep=st.sampled_from(["://", ":", ":/", ":\\\\", "://\\"]),
    host=st.one_of(
        st.lists(URL_PIECES, min_size=1, max_size=6).map("".join),
        st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        st.ip_addresses(v=4).map(str),
    ),
    port=st.sampled_from(["", ":", ":80", ":443", ":0", ":0080", ":65535", ":65536", ":x", ":8443"]),
    path=st.lists(
        st.sampled_from(
            ["/", "\\", "a", ".", "..", "%2e", "x y", "ü", "`", "{", "|", "%zz", '"', "'", "\x01"]
        ),
        max_size=6,
    ).map("".join),
    tail=st.sampled_from(["", "?", "?a=b", "?x y'\"<>`", "#", "#f`'\"", "?q#f"]),
)
def test_relay_url_normalization_fuzz(
    iroh_ref: ModuleType, scheme: str, sep: str, host: str, port: str, path: str, tail: str
) -> None:
    """Whatever we accept, iroh normalises identically; whatever iroh refuses, we refuse."""
    text = f"{scheme}{sep}{host}{port}{path}{tail}"
    rust = rust_normalized(iroh_ref, text)
    try:
        ours: str | None = str(RelayUrl.parse(text))
    except InvalidRelayUrl:
        ours = None
    if ours is not None:
        assert ours == rust, text
    if rust is None:
        assert ours is None, text


# -- tickets ------------------------------------------------------------------


def _check_same(iroh: ModuleType, their_ticket: str, ours: EndpointTicket) -> None:
    """Both sides parse ``their_ticket`` to the same fields, and ours prints it byte-identically."""
    assert str(ours) == their_ticket
    back = iroh.EndpointTicket.from_string(str(ours)).endpoint_addr()
    parsed = EndpointTicket.parse(their_ticket)
    assert parsed == ours
    assert str(back.id()) == str(parsed.addr.id)
    relays = [str(u) for u in parsed.addr.relay_urls()]
    assert ([back.relay_url()] if back.relay_url() is not None else []) == relays
    assert back.direct_addresses() == [str(a) for a in parsed.addr.ip_addrs()]


def _both_tickets(
    iroh: ModuleType, seed: bytes, relay: str | None, direct: list[str]
) -> tuple[str, EndpointTicket]:
    their_addr = iroh.EndpointAddr(iroh.SecretKey.from_bytes(seed).public(), relay, direct)
    their_ticket = str(iroh.EndpointTicket.from_addr(their_addr))
    ours = EndpointAddr(
        SecretKey.from_bytes(seed).public(), frozenset(TransportAddr.Ip.parse(a) for a in direct)
    )
    if relay is not None:
        ours = ours.with_relay_url(relay)
    return their_ticket, EndpointTicket(ours)


@pytest.mark.parametrize(
    ("relay", "direct"),
    [
        (None, []),
        (None, ["127.0.0.1:1"]),
        (None, ["[::1]:65535"]),
        ("https://use1-1.relay.n0.iroh.link./", []),
        ("http://127.0.0.1:3340", ["127.0.0.1:3341", "[::1]:3342"]),
        ("HTTP://Relay.Example.COM:80", ["[fe80::1%7]:9", "10.0.0.1:0", "[::ffff:1.2.3.4]:5", "9.9.9.9:9"]),
        (
            None,
            [
                "[2001:db8::1]:1",
                "[2001:db8::1]:0",
                "[::]:7",
                "0.0.0.0:7",
                "255.255.255.255:7",
                "1.2.3.4:7",
                "1.2.3.4:6",
            ],
        ),
    ],
)
def test_ticket_interop_examples(iroh_ref: ModuleType, relay: str | None, direct: list[str]) -> None:
    their_ticket, ours = _both_tickets(iroh_ref, SEEDS[3], relay, direct)
    _check_same(iroh_ref, their_ticket, ours)


@settings(FIXTURE_OK, max_examples=50)
@given(
    seed=st.binary(min_size=32, max_size=32),
    relay=st.sampled_from(RELAYS),
    v4=st.lists(st.tuples(st.ip_addresses(v=4), st.integers(0, 65535)), max_size=4),
    v6=st.lists(st.tuples(st.ip_addresses(v=6), st.integers(0, 65535)), max_size=4),
)
def test_ticket_interop_random(
    iroh_ref: ModuleType,
    seed: bytes,
    relay: str | None,
    v4: list[tuple[ipaddress.IPv4Address, int]],
    v6: list[tuple[ipaddress.IPv6Address, int]],
) -> None:
    direct = [str(TransportAddr.Ip(host, port)) for host, port in v4 + v6]
    their_ticket, ours = _both_tickets(iroh_ref, seed, relay, direct)
    _check_same(iroh_ref, their_ticket, ours)


def test_case_of_tickets(iroh_ref: ModuleType) -> None:
    their_ticket, ours = _both_tickets(iroh_ref, SEEDS[5], "https://relay.example.org./", ["127.0.0.1:1024"])
    upper_payload = "endpoint" + their_ticket[8:].upper()
    assert EndpointTicket.parse(upper_payload) == ours
    assert str(iroh_ref.EndpointTicket.from_string(upper_payload).endpoint_addr().id()) == str(ours.addr.id)
    with pytest.raises(iroh_ref.IrohError):
        iroh_ref.EndpointTicket.from_string(their_ticket.upper())
    with pytest.raises(TicketError):
        EndpointTicket.parse(their_ticket.upper())


def _payload_ticket(payload: bytes) -> str:
    return "endpoint" + encode_base32(payload)


def test_where_we_are_stricter_than_iroh(iroh_ref: ModuleType) -> None:
    """postcard ignores trailing bytes and accepts overlong varints; we refuse both (Rust
    never writes either, so no ticket made by iroh is affected)."""
    _, ours = _both_tickets(iroh_ref, SEEDS[6], None, ["127.0.0.1:5"])
    payload = ours.to_bytes()
    trailing = _payload_ticket(payload + b"\x00")
    overlong = _payload_ticket(payload[:-1] + b"\x85\x00")
    for text in (trailing, overlong):
        assert iroh_ref.EndpointTicket.from_string(text).endpoint_addr().direct_addresses() == ["127.0.0.1:5"]
        with pytest.raises(TicketError):
            EndpointTicket.parse(text)


def test_unsorted_and_duplicate_addresses_parse_the_same(iroh_ref: ModuleType) -> None:
    endpoint_id = SecretKey.from_bytes(SEEDS[7]).public().to_bytes()
    entries = [bytes.fromhex(h) for h in ("01007f0000010a", "01000a0000010a", "0101" + "00" * 15 + "010a")]
    payload = b"\x00" + endpoint_id + b"\x04" + entries[2] + entries[0] + entries[1] + entries[0]
    text = _payload_ticket(payload)
    theirs = iroh_ref.EndpointTicket.from_string(text)
    ours = EndpointTicket.parse(text)
    assert theirs.endpoint_addr().direct_addresses() == [str(a) for a in ours.addr.ip_addrs()]
    assert str(ours) == str(iroh_ref.EndpointTicket.from_addr(theirs.endpoint_addr()))


def test_trailing_bits_in_ticket_base32_are_refused_by_both(iroh_ref: ModuleType) -> None:
    their_ticket, _ = _both_tickets(iroh_ref, SEEDS[8], None, ["127.0.0.1:35269"])
    assert len(their_ticket[8:]) % 8 != 0  # so the last character carries unused low bits
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    bad = their_ticket[:-1] + alphabet[alphabet.index(their_ticket[-1]) ^ 1]
    with pytest.raises(iroh_ref.IrohError):
        iroh_ref.EndpointTicket.from_string(bad)
    with pytest.raises(TicketError):
        EndpointTicket.parse(bad)
