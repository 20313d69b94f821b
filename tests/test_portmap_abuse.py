"""A malicious gateway on a loopback address: junk, forged, bloated and slow answers.

Whatever it sends, every port-mapping step ends within its deadline with a typed error
or "not available", memory stays bounded (bodies stop at igd.MAX_DOCUMENT), and the
service closes promptly with no mapping advertised.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time

import pytest
from aiohttp import web

from irohpy.errors import PortMapError
from irohpy.portmapper import Portmapper, igd, mapping, natpmp, pcp, upnp
from irohpy.portmapper.gateway import Home
from irohpy.portmapper.mapping import Probe, Protocol

pytestmark = pytest.mark.timeout(60)
V4_EXTERNAL = bytes(10) + b"\xff\xff" + bytes([203, 0, 113, 21])


def loopback_gateway() -> Home:
    """A random 127/8 address: lo answers for all of it, so the fake gateway needs no setup."""
    return Home(f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}", "127.0.0.1")


class Junk(asyncio.DatagramProtocol):
    """Answers every request with ``answer(request)`` datagrams (a list)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.requests += 1
        for reply in self.answer(data):
            self.transport.sendto(reply, addr)


async def serve_udp(home: Home, port: int, answer):
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(lambda: Junk(answer), local_addr=(home.gateway, port))


def garbage(_: bytes) -> list[bytes]:
    return [os.urandom(random.randint(0, 1200)) for _ in range(16)]


def forged_pcp(request: bytes) -> list[bytes]:
    """Well-formed MAP answers, but for another nonce, and one with a one-second lease."""
    if len(request) < 60:
        return []
    port = struct.unpack_from("!H", request, 40)[0]
    v6 = request[8:24]
    wrong = struct.pack("!BBBBII12x", 2, 0x81, 0, 0, 3600, 1) + struct.pack("!12sB3xHH16s", os.urandom(12), 17,
                                                                             port, port, v6)
    short = struct.pack("!BBBBII12x", 2, 0x81, 0, 0, 1, 1) + struct.pack("!12sB3xHH16s", request[24:36], 17, port,
                                                                          port, v6)
    return [wrong] * 8 + [short]


async def test_junk_and_forged_udp_answers_end_in_no_mapping_within_the_retries() -> None:
    home = loopback_gateway()
    transport, junk = await serve_udp(home, pcp.SERVER_PORT, garbage)
    try:
        start = time.monotonic()
        found = await mapping.probe(home, (Protocol.PCP, Protocol.NAT_PMP))
        assert found == Probe()
        with pytest.raises(PortMapError):
            await mapping.create(Protocol.NAT_PMP, home, 4000, found)
        assert time.monotonic() - start < 5.0
        assert junk.requests >= 4
    finally:
        transport.close()
    home = loopback_gateway()
    transport, _ = await serve_udp(home, pcp.SERVER_PORT, forged_pcp)
    try:
        with pytest.raises(PortMapError, match="lease of 1"):
            await mapping.create(Protocol.PCP, home, 4000, Probe(pcp=True))
    finally:
        transport.close()


async def test_natpmp_answer_for_another_port_is_ignored() -> None:
    home = loopback_gateway()

    def other_port(request: bytes) -> list[bytes]:
        if request[:2] == b"\x00\x00":
            return [struct.pack("!BBHI4s", 0, 128, 0, 1, bytes([203, 0, 113, 21]))]
        return [struct.pack("!BBHIHHI", 0, 129, 0, 1, 9999, 9999, 7200)]

    transport, _ = await serve_udp(home, natpmp.SERVER_PORT, other_port)
    try:
        with pytest.raises(PortMapError, match="did not answer"):
            await mapping.create(Protocol.NAT_PMP, home, 4000, Probe(nat_pmp="203.0.113.21"))
    finally:
        transport.close()


@pytest.fixture
async def evil_http():
    """An HTTP 'gateway' whose description and control URLs misbehave in chosen ways."""
    home = loopback_gateway()
    sent = {"bytes": 0}

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"<a>" + b"x" * 65536
        try:
            for _ in range(160):  # 10 MiB if the client kept reading
                await resp.write(chunk)
                sent["bytes"] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(60):
                await resp.write(b" ")
                await asyncio.sleep(0.5)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def laughs(request: web.Request) -> web.Response:
        entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))
        return web.Response(body=f'<?xml version="1.0"?><!DOCTYPE r [{entities}]><r>&l9;</r>'.encode())

    async def fault_forever(request: web.Request) -> web.Response:
        return web.Response(status=500, body=(
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail><UPnPError>'
            b"<errorCode>718</errorCode></UPnPError></detail></s:Fault></s:Body></s:Envelope>"))

    app = web.Application()
    app.router.add_get("/huge.xml", huge)
    app.router.add_get("/slow.xml", slow)
    app.router.add_get("/laughs.xml", laughs)
    app.router.add_post("/ctl", fault_forever)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, home.gateway, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{home.gateway}:{port}", sent
    finally:
        await runner.cleanup()


async def test_huge_description_is_cut_off_at_the_bound(evil_http) -> None:
    base, sent = evil_http
    with pytest.raises(PortMapError, match="size limit"):
        await upnp.describe(f"{base}/huge.xml")
    await asyncio.sleep(0.1)
    assert sent["bytes"] < 64 * igd.MAX_DOCUMENT, "the client must stop reading, not swallow 10 MiB"


async def test_slow_description_times_out(evil_http) -> None:
    base, _ = evil_http
    start = time.monotonic()
    with pytest.raises(PortMapError):
        await upnp.describe(f"{base}/slow.xml")
    assert time.monotonic() - start < upnp.HTTP_TIMEOUT + 2.0


async def test_billion_laughs_is_refused(evil_http) -> None:
    base, _ = evil_http
    with pytest.raises(PortMapError, match="DOCTYPE"):
        await upnp.describe(f"{base}/laughs.xml")


async def test_conflict_every_time_gives_up_after_a_few_ports(evil_http) -> None:
    base, _ = evil_http
    service = igd.Service(f"{base}/ctl", "urn:schemas-upnp-org:service:WANIPConnection:1")
    with pytest.raises(Exception) as failed:
        await upnp.add_mapping(service, "127.0.0.1", 4000, 4000)
    assert getattr(failed.value, "code", None) == igd.CONFLICT


async def test_service_against_a_junk_gateway_advertises_nothing_and_closes_promptly() -> None:
    home = loopback_gateway()
    transport, junk = await serve_udp(home, pcp.SERVER_PORT, garbage)
    changes = []
    try:
        mapper = Portmapper(4000, on_change=lambda: changes.append(1), protocols=(Protocol.PCP, Protocol.NAT_PMP),
                            find_home=lambda: home)
        async with asyncio.timeout(10):
            while junk.requests < 4:
                await asyncio.sleep(0.05)
        start = time.monotonic()
        await mapper.close()
        assert time.monotonic() - start < 1.0
        assert mapper.external is None and changes == []
        assert mapper.metrics.probes_started.get() >= 1 and mapper.metrics.pcp_available.get() == 0
    finally:
        transport.close()


async def test_a_socket_bound_elsewhere_is_never_mapped() -> None:
    """Bound to one address, the mapper asks no gateway reached from another (nothing would listen)."""
    home = loopback_gateway()
    transport, junk = await serve_udp(home, pcp.SERVER_PORT, garbage)
    try:
        mapper = Portmapper(4000, bound_ip="127.0.0.2", protocols=(Protocol.PCP,), find_home=lambda: home)
        await asyncio.sleep(0.3)
        await mapper.close()
        assert junk.requests == 0 and mapper.probe is None
    finally:
        transport.close()


async def test_renewal_at_half_the_lease_then_expiry_when_the_gateway_goes_quiet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A PCP gateway granting 2 s leases (the floor lowered for the test): the service renews
    with the same nonce and port after 1 s; once the gateway stops answering, the mapping is
    withdrawn when the lease ends."""
    monkeypatch.setattr(mapping, "MIN_LIFETIME", 1)
    home = loopback_gateway()
    maps: list[bytes] = []
    answering = True

    def gateway(request: bytes) -> list[bytes]:
        if request[1] == pcp.OP_ANNOUNCE:
            return [struct.pack("!BBBBII12x", 2, 0x80, 0, 0, 0, 1)]
        if not answering or len(request) < 60:
            return []
        maps.append(request)
        nonce, port = request[24:36], struct.unpack_from("!H", request, 40)[0]
        return [struct.pack("!BBBBII12x", 2, 0x81, 0, 0, 2, 1)
                + struct.pack("!12sB3xHH16s", nonce, 17, port, 40000, V4_EXTERNAL)]

    transport, _ = await serve_udp(home, pcp.SERVER_PORT, gateway)
    changes: list[object] = []
    mapper = Portmapper(4000, protocols=(Protocol.PCP,), find_home=lambda: home,
                        on_change=lambda: changes.append(mapper.external))
    try:
        async with asyncio.timeout(10):
            while len(maps) < 2:
                await asyncio.sleep(0.05)
        assert changes == [("203.0.113.21", 40000)]
        assert maps[1][24:36] == maps[0][24:36], "a renewal repeats the nonce"
        assert struct.unpack_from("!H", maps[1], 42)[0] == 40000, "and asks for the same external port"
        answering = False
        async with asyncio.timeout(10):
            while mapper.external is not None:
                await asyncio.sleep(0.05)
        assert changes == [("203.0.113.21", 40000), None]
        m = mapper.metrics
        assert m.pcp_available.get() >= 1 and m.mapping_attempts.get() >= 3 and m.mapping_failures.get() >= 1
        assert m.external_address_updated.get() == 2 and m.mapped.get() == 0
    finally:
        await mapper.close()
        transport.close()


@pytest.mark.netns
async def test_ssdp_junk_and_foreign_locations_find_no_gateway() -> None:
    """SSDP also goes to the multicast group, so this runs only in a loopback-only namespace."""
    home = loopback_gateway()
    answer = (b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
              b"LOCATION: http://%s:5000/rootDesc.xml\r\n\r\n")

    def evil(_: bytes) -> list[bytes]:
        return [*garbage(b""), b"X" * 60000, answer % b"203.0.113.9"]

    transport, junk = await serve_udp(home, 1900, evil)
    try:
        start = time.monotonic()
        assert await upnp.search(home.gateway, home.local_ip) is None
        assert time.monotonic() - start < upnp.SEARCH_TIMEOUT + 1.0 and junk.requests >= 1
    finally:
        transport.close()
    home = loopback_gateway()
    transport, _ = await serve_udp(home, 1900, lambda _: [*garbage(b""), answer % home.gateway.encode()])
    try:
        assert await upnp.search(home.gateway, home.local_ip) == f"http://{home.gateway}:5000/rootDesc.xml"
    finally:
        transport.close()
