"""Address lookup in the endpoint: dial by EndpointId alone, combined sources, publishing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from irohpy import Endpoint, RelayMode, SecretKey, presets
from irohpy.base.keys import EndpointId
from irohpy.errors import ConnectError
from irohpy.lookup import EndpointData, EndpointInfo, LookupItem
from irohpy.lookup.combined import CombinedLookup
from irohpy.lookup.dns import DnsAddressLookup
from irohpy.lookup.memory import MemoryLookup
from irohpy.lookup.pkarr_client import PkarrPublisher, PkarrResolver, everything
from tests.dns_fixture import dns_server
from tests.helpers import accept_one, bind, endpoints
from tests.relay_fixture import relay_server

ALPN = b"test/lookup/0"


class Recorder:
    """A lookup that records what is published and answers from a fixed table."""

    def __init__(self, answers: dict[EndpointId, EndpointInfo] | None = None, fail: bool = False) -> None:
        self.published: list[EndpointData] = []
        self.answers = answers or {}
        self.fail = fail

    def publish(self, data: EndpointData) -> None:
        self.published.append(data)

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        if self.fail:
            raise RuntimeError("this source is down")
        if endpoint_id in self.answers:
            yield LookupItem(self.answers[endpoint_id], "recorder")

    async def close(self) -> None:
        pass


async def test_dial_by_endpoint_id_alone_through_memory_lookup() -> None:
    async with endpoints(1, [ALPN]) as (server,):
        memory = MemoryLookup()
        memory.add(server.addr())
        client = await bind(address_lookup=[Recorder(fail=True), memory])
        try:
            accepted = asyncio.create_task(accept_one(server))
            conn = await client.connect(server.id, ALPN, timeout=5)
            assert conn.remote_id == server.id
            await accepted
            conn.close()
        finally:
            await client.close()


async def test_dial_by_id_without_any_answer_fails_clearly() -> None:
    async with endpoints(1) as (client,):
        with pytest.raises(ConnectError, match="no addresses known"):
            await client.connect(SecretKey.generate().public(), ALPN, timeout=1)


async def test_combined_lookup_merges_and_tags_sources() -> None:
    endpoint_id = SecretKey.generate().public()
    info = EndpointInfo(endpoint_id, EndpointData(user_data="hello"))
    memory = MemoryLookup()
    memory.add(info.to_addr(), "hello")
    combined = CombinedLookup([Recorder({endpoint_id: info}), Recorder(fail=True), memory])
    items = [item async for item in combined.resolve(endpoint_id)]
    assert sorted(i.provenance for i in items) == ["memory", "recorder"]
    assert all(i.info.endpoint_id == endpoint_id for i in items)
    assert [i async for i in combined.resolve(SecretKey.generate().public())] == []


async def test_endpoint_publishes_on_bind_and_when_home_relay_appears() -> None:
    async with relay_server() as relay:
        recorder = Recorder()
        ep = await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.custom([relay.url]),
                                 bind_addrs=["127.0.0.1:0"], address_lookup=[recorder])
        try:
            async with asyncio.timeout(10):
                await ep.online()
                while not any(d.relay_urls for d in recorder.published):
                    await asyncio.sleep(0.02)
            latest = recorder.published[-1]
            assert latest.relay_urls == frozenset(ep.addr().relay_urls())
            assert latest.ip_addrs == frozenset(ep.addr().ip_addrs())
        finally:
            await ep.close()


@pytest.mark.parametrize("how", ["dns-udp", "dns-tcp", "pkarr-http"])
async def test_dial_by_id_through_our_dns_server(how: str) -> None:
    async with dns_server(origin="irohpy.test.") as server_dns:
        server = await bind([ALPN])
        publisher = PkarrPublisher(server.secret_key, server_dns.pkarr_url, addr_filter=everything)
        server.address_lookup.add(publisher)
        publisher.publish(EndpointData.from_addr(server.addr()))
        if how == "pkarr-http":
            resolver = PkarrResolver(server_dns.pkarr_url)
        else:
            resolver = DnsAddressLookup("irohpy.test.", nameservers=[server_dns.dns_addr], tcp=how == "dns-tcp")
        client = await bind(address_lookup=[resolver])
        try:
            async with asyncio.timeout(10):
                while publisher.published == 0:
                    await asyncio.sleep(0.02)
            accepted = asyncio.create_task(accept_one(server))
            conn = await client.connect(server.id, ALPN, timeout=10)
            assert conn.remote_id == server.id
            await accepted
            conn.close()
        finally:
            await client.close()
            await server.close()
