"""Gossip over real QUIC on loopback: broadcast/receive rate and end-to-end latency.

All endpoints run in this one process and event loop (relays off, 127.0.0.1), so the swarm
shares one CPU core: the numbers are a floor for what one Python node does on its own.

- throughput, 2 nodes: one broadcasts N messages as fast as ``broadcast`` accepts them, the
  other receives; rate = N / time until the last one arrived.
- throughput, swarm: the same from one node of the swarm, until every other node has all N.
- latency, swarm: messages carry their send time; spaced out so queues stay empty; p50/p99
  over every (message, receiver) pair.

``python -m bench gossip [--nodes 30] [--messages 2000] [--size 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from irohpy import Endpoint, RelayMode, Router, presets
from irohpy.protocols.gossip import Gossip, GossipTopic, Received, TopicId

TOPIC = TopicId.from_name("bench/gossip_net")
_STAMP = struct.Struct(">dI")


@dataclass
class Node:
    endpoint: Endpoint
    gossip: Gossip
    router: Router
    topic: GossipTopic | None = None


async def _start(n: int) -> list[Node]:
    nodes = []
    for _ in range(n):
        ep = await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.DISABLED, bind_addrs=["127.0.0.1:0"])
        gossip = Gossip(ep, event_capacity=1 << 20)
        nodes.append(Node(ep, gossip, Router.builder(ep).accept(gossip.alpn, gossip).spawn()))
    for i, node in enumerate(nodes):
        bootstrap = [nodes[(i - 1) // 2].endpoint.addr()] if i else []
        node.topic = await node.gossip.subscribe(TOPIC, bootstrap)
    await asyncio.gather(*(node.topic.joined(60) for node in nodes if node.topic is not None))
    await asyncio.sleep(8.0)  # let the first shuffles and refills settle
    return nodes


async def _count(topic: GossipTopic, want: int, tag: bytes) -> float:
    got = 0
    async for event in topic.receiver:
        if isinstance(event, Received) and event.content.startswith(tag):
            got += 1
            if got == want:
                return time.perf_counter()
    raise RuntimeError("receiver ended early")


async def throughput(nodes: list[Node], messages: int, size: int, tag: bytes) -> float:
    """Messages per second from ``nodes[0]`` until every other node received them all."""
    receivers = [asyncio.ensure_future(_count(n.topic, messages, tag)) for n in nodes[1:] if n.topic]
    sender = nodes[0].topic
    assert sender is not None
    start = time.perf_counter()
    for i in range(messages):
        await sender.broadcast(tag + struct.pack(">I", i) + bytes(max(0, size - len(tag) - 4)))
    async with asyncio.timeout(300):
        done = await asyncio.gather(*receivers)
    return messages / (max(done) - start)


async def latency(nodes: list[Node], messages: int, gap: float) -> list[float]:
    """Seconds from broadcast to arrival for every (message, receiver) pair."""
    samples: list[float] = []
    want = messages * (len(nodes) - 1)

    async def listen(topic: GossipTopic) -> None:
        async for event in topic.receiver:
            if isinstance(event, Received) and event.content.startswith(b"lat"):
                sent, _ = _STAMP.unpack_from(event.content, 3)
                samples.append(time.perf_counter() - sent)
                if len(samples) >= want:
                    return

    listeners = [asyncio.ensure_future(listen(n.topic)) for n in nodes if n.topic]
    for i in range(messages):
        sender = nodes[(i * 7) % len(nodes)].topic
        assert sender is not None
        await sender.broadcast(b"lat" + _STAMP.pack(time.perf_counter(), i))
        await asyncio.sleep(gap)
    try:
        async with asyncio.timeout(60):
            while len(samples) < want:
                await asyncio.sleep(0.05)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    return samples


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(n: int, messages: int, size: int, latency_messages: int) -> None:
    pair = await _start(2)
    try:
        rate2 = await throughput(pair, messages, size, b"pair")
    finally:
        await asyncio.gather(*(node.router.shutdown() for node in pair))
    print(f"2 nodes: {rate2:,.0f} msgs/s broadcast by one node and received by the other "
          f"({messages} x {size} B)", flush=True)
    swarm = await _start(n)
    try:
        lat = await latency(swarm, latency_messages, 0.05)
        print(f"{n} nodes: latency p50 {statistics.median(lat) * 1000:.1f} ms, p99 {_pct(lat, 0.99) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms over {len(lat)} deliveries", flush=True)
        rate = await throughput(swarm, messages, size, b"swarm")
        print(f"{n} nodes: {rate:,.0f} msgs/s from one node until all {n - 1} others had every message "
              f"({rate * (n - 1):,.0f} deliveries/s, all nodes in one process)", flush=True)
    finally:
        await asyncio.gather(*(node.router.shutdown() for node in swarm))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gossip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    parser.add_argument("--size", type=int, default=100, help="bytes per throughput message")
    parser.add_argument("--latency-messages", type=int, default=100)
    args = parser.parse_args(argv)
    asyncio.run(run(args.nodes, args.messages, args.size, args.latency_messages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
