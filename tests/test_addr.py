"""RelayUrl, TransportAddr and EndpointAddr (irohpy.base.relay_url, irohpy.base.addr)."""

from __future__ import annotations

import ipaddress
import itertools
import json
import pickle
from pathlib import Path

import pytest

from irohpy import EndpointAddr, PublicKey, RelayUrl, SecretKey, TransportAddr
from irohpy.base.addr import CustomAddr, IpAddr, RelayAddr
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, InvalidAddr, InvalidKey, InvalidRelayUrl

VECTORS = json.loads(Path("/work/shared/spec/vectors/endpoint-tickets.json").read_text())["vectors"]
SPEC_ID = PublicKey.parse("ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6")
ID_A = SecretKey.from_bytes(b"\x01" * 32).public()


# -- RelayUrl -----------------------------------------------------------------

# Each pair was checked against the reference peer (Rust iroh 1.4.1's url crate).
NORMALIZED = [
    ("http://a.b", "http://a.b/"),
    ("HTTP://A.B:80", "http://a.b/"),
    ("https://Relay.Example.COM:443", "https://relay.example.com/"),
    ("https://a.b:80", "https://a.b:80/"),
    ("http://a.b:00080/", "http://a.b/"),
    ("http://a.b:/", "http://a.b/"),
    ("https://relay.example.org:8443/", "https://relay.example.org:8443/"),
    ("http://derp.me./", "http://derp.me./"),
    ("http://A.B./", "http://a.b./"),
    ("https://a.b:443/x/../y", "https://a.b/y"),
    ("http://a.b/./", "http://a.b/"),
    ("http://a.b/..", "http://a.b/"),
    ("http://a.b/%2e%2E", "http://a.b/"),
    ("http://a.b/a/%2e.", "http://a.b/"),
    ("http://a.b/%zz%2e%2E/", "http://a.b/%zz%2e%2E/"),
    ("http:a.b", "http://a.b/"),
    ("http:/\\/a.b", "http://a.b/"),
    ("http:\\\\a.b\\c", "http://a.b/c"),
    ("  http://a.b  ", "http://a.b/"),
    ("\x0bhttp://a.b/\x0b", "http://a.b/"),
    ("http://a\tb.c/", "http://ab.c/"),
    ("http://1.2.3.4./", "http://1.2.3.4/"),
    ("http://0.0.0.0/", "http://0.0.0.0/"),
    ("http://127.0.0.1:3340", "http://127.0.0.1:3340/"),
    ("http://[::FFFF:1.2.3.4]:8080", "http://[::ffff:102:304]:8080/"),
    ("http://[1:0:0:2:0:0:0:3]/", "http://[1:0:0:2::3]/"),
    ("http://[1:0:0:2:0:0:3:4]/", "http://[1::2:0:0:3:4]/"),
    ("http://[::1.2.3.4]/", "http://[::102:304]/"),
    ("http://a..b./", "http://a..b./"),
    ("http://a_b/", "http://a_b/"),
    ("http://-a.b/", "http://-a.b/"),
    ("http://a.0xg/", "http://a.0xg/"),
    ("http://a.b/%7e x", "http://a.b/%7e%20x"),
    ("http://a.b/{}|", "http://a.b/%7B%7D|"),
    ("http://a.b/\x01x", "http://a.b/%01x"),
    ("http://a.b/\x7f", "http://a.b/%7F"),
    ("http://a.b/ü?ü#ü", "http://a.b/%C3%BC?%C3%BC#%C3%BC"),
    ("http://a.b/?x^y'z\"", "http://a.b/?x^y%27z%22"),
    ("http://a.b/#x^y`z", "http://a.b/#x^y%60z"),
    ("http://a.b?x\\y", "http://a.b/?x\\y"),
    ("http://a.b#x", "http://a.b/#x"),
    ("http://a.b?", "http://a.b/?"),
]


@pytest.mark.parametrize(("text", "normalized"), NORMALIZED)
def test_relay_url_normalization(text: str, normalized: str) -> None:
    url = RelayUrl.parse(text)
    assert str(url) == normalized
    assert RelayUrl.parse(normalized) == url
    assert str(RelayUrl(str(url))) == normalized


# Each of these is refused by the reference peer too.
REJECTED_BY_BOTH = [
    "",
    "a.b",
    "/relay",
    "http://",
    "http:///",
    "http://:80/",
    "http://a.b:65536/",
    "http://a.b:x/",
    "http://1.2.3.256/",
    "http://1.2.3.4.5/",
    "http://a.1/",
    "http://a.0x/",
    "http://xn--zz/",
    "http://a.b /",
    "http://a.b\x7f/",
    "http://[::01.2.3.4]/",
    "http://[fe80::1%25eth0]/",
    "http://[::1/",
    "http://[::1]x/",
]
# Accepted by the url crate, but refused here because we cannot promise the same normal form.
REJECTED_BY_US = [
    "ws://a.b/",
    "ftp://x",
    "foo:bar",
    "http://user:pw@a.b/",
    "http://@a.b/",
    "http://bücher.de/",
    "http://xn--bcher-kva.de/",
    "http://a%41.b/",
    "http://127.1/",
    "http://010.0.0.1/",
    "http://0x7f.1/",
    "http://a!b/",
    "http://a.b/x^y",
]


@pytest.mark.parametrize("text", REJECTED_BY_BOTH + REJECTED_BY_US)
def test_relay_url_rejects(text: str) -> None:
    with pytest.raises(InvalidRelayUrl):
        RelayUrl.parse(text)


def test_relay_url_rejects_non_str_and_surrogates() -> None:
    with pytest.raises(InvalidRelayUrl):
        RelayUrl.parse(b"http://a.b/")  # type: ignore[arg-type]
    with pytest.raises(InvalidRelayUrl):
        RelayUrl.parse("http://a.b/\ud800")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["ticket"][:24] for v in VECTORS])
def test_relay_url_vectors(vector: dict) -> None:
    if vector["relay_url_in"] is None:
        return
    assert str(RelayUrl.parse(vector["relay_url_in"])) == vector["relay_url_normalized"]


def test_relay_url_parts() -> None:
    url = RelayUrl.parse("HTTPS://Use1-1.Relay.N0.Iroh.Link.")
    assert (url.scheme, url.host, url.port) == ("https", "use1-1.relay.n0.iroh.link.", 443)
    url = RelayUrl.parse("http://127.0.0.1:3340")
    assert (url.scheme, url.host, url.port) == ("http", "127.0.0.1", 3340)
    url = RelayUrl.parse("http://[::1]:80/x")
    assert (url.host, url.port, str(url)) == ("::1", 80, "http://[::1]/x")
    assert repr(url) == "RelayUrl('http://[::1]/x')"


def test_relay_url_value_semantics() -> None:
    a = RelayUrl.parse("https://a.example:443")
    assert a == RelayUrl.parse("HTTPS://A.EXAMPLE/") and hash(a) == hash(RelayUrl.parse("https://a.example/"))
    assert a != "https://a.example/"
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a._text = "x"
    urls = [
        RelayUrl.parse(u)
        for u in ["https://b.example", "http://z.example", "https://a.example:8443", "https://a.example"]
    ]
    # Ordered as strings, like Url's Ord: "http:" < "https", and "/" < ":" puts the default port first.
    assert [str(u) for u in sorted(urls)] == sorted(str(u) for u in urls)
    assert str(min(urls)) == "http://z.example/"
    assert RelayUrl.parse("https://a.example") < RelayUrl.parse("https://a.example:8443")
    assert RelayUrl.parse("https://a.example:8443") <= RelayUrl.parse("https://a.example:8443")
    assert RelayUrl.parse("https://a.example:8443") > RelayUrl.parse("https://a.example:443")


# -- TransportAddr.Ip ---------------------------------------------------------


def test_ip_construction() -> None:
    v4 = TransportAddr.Ip("127.0.0.1", 4433)
    assert v4.host == ipaddress.IPv4Address("127.0.0.1") and v4.port == 4433
    assert v4 == TransportAddr.Ip(ipaddress.ip_address("127.0.0.1"), 4433)
    assert str(v4) == "127.0.0.1:4433" and v4.sockaddr == ("127.0.0.1", 4433)
    v6 = TransportAddr.Ip("::1", 0)
    assert str(v6) == "[::1]:0" and v6.sockaddr == ("::1", 0)
    mapped = TransportAddr.Ip("::ffff:1.2.3.4", 9)
    assert mapped.host.version == 6
    assert str(mapped) == "[::ffff:1.2.3.4]:9"  # Rust prints IPv4-mapped addresses dotted
    assert mapped != TransportAddr.Ip("1.2.3.4", 9)
    scoped = TransportAddr.Ip("fe80::1%eth0", 9)
    assert scoped == TransportAddr.Ip("fe80::1", 9) and str(scoped) == "[fe80::1]:9"
    assert (
        TransportAddr.Ip is IpAddr and TransportAddr.Relay is RelayAddr and TransportAddr.Custom is CustomAddr
    )
    assert repr(v4) == "TransportAddr.Ip('127.0.0.1:4433')"
    with pytest.raises(AttributeError):
        v4.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("127.0.0.1", -1),
        ("127.0.0.1", 65536),
        ("127.0.0.1", True),
        ("127.0.0.1", "80"),
        ("localhost", 80),
        ("1.2.3", 80),
        ("", 1),
    ],
)
def test_ip_construction_rejects(host: str, port: int) -> None:
    with pytest.raises(InvalidAddr):
        TransportAddr.Ip(host, port)


def test_ip_construction_type_error() -> None:
    with pytest.raises(TypeError):
        TransportAddr.Ip(b"\x7f\x00\x00\x01", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4:5", "1.2.3.4:5"),
        ("0.0.0.0:0", "0.0.0.0:0"),
        ("255.255.255.255:65535", "255.255.255.255:65535"),
        ("1.2.3.4:0005", "1.2.3.4:5"),
        ("[::1]:5", "[::1]:5"),
        ("[::]:0", "[::]:0"),
        ("[2001:DB8::1]:443", "[2001:db8::1]:443"),
        ("[::ffff:1.2.3.4]:9", "[::ffff:1.2.3.4]:9"),
        ("[::ffff:102:304]:9", "[::ffff:1.2.3.4]:9"),
        ("[fe80::1%3]:9", "[fe80::1]:9"),
        ("[1:0:0:2:0:0:0:3]:1", "[1:0:0:2::3]:1"),
    ],
)
def test_ip_parse(text: str, expected: str) -> None:
    addr = TransportAddr.Ip.parse(text)
    assert str(addr) == expected
    assert TransportAddr.Ip.parse(str(addr)) == addr


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:65536",
        "1.2.3.4:-1",
        "1.2.3.4:+5",
        "::1:5",
        "[::1]",
        "[::1]5",
        "[::1]:",
        "01.2.3.4:5",
        "1.2.3:5",
        "localhost:80",
        "[1.2.3.4]:5",
        "[fe80::1%eth0]:9",
        "1.2.3.4:5 ",
        " 1.2.3.4:5",
        "1.2.3.4:٥",
        "1.2.3.4:" + "0" * 5000 + "1x",
        "[fe80::1%4294967296]:9",
        "[fe80::1%" + "9" * 5000 + "]:9",
        "[fe80::1%]:9",
    ],
)
def test_ip_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidAddr):
        TransportAddr.Ip.parse(text)


# -- ordering (Rust's derived Ord on TransportAddr / SocketAddr / CustomAddr) -


def test_transport_addr_order() -> None:
    expected = [
        TransportAddr.Relay("http://z.example"),
        TransportAddr.Relay("https://a.example"),
        TransportAddr.Ip("0.0.0.1", 9),
        TransportAddr.Ip("1.2.3.4", 1),
        TransportAddr.Ip("1.2.3.4", 2),
        TransportAddr.Ip("255.255.255.255", 0),
        TransportAddr.Ip("::", 5),  # every IPv6 address sorts after every IPv4 address
        TransportAddr.Ip("::1", 1),
        TransportAddr.Ip("::ffff:0.0.0.1", 1),
        TransportAddr.Ip("fe80::1", 0),
        TransportAddr.Custom(0, b"\xff" * 30),
        TransportAddr.Custom(1, b""),
        TransportAddr.Custom(1, b"\xff"),  # inline data compares length first ...
        TransportAddr.Custom(1, b"\x00\x00"),
        TransportAddr.Custom(1, b"\xff" * 30),  # ... and all inline (<= 30 bytes) before heap
        TransportAddr.Custom(1, b"\x00" * 40),  # heap data compares as plain byte strings
        TransportAddr.Custom(1, b"\x00" * 31 + b"\x01"),
        TransportAddr.Custom(2, b""),
    ]
    shuffled = expected[::-1][3:] + expected[::-1][:3]
    assert sorted(shuffled) == expected
    assert all(a < b for a, b in itertools.pairwise(expected))
    assert expected[3] <= expected[3] and expected[4] >= expected[3] and expected[4] > expected[3]
    with pytest.raises(TypeError):
        _ = expected[0] < "x"


# -- postcard encodings (iroh-wire.md §6.3) -----------------------------------


@pytest.mark.parametrize(
    ("addr", "encoded"),
    [
        (TransportAddr.Relay("http://derp.me./"), "0010687474703a2f2f646572702e6d652e2f"),
        (TransportAddr.Ip("127.0.0.1", 1024), "01007f0000018008"),
        (TransportAddr.Ip("::1", 1024), "0101000000000000000000000000000000018008"),
        (TransportAddr.Ip("127.0.0.1", 35269), "01007f000001c59302"),
        (TransportAddr.Custom(5, b"abc"), "020503616263"),
        (TransportAddr.Custom(300, b""), "02ac0200"),
    ],
)
def test_transport_addr_postcard(addr: TransportAddr, encoded: str) -> None:
    w = Writer()
    addr.encode_postcard(w)
    assert w.finish().hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert TransportAddr.decode_postcard(r) == addr
    r.finish()


@pytest.mark.parametrize(
    ("encoded", "error"),
    [
        ("03", DecodeError),
        ("0102", DecodeError),
        ("01007f0000", DecodeError),
        ("01007f000001", DecodeError),
        ("0003616263", InvalidRelayUrl),
        ("0002ffff", DecodeError),
        ("0205", DecodeError),
    ],
)
def test_transport_addr_postcard_rejects(encoded: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        TransportAddr.decode_postcard(Reader(bytes.fromhex(encoded)))


def test_custom_addr() -> None:
    c = TransportAddr.Custom(0xAB, bytearray(b"\x01\x02"))
    assert c.data == b"\x01\x02" and isinstance(c.data, bytes)
    assert str(c) == "ab_0102"
    assert c == TransportAddr.Custom(0xAB, b"\x01\x02") and hash(c) == hash(
        TransportAddr.Custom(0xAB, b"\x01\x02")
    )
    for bad in (-1, 2**64, True):
        with pytest.raises(InvalidAddr):
            TransportAddr.Custom(bad, b"")
    with pytest.raises(TypeError):
        TransportAddr.Custom(1, "data")  # type: ignore[arg-type]


# -- EndpointAddr -------------------------------------------------------------


def test_endpoint_addr_spec_bytes() -> None:
    """iroh-wire.md §6.4 vector 1, without the ticket's leading variant byte."""
    addr = EndpointAddr(
        SPEC_ID, frozenset({TransportAddr.Ip("127.0.0.1", 1024), TransportAddr.Relay("http://derp.me./")})
    )
    w = Writer()
    addr.encode_postcard(w)
    expected = SPEC_ID.to_bytes().hex() + "02" + "0010687474703a2f2f646572702e6d652e2f" + "01007f0000018008"
    assert w.finish().hex() == expected
    r = Reader(bytes.fromhex(expected))
    assert EndpointAddr.decode_postcard(r) == addr
    r.finish()


def test_endpoint_addr_decoding_accepts_any_order_and_merges_duplicates() -> None:
    v4 = "01007f0000018008"
    relay = "0010687474703a2f2f646572702e6d652e2f"
    unsorted = SPEC_ID.to_bytes().hex() + "04" + v4 + relay + v4 + relay
    addr = EndpointAddr.decode_postcard(Reader(bytes.fromhex(unsorted)))
    assert len(addr.addrs) == 2
    w = Writer()
    addr.encode_postcard(w)
    assert w.finish().hex() == SPEC_ID.to_bytes().hex() + "02" + relay + v4


def test_endpoint_addr_decoding_normalizes_relay_urls() -> None:
    raw = b"HTTP://Derp.Me.:80"
    data = SPEC_ID.to_bytes() + b"\x01\x00" + bytes([len(raw)]) + raw
    addr = EndpointAddr.decode_postcard(Reader(data))
    assert [str(u) for u in addr.relay_urls()] == ["http://derp.me./"]


def test_endpoint_addr_decoding_rejects_bad_ids() -> None:
    small_order = (1).to_bytes(32, "little")
    with pytest.raises(InvalidKey):
        EndpointAddr.decode_postcard(Reader(small_order + b"\x00"))
    with pytest.raises(DecodeError):
        EndpointAddr.decode_postcard(Reader(SPEC_ID.to_bytes()[:31]))


def test_endpoint_addr_helpers() -> None:
    base = EndpointAddr.from_id(ID_A)
    assert base.is_empty() and base.addrs == frozenset() and base == EndpointAddr(ID_A)
    addr = (
        base.with_ip_addr("[::1]:5")
        .with_ip_addr(TransportAddr.Ip("10.0.0.1", 7))
        .with_relay_url("https://relay.example")
        .with_relay_url(RelayUrl.parse("http://relay.example"))
        .with_addrs([TransportAddr.Custom(1, b"x"), TransportAddr.Ip("10.0.0.1", 7)])
    )
    assert base.is_empty() and not addr.is_empty()
    assert [str(u) for u in addr.relay_urls()] == ["http://relay.example/", "https://relay.example/"]
    assert [str(a) for a in addr.ip_addrs()] == ["10.0.0.1:7", "[::1]:5"]
    assert [type(a) for a in addr.sorted_addrs()] == [RelayAddr, RelayAddr, IpAddr, IpAddr, CustomAddr]
    assert addr == EndpointAddr(ID_A, set(addr.addrs))  # type: ignore[arg-type]
    assert hash(addr) == hash(EndpointAddr(ID_A, addr.addrs))
    assert isinstance(EndpointAddr(ID_A, [TransportAddr.Ip("1.2.3.4", 5)]).addrs, frozenset)  # type: ignore[arg-type]
    assert repr(addr).startswith(f"EndpointAddr({ID_A}, [TransportAddr.Relay('http://relay.example/')")
    with pytest.raises(AttributeError):
        addr.id = ID_A  # type: ignore[misc]
    with pytest.raises(InvalidAddr):
        base.with_ip_addr("nope")


def test_endpoint_addr_type_checks() -> None:
    with pytest.raises(TypeError):
        EndpointAddr(str(ID_A))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EndpointAddr(ID_A, frozenset({"1.2.3.4:5"}))  # type: ignore[arg-type]
