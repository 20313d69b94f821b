"""irohpy.metrics: groups, registry encodings, HTTP scrapes, and the values every group
shows after known traffic (endpoint, relay client, lookup, gossip, blobs, relay and DNS servers)."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from irohpy import RelayMode, Router
from irohpy.endpoint import Connection
from irohpy.errors import ConnectError
from irohpy.lookup.base import EndpointData
from irohpy.lookup.dns import DnsAddressLookup
from irohpy.lookup.metrics import AddressLookupMetrics
from irohpy.lookup.pkarr_client import PkarrPublisher
from irohpy.metrics import Counter, Gauge, Histogram, MetricsGroup, Registry, serve_metrics
from irohpy.protocols.blobs.downloader import Downloader
from irohpy.protocols.blobs.metrics import BlobsMetrics
from irohpy.protocols.blobs.provider import BlobsProtocol
from irohpy.protocols.blobs.store import MemStore
from irohpy.protocols.blobs.wire import ALPN as BLOBS_ALPN
from irohpy.protocols.gossip import Gossip, TopicId
from irohpy.protocols.gossip.metrics import GossipMetrics
from irohpy.relay.client_metrics import RelayClientMetrics
from irohpy.socket.metrics import SocketMetrics
from tests.dns_fixture import dns_server
from tests.helpers import accept_one, bind
from tests.relay_fixture import relay_server
from tests.test_blob_transfer import CorruptingStore
from tests.test_relay_client import relay_addr, relay_endpoint

PING_ALPN = b"irohpy/test/metrics-ping/0"
T = 10.0


class PingMetrics(MetricsGroup, name="ping"):
    pings_recv = Counter()
    """Pings the handler answered."""
    bytes_recv = Counter("Payload bytes received")
    open_streams = Gauge("Streams being served now")
    payload = Histogram("Payload sizes", buckets=(8, 64, 512))


class PingHandler:
    def __init__(self, metrics: PingMetrics) -> None:
        self.metrics = metrics

    async def accept(self, conn: Connection) -> None:
        while True:
            try:
                send, recv = await conn.accept_bi()
            except Exception:
                return
            self.metrics.open_streams.inc()
            data = await recv.read_to_end(1024)
            self.metrics.pings_recv.inc()
            self.metrics.bytes_recv.inc(len(data))
            self.metrics.payload.observe(len(data))
            await send.write_all(data)
            await send.finish()
            self.metrics.open_streams.dec()

    async def shutdown(self) -> None:
        pass


def _samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_group_fields_help_labels_and_both_encodings() -> None:
    m = PingMetrics()
    assert PingMetrics().pings_recv.get() == 0  # every instance has its own values
    m.pings_recv.inc(3)
    m.payload.observe(5)
    m.payload.observe(100)
    registry = Registry(prefix="app")
    registry.register(m)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(PingMetrics())
    sub = registry.sub_registry(labels={"node": "b"})
    sub.register(PingMetrics()).pings_recv.inc()
    text = registry.encode_prometheus().decode()
    assert "# HELP app_ping_pings_recv_total Pings the handler answered." in text
    values = _samples(text)
    assert values["app_ping_pings_recv_total"] == 3
    assert values['app_ping_pings_recv_total{node="b"}'] == 1
    assert values['app_ping_payload_bucket{le="8.0"}'] == 1
    assert values['app_ping_payload_bucket{le="+Inf"}'] == 2
    assert values["app_ping_payload_sum"] == 105
    om = registry.encode_openmetrics().decode()
    assert om.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(om)}
    assert families["app_ping_pings_recv"].type == "counter"
    assert families["app_ping_open_streams"].type == "gauge"
    with pytest.raises(ValueError):
        m.pings_recv.inc(-1)
    with pytest.raises(TypeError, match="group name"):
        type("Nameless", (MetricsGroup,), {})


async def test_custom_group_from_a_protocol_handler_scraped_over_http() -> None:
    server, client = await bind(), await bind()
    metrics = server.metrics().group(PingMetrics)
    router = Router.builder(server).accept(PING_ALPN, PingHandler(metrics)).spawn()
    try:
        async with serve_metrics("127.0.0.1:0", server.metrics()) as url:
            conn = await client.connect(server.addr(), PING_ALPN, timeout=T)
            for size in (4, 40, 400):
                send, recv = await conn.open_bi()
                await send.write_all(os.urandom(size))
                await send.finish()
                assert len(await recv.read_to_end(1024)) == size
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as resp:
                    assert resp.status == 200
                    values = _samples(await resp.text())
                async with http.get(url, headers={"Accept": "application/openmetrics-text"}) as resp:
                    assert "openmetrics" in resp.headers["Content-Type"]
                    assert (await resp.text()).endswith("# EOF\n")
            conn.close()
    finally:
        await client.close()
        await router.shutdown()
    assert values["ping_pings_recv_total"] == 3
    assert values["ping_bytes_recv_total"] == 444
    assert values['ping_payload_bucket{le="64.0"}'] == 2
    assert values["ping_open_streams"] == 0
    assert values["magicsock_num_conns_opened_total"] == 1
    assert values["magicsock_recv_data_ipv4_total"] >= 444


async def test_endpoint_group_counts_direct_bytes_and_connections() -> None:
    a, b = await bind([PING_ALPN]), await bind([PING_ALPN])
    payload = os.urandom(1 << 20)
    try:
        accepted = asyncio.create_task(accept_one(b))
        conn = await a.connect(b.addr(), PING_ALPN, timeout=T)
        peer = await accepted
        send, _ = await conn.open_bi()
        await send.write_all(payload)
        await send.finish()
        _, recv = await peer.accept_bi()
        assert await recv.read_to_end(len(payload)) == payload
        conn.close()
        with pytest.raises(ConnectError):
            await a.connect(b.addr(), b"irohpy/test/nobody/0", timeout=2)
        ma, mb = a.metrics().group(SocketMetrics), b.metrics().group(SocketMetrics)
        async with asyncio.timeout(T):
            while ma.connections.get() or mb.connections.get() or not sum(
                    v.get() for _, v in ma.num_conns_failed.series()):
                await asyncio.sleep(0.02)
        # The group counts exactly what the sockets wrote and read.
        assert ma.send_ipv4.get() == sum(s.sent_bytes for s in a._transport.sockets) > len(payload)
        assert mb.recv_data_ipv4.get() == sum(s.recv_bytes for s in b._transport.sockets) > len(payload)
        assert ma.send_datagrams.labels("ipv4").get() == sum(s.sent_datagrams for s in a._transport.sockets)
        assert ma.send_relay.get() == 0 and ma.send_ipv6.get() == 0
        assert ma.num_conns_opened.get() == 1 and ma.num_conns_closed.get() == 1
        assert sum(v.get() for _, v in ma.num_conns_failed.series()) == 1  # labelled by reason
        assert ma.paths_opened.labels("ipv4").get() >= 1
    finally:
        await a.close()
        await b.close()


async def test_relay_client_and_server_groups_agree() -> None:
    async with relay_server() as relay:
        a = await relay_endpoint([relay.url], [PING_ALPN], relay_only=True)
        b = await relay_endpoint([relay.url], [PING_ALPN], relay_only=True)
        payload = os.urandom(300_000)
        try:
            async with asyncio.timeout(T):
                await a.online()
                await b.online()
            accepted = asyncio.create_task(accept_one(b))
            conn = await a.connect(relay_addr(b), PING_ALPN, timeout=T)
            peer = await accepted
            send, _ = await conn.open_bi()
            await send.write_all(payload)
            await send.finish()
            _, recv = await peer.accept_bi()
            assert await recv.read_to_end(len(payload)) == payload
            ma, mb = a.metrics().group(SocketMetrics), b.metrics().group(SocketMetrics)
            ca = a.metrics().group(RelayClientMetrics)
            assert ca.connects.get() == 1 and ca.connected.get() == 1
            assert ma.send_relay.get() > len(payload) and ma.send_ipv4.get() == 0
            conn.close()
            # Quiet now: what the relay wrote to its two clients is what they received.
            async with asyncio.timeout(T):
                while True:
                    forwarded = relay.forwarded_bytes()
                    received = ma.recv_data_relay.get() + mb.recv_data_relay.get()
                    if forwarded == received:
                        break
                    await asyncio.sleep(0.05)
            assert relay.metric("iroh_relay_accepts_total") == 2
            assert relay.metric("iroh_relay_connections") == 2
            assert received >= len(payload)
        finally:
            await a.close()
            await b.close()


async def test_gossip_group_counts_messages_and_neighbors() -> None:
    topic_id = TopicId.from_name("metrics")
    eps = [await bind(relay_mode=RelayMode.DISABLED) for _ in range(3)]
    gossips = [Gossip(ep) for ep in eps]
    routers = [Router.builder(ep).accept(g.alpn, g).spawn() for ep, g in zip(eps, gossips)]
    try:
        first = await gossips[0].subscribe(topic_id)
        others = [await g.subscribe(topic_id, bootstrap=[eps[0].addr()]) for g in gossips[1:]]
        for topic in [first, *others]:
            await topic.joined(timeout=T)
        for i in range(5):
            await first.broadcast(b"message %d" % i)
        metrics = [ep.metrics().group(GossipMetrics) for ep in eps]
        assert all(g.metrics is m for g, m in zip(gossips, metrics))
        async with asyncio.timeout(T):
            while any(m.msgs_delivered.get() < 5 for m in metrics[1:]):
                await asyncio.sleep(0.02)
        assert metrics[0].msgs_data_sent.get() >= 5
        assert all(m.msgs_delivered.get() == 5 for m in metrics[1:])
        assert all(m.msgs_data_recv.get() >= 5 for m in metrics[1:])
        assert all(m.neighbor_up.get() >= 1 and m.neighbors.get() >= 1 for m in metrics)
        # What arrives twice is counted as a duplicate, never delivered twice.
        recv = sum(m.msgs_data_recv.get() for m in metrics)
        assert recv == sum(m.msgs_delivered.get() + m.msgs_duplicate_recv.get() for m in metrics)
        assert metrics[0].msgs_ctrl_recv.get() >= 2  # the two joins
    finally:
        await asyncio.gather(*(r.shutdown() for r in routers))


async def test_blobs_group_counts_bytes_and_verification_failures() -> None:
    data = os.urandom(3 << 20)
    good, bad = MemStore(), CorruptingStore(offset=1_000_000)
    digest = await good.import_bytes(data)
    await bad.import_bytes(data)
    provider_ep, bad_ep, ep = await bind([BLOBS_ALPN]), await bind([BLOBS_ALPN]), await bind()
    served = provider_ep.metrics().group(BlobsMetrics)
    routers = [Router.builder(provider_ep).accept(BLOBS_ALPN, BlobsProtocol(good, metrics=served)).spawn(),
               Router.builder(bad_ep).accept(BLOBS_ALPN, BlobsProtocol(bad)).spawn()]
    try:
        target = MemStore()
        stats = await Downloader(ep, target).fetch(digest, [provider_ep.addr()])
        # The size probe's last chunk does not fill its chunk group, so it is fetched again.
        assert len(data) <= stats.bytes_fetched <= len(data) + 1024
        fetched = ep.metrics().group(BlobsMetrics)
        assert fetched.download_bytes.get() == stats.bytes_fetched
        assert fetched.downloads_success.get() == 1
        assert served.requests.labels("served").get() >= 1
        assert served.bytes_served.get() > len(data)  # data plus the bao tree
        with pytest.raises(Exception):
            await Downloader(ep, MemStore()).fetch(digest, [bad_ep.addr()])
        assert fetched.verification_failures.get() == 1
        assert fetched.downloads_error.get() == 1
    finally:
        await ep.close()
        await asyncio.gather(*(r.shutdown() for r in routers))


async def test_lookup_group_and_dns_server_group_after_publish_and_resolve() -> None:
    async with dns_server(origin="irohpy.test.") as server_dns:
        server = await bind([PING_ALPN])
        publisher = PkarrPublisher(server.secret_key, server_dns.pkarr_url, addr_filter=lambda a: a)
        server.address_lookup.add(publisher)
        server.address_lookup.publish(EndpointData.from_addr(server.addr()))
        client = await bind(address_lookup=[DnsAddressLookup("irohpy.test.", nameservers=[server_dns.dns_addr])])
        try:
            async with asyncio.timeout(T):
                while publisher.published == 0:
                    await asyncio.sleep(0.02)
            accepted = asyncio.create_task(accept_one(server))
            conn = await client.connect(server.id, PING_ALPN, timeout=T)
            await accepted
            conn.close()
            published = server.metrics().group(AddressLookupMetrics)
            resolved = client.metrics().group(AddressLookupMetrics)
            assert published.publishes.labels("PkarrPublisher").get() >= 1
            assert resolved.resolves.labels("DnsAddressLookup").get() == 1
            assert resolved.resolve_results.labels("DnsAddressLookup").get() >= 1
            assert resolved.resolve_failures.labels("DnsAddressLookup").get() == 0
            assert server_dns.metric("irohpy_dns_pkarr_puts_total", result="stored") == publisher.published
            assert server_dns.metric("irohpy_dns_queries_total", transport="udp", result="answer") >= 1
        finally:
            await client.close()
            await server.close()
