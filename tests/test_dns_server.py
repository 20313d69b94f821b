"""``irohpy dns-server`` as a separate process: pkarr over HTTP, DNS over UDP and TCP, storage, limits."""

from __future__ import annotations

import asyncio
import socket
import struct

import aiohttp
import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from irohpy.base.addr import IpAddr
from irohpy.base.keys import SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.lookup.base import EndpointData, EndpointInfo
from irohpy.lookup.pkarr import SignedPacket, next_timestamp_us
from tests.dns_fixture import DnsServerProcess, dns_server

ORIGIN = "irohpy.test."
CT = "application/x-pkarr-signed-packet"
RELAY = RelayUrl("https://relay.example/")


def signed(secret: SecretKey, timestamp_us: int | None = None, **data: object) -> SignedPacket:
    endpoint = EndpointData(frozenset([RELAY]), frozenset(data.get("addrs", [])))  # type: ignore[call-overload]
    ts = next_timestamp_us() if timestamp_us is None else timestamp_us
    return SignedPacket.sign(secret, EndpointInfo(secret.public(), endpoint), ts)


async def put(session: aiohttp.ClientSession, server: DnsServerProcess, z32: str, body: bytes) -> tuple[int, str]:
    async with session.put(f"{server.pkarr_url}/{z32}", data=body, headers={"Content-Type": CT}) as resp:
        return resp.status, await resp.text()


async def query(server: DnsServerProcess, name: str, *, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, dns.rdatatype.TXT)
    host, port = server.dns_addr
    if tcp:
        return await dns.asyncquery.tcp(q, host, port=port, timeout=5)
    return await dns.asyncquery.udp(q, host, port=port, timeout=5)


def txt(response: dns.message.Message) -> list[str]:
    return sorted(b"".join(r.strings).decode() for rrset in response.answer for r in rrset)


def raw_udp(addr: tuple[str, int], payload: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(payload, addr)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


async def test_put_get_and_dns_over_udp_and_tcp() -> None:
    secret = SecretKey.generate()
    z32 = secret.public().to_z32()
    packet = signed(secret, addrs=[IpAddr.parse("192.0.2.7:4433")])
    async with dns_server(ORIGIN) as server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.pkarr_url}/{z32}") as resp:
            assert resp.status == 404
        assert await put(session, server, z32, packet.to_relay_payload()) == (204, "")
        async with session.get(f"{server.pkarr_url}/{z32}") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == CT
            got = SignedPacket.from_relay_payload(secret.public(), await resp.read())
        got.verify()
        assert got == packet
        async with session.get(server.pkarr_url.rsplit("/", 1)[0] + "/healthz") as resp:
            assert resp.status == 200

        for tcp in (False, True):
            response = await query(server, f"_iroh.{z32}.{ORIGIN}", tcp=tcp)
            assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
            assert txt(response) == ["addr=192.0.2.7:4433", "relay=https://relay.example/"]
            assert {rrset.ttl for rrset in response.answer} == {30}
            assert str(response.answer[0].name) == f"_iroh.{z32}.{ORIGIN}"

        unknown = SecretKey.generate().public().to_z32()
        for name in (f"_iroh.{unknown}.{ORIGIN}", f"_iroh.{z32}.elsewhere.example.", f"_iroh.notakey.{ORIGIN}",
                     f"other.{z32}.{ORIGIN}"):
            assert (await query(server, name)).rcode() == dns.rcode.NXDOMAIN, name
        assert server.metric("irohpy_dns_pkarr_puts_total", result="stored") == 1
        assert server.metric("irohpy_dns_queries_total", transport="tcp", result="answer") == 1


async def test_rejected_packets() -> None:
    secret = SecretKey.generate()
    z32 = secret.public().to_z32()
    newer = signed(secret)
    older = signed(secret, newer.timestamp_us - 1)
    async with dns_server(ORIGIN) as server, aiohttp.ClientSession() as session:
        tampered = bytearray(newer.to_relay_payload())
        tampered[-1] ^= 1
        status, text = await put(session, server, z32, bytes(tampered))
        assert status == 400 and "signature" in text
        other = SecretKey.generate().public().to_z32()
        assert (await put(session, server, other, newer.to_relay_payload()))[0] == 400
        assert (await put(session, server, "not-z32!", newer.to_relay_payload()))[0] == 400
        assert (await put(session, server, z32[:-1], newer.to_relay_payload()))[0] == 400
        assert (await put(session, server, z32, newer.to_relay_payload() + bytes(1001)))[0] == 400
        assert (await put(session, server, z32, b"short"))[0] == 400
        async with session.get(f"{server.pkarr_url}/UPPER") as resp:
            assert resp.status == 400

        assert (await put(session, server, z32, newer.to_relay_payload()))[0] == 204
        status, text = await put(session, server, z32, older.to_relay_payload())
        assert status == 409 and "newer" in text
        assert (await put(session, server, z32, newer.to_relay_payload()))[0] == 409  # not strictly newer
        async with session.get(f"{server.pkarr_url}/{z32}") as resp:
            assert SignedPacket.from_relay_payload(secret.public(), await resp.read()) == newer
        assert server.metric("irohpy_dns_pkarr_puts_total", result="invalid") == 6


async def test_malformed_dns_queries_keep_the_server_up() -> None:
    secret = SecretKey.generate()
    z32 = secret.public().to_z32()
    async with dns_server(ORIGIN) as server, aiohttp.ClientSession() as session:
        assert (await put(session, server, z32, signed(secret).to_relay_payload()))[0] == 204
        garbage = struct.pack(">HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"\xff\xfe"
        reply = await asyncio.to_thread(raw_udp, server.dns_addr, garbage)
        assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
        assert await asyncio.to_thread(raw_udp, server.dns_addr, b"\x01") is None  # dropped
        a_response = dns.message.make_response(dns.message.make_query("x.irohpy.test.", "TXT"))
        assert await asyncio.to_thread(raw_udp, server.dns_addr, a_response.to_wire()) is None  # never answer answers

        reader, writer = await asyncio.open_connection(*server.dns_addr)
        try:
            writer.write(struct.pack(">H", len(garbage)) + garbage)
            async with asyncio.timeout(5):
                (length,) = struct.unpack(">H", await reader.readexactly(2))
                reply = await reader.readexactly(length)
            assert reply[3] & 0x0F == dns.rcode.FORMERR
        finally:
            writer.close()
            await writer.wait_closed()

        for tcp in (False, True):
            assert txt(await query(server, f"_iroh.{z32}.{ORIGIN}", tcp=tcp)) == ["relay=https://relay.example/"]
        assert server.running


async def test_rate_limit() -> None:
    config = "[rate_limit]\nmode = \"simple\"\ninterval_secs = 60\nburst = 2\n"
    secret = SecretKey.generate()
    z32 = secret.public().to_z32()
    async with dns_server(ORIGIN, config=config) as server, aiohttp.ClientSession() as session:
        statuses = [(await put(session, server, z32, signed(secret).to_relay_payload()))[0] for _ in range(3)]
        assert statuses == [204, 204, 429]
        assert server.metric("irohpy_dns_pkarr_puts_total", result="rate_limited") == 1


async def test_records_survive_a_restart() -> None:
    secret = SecretKey.generate()
    z32 = secret.public().to_z32()
    packet = signed(secret)
    async with dns_server(ORIGIN) as server, aiohttp.ClientSession() as session:
        assert (await put(session, server, z32, packet.to_relay_payload()))[0] == 204
        await server.restart()
        async with session.get(f"{server.pkarr_url}/{z32}") as resp:
            assert SignedPacket.from_relay_payload(secret.public(), await resp.read()) == packet
        assert txt(await query(server, f"_iroh.{z32}.{ORIGIN}")) == ["relay=https://relay.example/"]
        assert server.metric("irohpy_dns_packets_stored") == 1


# -- the sans-IO parts, in process ---------------------------------------------------------------


def test_store_keeps_newest_and_evicts_by_age(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from irohpy.dns_server.store import PacketStore

    secret = SecretKey.generate()
    a, b = signed(secret, 100), signed(secret, 200)
    store = PacketStore(tmp_path / "db.sqlite")
    try:
        assert store.put(b, now=1000.0) and not store.put(a, now=1001.0)
        assert store.get(secret.public()) == b and len(store) == 1
        assert store.evict(stored_before=999.0) == 0
        assert store.evict(stored_before=1000.5) == 1
        assert store.get(secret.public()) is None
    finally:
        store.close()


def test_rate_limiter_refills() -> None:
    from irohpy.dns_server.ratelimit import PutRateLimiter

    limiter = PutRateLimiter(interval=4.0, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 3.9) and limiter.allow("a", 4.0) and not limiter.allow("a", 4.0)


def test_config_file_and_overrides(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from irohpy.dns_server.config import load_config
    from irohpy.errors import ConfigError

    path = tmp_path / "dns.toml"
    path.write_text('origins = ["a.example.", "b.example."]\nmax_age_secs = 60\n'
                    'db_path = "x.sqlite"\n[rate_limit]\nmode = "disabled"\n')
    config = load_config(path, http_bind="127.0.0.1:0", dns_bind="127.0.0.1:0", metrics_bind="none")
    assert [str(o) for o in config.origins] == ["a.example.", "b.example."]
    assert config.max_age == 60 and config.rate_limit is None and config.metrics_bind is None
    assert str(config.db_path) == "x.sqlite"
    dev = load_config(dev=True, db_path="y")
    assert dev.dns_bind == IpAddr.parse("127.0.0.1:5300") and dev.metrics_bind == IpAddr.parse("127.0.0.1:0")
    path.write_text("typo = 1\n")
    with pytest.raises(ConfigError):
        load_config(path)
    for root in ("", "."):  # `--origin ""` would serve names under the DNS root
        with pytest.raises(ConfigError, match="DNS root"):
            load_config(origins=[root])


def _zone_answer(wire: bytes) -> tuple[bytes | None, str]:
    import dns.name

    from irohpy.dns_server.zone import answer

    packet = signed(SecretKey(bytes([0x2A]) * 32), 1)
    return answer(wire, (dns.name.from_text(ORIGIN),), lambda key: packet if key == packet.public_key else None,
                  udp=True)


def test_zone_names_and_empty_non_terminals() -> None:
    z32 = SecretKey(bytes([0x2A]) * 32).public().to_z32()
    for name, rcode, texts in ((f"_iroh.{z32}.{ORIGIN}", dns.rcode.NOERROR, ["relay=https://relay.example/"]),
                               (f"_IROH.{z32}.{ORIGIN}", dns.rcode.NOERROR, ["relay=https://relay.example/"]),
                               (f"{z32}.{ORIGIN}", dns.rcode.NOERROR, []),
                               (f"x._iroh.{z32}.{ORIGIN}", dns.rcode.NXDOMAIN, []),
                               (ORIGIN, dns.rcode.NXDOMAIN, [])):
        wire, _ = _zone_answer(dns.message.make_query(name, "TXT").to_wire())
        assert wire is not None
        response = dns.message.from_wire(wire)
        assert (response.rcode(), txt(response)) == (rcode, texts), name


def test_zone_fuzz_never_raises() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    valid = dns.message.make_query(f"_iroh.{'y' * 52}.{ORIGIN}", "TXT").to_wire()

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=200), st.integers(0, len(valid) - 1), st.integers(1, 255))
    def check(noise: bytes, at: int, flip: int) -> None:
        _zone_answer(noise)
        mutated = bytearray(valid)
        mutated[at] ^= flip
        _zone_answer(bytes(mutated))

    check()
