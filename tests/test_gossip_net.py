"""Gossip over real QUIC on loopback: the API, many endpoints, churn, and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from irohpy import RelayMode
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import ApplicationClosed, GossipError
from irohpy.protocols.gossip import (
    Config,
    Gossip,
    GossipTopic,
    Lagged,
    NeighborDown,
    NeighborUp,
    Received,
    TopicId,
)
from irohpy.protocols.gossip.wire import ALPN, Join, encode_frame, encode_header, encode_message
from irohpy.protocols.router import Router
from tests.helpers import bind

TOPIC = TopicId.from_name("test topic")


@dataclass
class Node:
    endpoint: Endpoint
    gossip: Gossip
    router: Router

    async def close(self) -> None:
        await self.router.shutdown()


async def start_node(**kwargs: object) -> Node:
    ep = await bind(relay_mode=RelayMode.DISABLED)
    gossip = Gossip(ep, **kwargs)  # type: ignore[arg-type]
    router = Router.builder(ep).accept(gossip.alpn, gossip).spawn()
    return Node(ep, gossip, router)


@contextlib.asynccontextmanager
async def nodes(n: int, **kwargs: object) -> AsyncIterator[list[Node]]:
    started = [await start_node(**kwargs) for _ in range(n)]
    try:
        yield started
    finally:
        await asyncio.gather(*(node.close() for node in started))


async def next_received(topic: GossipTopic, timeout: float = 10.0) -> Received:
    async with asyncio.timeout(timeout):
        async for event in topic.receiver:
            if isinstance(event, Received):
                return event
    raise AssertionError("receiver ended")


def test_topic_id() -> None:
    assert TopicId.from_name("chat").to_bytes() == hashlib.sha256(b"chat").digest()
    assert TopicId.from_bytes(bytes(32)) == TopicId(bytes(32))
    with pytest.raises(ValueError):
        TopicId.from_bytes(b"short")


async def test_two_nodes_broadcast_both_ways() -> None:
    async with nodes(2) as (a, b):
        ta = await a.gossip.subscribe(TOPIC)
        tb = await b.gossip.subscribe(TOPIC, bootstrap=[a.endpoint.addr()])
        await tb.joined(timeout=10)
        await ta.joined(timeout=10)
        assert tb.neighbors == {a.endpoint.id}
        await tb.broadcast(b"hello from b")
        got = await next_received(ta)
        assert got == Received(b"hello from b", b.endpoint.id)
        await ta.sender.broadcast_neighbors(b"neighbors only")
        got = await next_received(tb)
        assert got.content == b"neighbors only" and got.neighbors_only
        await ta.close()
        await tb.close()


async def test_oversized_message_is_an_error_for_the_sender() -> None:
    async with nodes(1) as (a,):
        async with await a.gossip.subscribe(TOPIC) as topic:
            await topic.broadcast(b"x" * (a.gossip.max_message_size - 100))
            with pytest.raises(GossipError, match="too large"):
                await topic.broadcast(b"x" * a.gossip.max_message_size)


async def test_clean_shutdown_tells_neighbors() -> None:
    async with nodes(2) as (a, b):
        ta = await a.gossip.subscribe(TOPIC)
        tb = await b.gossip.subscribe(TOPIC, bootstrap=[a.endpoint.addr()])
        await ta.joined(timeout=10)
        await b.gossip.shutdown()
        async with asyncio.timeout(10):
            events = [e async for e in _until(ta, NeighborDown)]
        assert events[-1] == NeighborDown(b.endpoint.id)
        assert ta.neighbors == frozenset()
        with pytest.raises(GossipError):
            await tb.broadcast(b"after shutdown")
        await ta.close()


async def _until(topic: GossipTopic, kind: type) -> AsyncIterator[object]:
    async for event in topic.receiver:
        yield event
        if isinstance(event, kind):
            return


async def test_slow_receiver_sees_lagged() -> None:
    async with nodes(2, event_capacity=4) as (a, b):
        ta = await a.gossip.subscribe(TOPIC)
        tb = await b.gossip.subscribe(TOPIC, bootstrap=[a.endpoint.addr()])
        await tb.joined(timeout=10)
        await ta.joined(timeout=10)
        for i in range(20):
            await ta.broadcast(b"m%d" % i)
        async with asyncio.timeout(10):
            while True:
                await asyncio.sleep(0.05)
                if len(tb.receiver._queue) == 4 and tb.receiver._queue[-1] == Received(b"m19", a.endpoint.id):
                    break
        events = [await anext(tb.receiver) for _ in range(5)]
        assert isinstance(events[0], Lagged)
        assert [e.content for e in events[1:]] == [b"m16", b"m17", b"m18", b"m19"]  # type: ignore[union-attr]
        await ta.close()
        await tb.close()
def _connected(members: list[Node], topics: list[GossipTopic]) -> bool:
    """Whether the neighbor graph among ``members`` is one component that names no one else."""
    ids = {n.endpoint.id: t for n, t in zip(members, topics, strict=True)}
    if any(not t.neighbors or not t.neighbors <= ids.keys() for t in topics):
        return False
    seen, todo = set(), [next(iter(ids))]
    while todo:
        peer = todo.pop()
        if peer not in seen:
            seen.add(peer)
            todo.extend(ids[peer].neighbors - seen)
    return seen == ids.keys()


async def _until_connected(members: list[Node], topics: list[GossipTopic], timeout: float) -> None:
    """The overlay repairs itself at the machine's pace: wait for it, not for a fixed time."""
    async with asyncio.timeout(timeout):
        while not _connected(members, topics):
            await asyncio.sleep(0.1)


async def _until_passive_views_hold(members: list[Node], count: int, timeout: float) -> None:
    """HyParView repairs from passive views, which fill by shuffling: a node that lost every
    neighbor and knows nobody else stays cut off, so losing a third is survivable only after
    the swarm has mixed."""
    async with asyncio.timeout(timeout):
        while any(len(n.gossip._topics[TOPIC.value].state.passive) < count for n in members):
            await asyncio.sleep(0.1)


@pytest.mark.timeout(600)
async def test_thirty_endpoints_all_deliver_and_survive_losing_a_third() -> None:
    """Every node broadcasts; every message reaches all others. Once shuffles have filled the
    passive views, 10 endpoints close without leaving the topic, the overlay repairs itself,
    and delivery among the remaining 20 goes on. Deadlines follow how long the first round
    took on this machine."""
    async with nodes(30, config=Config(shuffle_interval=1.0)) as swarm:
        topics = [await swarm[0].gossip.subscribe(TOPIC)]
        for i, node in enumerate(swarm[1:], 1):
            contact = swarm[(i - 1) // 2].endpoint.addr()  # a tree of contacts, like tickets passed on
            topics.append(await node.gossip.subscribe(TOPIC, bootstrap=[contact]))
        await asyncio.gather(*(t.joined(timeout=60) for t in topics))
        await _until_connected(swarm, topics, 60)

        async def collect(topic: GossipTopic, want: set[bytes], timeout: float) -> set[bytes]:
            got: set[bytes] = set()
            async with asyncio.timeout(timeout):
                async for event in topic.receiver:
                    if isinstance(event, Received) and event.content in want:
                        got.add(event.content)
                        if got == want:
                            return got
            return got

        started = asyncio.get_running_loop().time()
        msgs = [b"round 1 from %d" % i for i in range(30)]
        waits = [asyncio.ensure_future(collect(t, set(msgs) - {msgs[i]}, 90)) for i, t in enumerate(topics)]
        for topic, msg in zip(topics, msgs, strict=True):
            await topic.broadcast(msg)
        results = await asyncio.gather(*waits)
        assert all(got == set(msgs) - {msgs[i]} for i, got in enumerate(results))
        pace = asyncio.get_running_loop().time() - started  # how fast this machine gossips right now

        await _until_passive_views_hold(swarm, 10, max(60.0, 10 * pace))
        killed, alive = swarm[:30:3], [n for i, n in enumerate(swarm) if i % 3]
        alive_topics = [t for i, t in enumerate(topics) if i % 3]
        for node in killed:
            await node.endpoint.close()
        await _until_connected(alive, alive_topics, max(60.0, 10 * pace))
        msgs = [b"round 2 from %d" % i for i in range(len(alive))]
        waits = [asyncio.ensure_future(collect(t, set(msgs) - {msgs[i]}, max(60.0, 5 * pace)))
                 for i, t in enumerate(alive_topics)]
        for topic, msg in zip(alive_topics, msgs, strict=True):
            await topic.broadcast(msg)
        results = await asyncio.gather(*waits)
        assert all(got == set(msgs) - {msgs[i]} for i, got in enumerate(results))
        assert all(t.neighbors for t in alive_topics)


# -- bad input from a raw peer ------------------------------------------------------------------


async def _raw_stream(raw: Endpoint, node: Node):  # type: ignore[no-untyped-def]
    conn = await raw.connect(node.endpoint.addr(), ALPN, timeout=10)
    return conn, await conn.open_uni()


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"\x00\x00\x00\x05hello",  # header frame that is not 32 bytes
        b"\x00\x01\x00\x00" + bytes(100),  # frame length over the 4096-byte limit
    ],
    ids=["short-header", "oversized-header-frame"],
)
async def test_bad_stream_header_closes_the_connection(first_bytes: bytes) -> None:
    async with nodes(1) as (a,):
        async with await a.gossip.subscribe(TOPIC):
            raw = await bind(relay_mode=RelayMode.DISABLED)
            try:
                conn, stream = await _raw_stream(raw, a)
                await stream.write_all(first_bytes)
                async with asyncio.timeout(10):
                    reason = await conn.closed()
                assert isinstance(reason, ApplicationClosed) and reason.error_code == 1
            finally:
                await raw.close()


@pytest.mark.parametrize(
    "bad_frame",
    [
        b"\x00\x00\x00\x02\x07\x00",  # unknown topic::Message variant
        b"\x00\x00\x00\x02\x00\x09",  # unknown hyparview::Message variant
        b"\x00\x00\x00\x03\x01\x00\x05",  # truncated Gossip message
        b"\x00\x00\x10\x01" + bytes(16),  # frame of 4097 bytes announced
    ],
    ids=["unknown-outer", "unknown-swarm", "truncated", "oversized"],
)
async def test_bad_frame_drops_the_stream_and_nothing_breaks(bad_frame: bytes) -> None:
    async with nodes(2) as (a, b):
        ta = await a.gossip.subscribe(TOPIC)
        raw = await bind(relay_mode=RelayMode.DISABLED)
        try:
            conn, stream = await _raw_stream(raw, a)
            await stream.write_all(encode_header(TOPIC.to_bytes()) + encode_frame(encode_message(Join(None))))
            async with asyncio.timeout(10):
                assert await anext(ta.receiver) == NeighborUp(raw.id)
            await stream.write_all(bad_frame)
            async with asyncio.timeout(10):
                assert await stream.stopped() == 1
            assert not conn.is_closed
            tb = await b.gossip.subscribe(TOPIC, bootstrap=[a.endpoint.addr()])
            await tb.joined(timeout=10)
            await tb.broadcast(b"still fine")
            assert (await next_received(ta)).content == b"still fine"
            await tb.close()
        finally:
            await raw.close()
        await ta.close()


async def test_message_for_unsubscribed_topic_is_dropped() -> None:
    async with nodes(1) as (a,):
        ta = await a.gossip.subscribe(TOPIC)
        raw = await bind(relay_mode=RelayMode.DISABLED)
        try:
            conn, stream = await _raw_stream(raw, a)
            other = TopicId.from_name("not subscribed")
            await stream.write_all(encode_header(other.to_bytes()) + encode_frame(encode_message(Join(None))))
            conn2_stream = await conn.open_uni()
            await conn2_stream.write_all(encode_header(TOPIC.to_bytes()) + encode_frame(encode_message(Join(None))))
            async with asyncio.timeout(10):
                assert await anext(ta.receiver) == NeighborUp(raw.id)
            assert other.to_bytes() not in a.gossip._topics and not conn.is_closed
        finally:
            await raw.close()
        await ta.close()
