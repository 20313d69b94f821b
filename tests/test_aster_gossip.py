"""iroh-gossip interop with Rust iroh-gossip 0.97 (aster-rpc) on ``/iroh-gossip/1``.

Each side joins the other, mixed three-node swarms, and bursts both ways that must arrive
whole and without duplicates. Rust nodes run in child processes (``tests/aster_peer.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from irohpy import RelayMode
from irohpy.base.addr import EndpointAddr
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import GossipError
from irohpy.protocols.gossip import Gossip, GossipTopic, Lagged, NeighborDown, Received, TopicId
from irohpy.protocols.router import Router
from tests.aster_peer import SKIP_REASON, GossipSub, aster_peer
from tests.helpers import bind

pytestmark = [pytest.mark.aster, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

JOIN = 30.0
DELIVERY = 60.0


@dataclass
class PyNode:
    endpoint: Endpoint
    gossip: Gossip
    router: Router

    @property
    def addr(self) -> EndpointAddr:
        return self.endpoint.addr()


@contextlib.asynccontextmanager
async def py_node() -> AsyncIterator[PyNode]:
    endpoint = await bind(relay_mode=RelayMode.DISABLED)
    gossip = Gossip(endpoint)
    router = Router.builder(endpoint).accept(gossip.alpn, gossip).spawn()
    try:
        yield PyNode(endpoint, gossip, router)
    finally:
        await router.shutdown()


def fresh_topic() -> TopicId:
    return TopicId(os.urandom(32))


class PyReceiver:
    """Collects what an irohpy subscription receives, in a task owned by the test."""

    def __init__(self, topic: GossipTopic) -> None:
        self.topic = topic
        self.received: list[Received] = []
        self.lagged = False
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for event in self.topic.receiver:
            if isinstance(event, Received):
                self.received.append(event)
            elif isinstance(event, Lagged):
                self.lagged = True
            self._changed.set()

    def contents(self) -> list[bytes]:
        return [r.content for r in self.received]

    async def wait_for(self, expected: set[bytes], timeout: float = DELIVERY) -> None:
        async with asyncio.timeout(timeout):
            while not expected <= set(self.contents()):
                assert not self.lagged, "the irohpy receiver lagged: events were dropped"
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.topic.close()


class RustReceiver:
    """The same for a Rust subscription (its events are pushed by the child process)."""

    def __init__(self, sub: GossipSub) -> None:
        self.sub = sub
        self.received: list[bytes] = []

    async def wait_for(self, expected: set[bytes], timeout: float = DELIVERY) -> None:
        async with asyncio.timeout(timeout):
            while not expected <= set(self.received):
                event = await self.sub.next()
                assert event["kind"] != "lagged", "the Rust receiver lagged: events were dropped"
                if event["kind"] == "received":
                    self.received.append(event["content"])

    def contents(self) -> list[bytes]:
        for event in self.sub.drain():
            if event["kind"] == "received":
                self.received.append(event["content"])
        return self.received


Receiver = PyReceiver | RustReceiver


def messages(tag: str, n: int, size: int = 200) -> list[bytes]:
    """Distinct messages (iroh-gossip deduplicates by content hash)."""
    return [f"{tag}-{i:05}-".encode() + os.urandom(size) for i in range(n)]


async def settle_and_check(senders: dict[str, tuple[object, Receiver]], sent: dict[str, list[bytes]]) -> None:
    """Every node got every other node's messages exactly once.

    After the messages arrived, each node broadcasts a sentinel and waits for everyone's: a
    duplicate sent along a redundant path would have come in by then.
    """
    for name, (_, receiver) in senders.items():
        expected = {m for other, msgs in sent.items() if other != name for m in msgs}
        await receiver.wait_for(expected)
    sentinels = {name: f"sentinel-{name}".encode() + os.urandom(8) for name in senders}
    for name, (node, _) in senders.items():
        await broadcast(node, [sentinels[name]])
    for name, (_, receiver) in senders.items():
        await receiver.wait_for({s for other, s in sentinels.items() if other != name})
    for name, (_, receiver) in senders.items():
        expected = [m for other, msgs in sent.items() if other != name for m in msgs]
        expected += [s for other, s in sentinels.items() if other != name]
        got = receiver.contents()
        dupes = [m[:16] for m, c in Counter(got).items() if c > 1]
        assert not dupes, f"{name} received duplicates: {dupes[:5]}"
        assert sorted(got) == sorted(expected), f"{name} got {len(got)} messages, expected {len(expected)}"


async def broadcast(node: object, msgs: list[bytes]) -> None:
    if isinstance(node, GossipSub):
        await node.broadcast(*msgs)
    else:
        assert isinstance(node, GossipTopic)
        for m in msgs:
            await node.broadcast(m)


async def test_irohpy_joins_rust() -> None:
    topic = fresh_topic()
    async with aster_peer() as rust, py_node() as py:
        rsub = await rust.gossip_subscribe(topic.to_bytes())
        ptopic = await py.gossip.subscribe(topic, [rust.addr])
        await ptopic.joined(JOIN)
        await rsub.joined(JOIN)
        assert ptopic.neighbors == {rust.id}
        rrecv, precv = RustReceiver(rsub), PyReceiver(ptopic)
        try:
            await rsub.broadcast(b"from rust")
            await precv.wait_for({b"from rust"})
            assert precv.received[0].delivered_from == rust.id
            await ptopic.broadcast(b"from irohpy")
            await rrecv.wait_for({b"from irohpy"})
        finally:
            await precv.close()
            await rsub.close()


async def test_rust_joins_irohpy() -> None:
    topic = fresh_topic()
    async with aster_peer() as rust, py_node() as py:
        ptopic = await py.gossip.subscribe(topic)
        rsub = await rust.gossip_subscribe(topic.to_bytes(), [py.addr])
        await rsub.joined(JOIN)
        await ptopic.joined(JOIN)
        assert ptopic.neighbors == {rust.id}
        rrecv, precv = RustReceiver(rsub), PyReceiver(ptopic)
        try:
            await ptopic.broadcast(b"from irohpy")
            await rrecv.wait_for({b"from irohpy"})
            await rsub.broadcast(b"from rust")
            await precv.wait_for({b"from rust"})
        finally:
            await precv.close()
            await rsub.close()


async def test_swarm_two_rust_one_irohpy() -> None:
    topic = fresh_topic()
    async with aster_peer() as r1, aster_peer() as r2, py_node() as py:
        s1 = await r1.gossip_subscribe(topic.to_bytes())
        s2 = await r2.gossip_subscribe(topic.to_bytes(), [r1.addr])
        await s2.joined(JOIN)
        await s1.joined(JOIN)
        # irohpy joins through the second Rust node: r1's messages reach it only via r2.
        ptopic = await py.gossip.subscribe(topic, [r2.addr])
        await ptopic.joined(JOIN)
        precv = PyReceiver(ptopic)
        try:
            nodes: dict[str, tuple[object, Receiver]] = {
                "r1": (s1, RustReceiver(s1)), "r2": (s2, RustReceiver(s2)), "py": (ptopic, precv)}
            sent = {name: messages(name, 20) for name in nodes}
            await asyncio.gather(*(broadcast(node, sent[name]) for name, (node, _) in nodes.items()))
            await settle_and_check(nodes, sent)
        finally:
            await precv.close()
            await s1.close()
            await s2.close()


async def test_swarm_one_rust_two_irohpy() -> None:
    topic = fresh_topic()
    async with aster_peer() as rust, py_node() as p1, py_node() as p2:
        t1 = await p1.gossip.subscribe(topic)
        rsub = await rust.gossip_subscribe(topic.to_bytes(), [p1.addr])
        await rsub.joined(JOIN)
        # The second irohpy node joins through the Rust node only.
        t2 = await p2.gossip.subscribe(topic, [rust.addr])
        await t2.joined(JOIN)
        await t1.joined(JOIN)
        recv1, recv2 = PyReceiver(t1), PyReceiver(t2)
        try:
            nodes: dict[str, tuple[object, Receiver]] = {
                "rust": (rsub, RustReceiver(rsub)), "p1": (t1, recv1), "p2": (t2, recv2)}
            sent = {name: messages(name, 20) for name in nodes}
            await asyncio.gather(*(broadcast(node, sent[name]) for name, (node, _) in nodes.items()))
            await settle_and_check(nodes, sent)
        finally:
            await recv1.close()
            await recv2.close()
            await rsub.close()


@pytest.mark.parametrize("size", [16, 1000, 3000])
async def test_bursts_both_ways(size: int) -> None:
    """Both sides broadcast back to back at the same time; all arrive, once each."""
    topic = fresh_topic()
    async with aster_peer() as rust, py_node() as py:
        rsub = await rust.gossip_subscribe(topic.to_bytes())
        ptopic = await py.gossip.subscribe(topic, [rust.addr])
        await ptopic.joined(JOIN)
        await rsub.joined(JOIN)
        precv = PyReceiver(ptopic)
        try:
            nodes: dict[str, tuple[object, Receiver]] = {"rust": (rsub, RustReceiver(rsub)), "py": (ptopic, precv)}
            sent = {name: messages(name, 200, size) for name in nodes}
            await asyncio.gather(*(broadcast(node, sent[name]) for name, (node, _) in nodes.items()))
            await settle_and_check(nodes, sent)
        finally:
            await precv.close()
            await rsub.close()


async def test_leaving_is_seen_by_the_other_side() -> None:
    """Each side leaves the topic in turn; the other sees its neighbor go (Disconnect)."""
    topic = fresh_topic()
    async with aster_peer() as rust, py_node() as py:
        rsub = await rust.gossip_subscribe(topic.to_bytes())
        ptopic = await py.gossip.subscribe(topic, [rust.addr])
        await ptopic.joined(JOIN)
        await rsub.joined(JOIN)
        await ptopic.close()
        await rsub.wait_for(lambda e: e["kind"] == "neighbor_down", DELIVERY)

        ptopic = await py.gossip.subscribe(topic, [rust.addr])
        await ptopic.joined(JOIN)
        await rsub.wait_for(lambda e: e["kind"] == "neighbor_up", DELIVERY)
        await rsub.close()
        async with asyncio.timeout(DELIVERY):
            async for event in ptopic.receiver:
                if isinstance(event, NeighborDown):
                    assert event.endpoint_id == rust.id
                    break
        assert ptopic.neighbors == frozenset()
        await ptopic.close()


async def test_largest_message_both_ways() -> None:
    """The biggest content irohpy lets through (frame just under 4096 bytes) is accepted by
    Rust, and Rust's message of that size reaches irohpy: both sides draw the line alike."""
    topic = fresh_topic()
    async with aster_peer() as rust, py_node() as py:
        rsub = await rust.gossip_subscribe(topic.to_bytes())
        ptopic = await py.gossip.subscribe(topic, [rust.addr])
        await ptopic.joined(JOIN)
        await rsub.joined(JOIN)
        size = py.gossip.max_message_size
        while True:
            try:
                await ptopic.broadcast(biggest := os.urandom(size))
                break
            except GossipError:
                size -= 1
        assert size > py.gossip.max_message_size - 64
        await RustReceiver(rsub).wait_for({biggest})
        precv = PyReceiver(ptopic)
        try:
            await rsub.broadcast(back := os.urandom(size))
            await precv.wait_for({back})
        finally:
            await precv.close()
            await rsub.close()
