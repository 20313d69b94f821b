"""Gossip over real QUIC on loopback: broadcast/receive rate and end-to-end latency.

Relays are off and every endpoint binds 127.0.0.1. Two setups:

- ``--mode processes`` (default): one OS process per node, like a real deployment; the
  coordinator only sends commands. On a small machine the nodes still share the cores.
- ``--mode inprocess``: every node in this one event loop, so the whole swarm shares one
  core; a floor for what one Python node does.

Measured:

- throughput, 2 nodes: one broadcasts N messages as fast as ``broadcast`` accepts them, the
  other receives; rate = N / time until the last one arrived.
- throughput, swarm: the same from one node of the swarm, until every other node has all N.
- latency, swarm: messages carry their send time (wall clock, one host), sent from changing
  nodes ``--gap`` apart; p50/p99 over every (message, receiver) pair.

``python -m bench gossip [--nodes 30] [--messages 2000] [--size 100] [--mode processes]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from irohpy import Endpoint, EndpointTicket, RelayMode, Router, presets
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


async def run_inprocess(n: int, messages: int, size: int, latency_messages: int, gap: float) -> None:
    pair = await _start(2)
    try:
        rate2 = await throughput(pair, messages, size, b"pair")
    finally:
        await asyncio.gather(*(node.router.shutdown() for node in pair))
    print(f"2 nodes: {rate2:,.0f} msgs/s broadcast by one node and received by the other "
          f"({messages} x {size} B)", flush=True)
    swarm = await _start(n)
    try:
        lat = await latency(swarm, latency_messages, gap)
        print(f"{n} nodes: latency p50 {statistics.median(lat) * 1000:.1f} ms, p99 {_pct(lat, 0.99) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms over {len(lat)} deliveries", flush=True)
        rate = await throughput(swarm, messages, size, b"swarm")
        print(f"{n} nodes: {rate:,.0f} msgs/s from one node until all {n - 1} others had every message "
              f"({rate * (n - 1):,.0f} deliveries/s, all nodes in one process)", flush=True)
    finally:
        await asyncio.gather(*(node.router.shutdown() for node in swarm))


# -- one node per process ------------------------------------------------------------------


async def _bind_node() -> tuple[Endpoint, Gossip, Router]:
    ep = await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.DISABLED, bind_addrs=["127.0.0.1:0"])
    gossip = Gossip(ep, event_capacity=1 << 20)
    return ep, gossip, Router.builder(ep).accept(gossip.alpn, gossip).spawn()


async def _worker() -> None:
    """One node driven by JSON lines on stdin, answering one JSON line per command."""
    ep, gossip, router = await _bind_node()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    arrivals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    topic: GossipTopic | None = None
    collector: asyncio.Task[None] | None = None

    def reply(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def collect(topic: GossipTopic) -> None:
        async for event in topic.receiver:
            if isinstance(event, Received):
                tag, _, rest = event.content.partition(b" ")
                arrivals[tag.decode()].append((_STAMP.unpack_from(rest)[0], time.time()))

    reply({"ticket": str(EndpointTicket(ep.addr()))})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "join":
                bootstrap = [EndpointTicket.parse(t).addr for t in cmd["bootstrap"]]
                topic = await gossip.subscribe(TOPIC, bootstrap)
                collector = asyncio.ensure_future(collect(topic))
            elif cmd["cmd"] == "wait" and topic is not None:
                await topic.joined(60)
            elif cmd["cmd"] == "send" and topic is not None:
                pad = bytes(max(0, cmd["size"] - len(cmd["tag"]) - 1 - _STAMP.size))
                for i in range(cmd["count"]):
                    await topic.broadcast(cmd["tag"].encode() + b" " + _STAMP.pack(time.time(), i) + pad)
            elif cmd["cmd"] == "report":
                reply({"arrivals": arrivals.pop(cmd["tag"], []), "cpu": time.process_time()})
                continue
            elif cmd["cmd"] == "count":
                got = arrivals.get(cmd["tag"], [])
                reply({"count": len(got), "last": max((t for _, t in got), default=0.0)})
                continue
            elif cmd["cmd"] == "quit":
                break
            reply({"ok": True})
    finally:
        transport.close()
        if collector is not None:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
        await router.shutdown()


class _Node:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self, timeout: float = 120) -> Any:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"gossip worker exited with {await self.proc.wait()}")
        return json.loads(line)

    async def call(self, timeout: float = 120, **cmd: object) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _spawn(n: int) -> list[_Node]:
    nodes = []
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.gossip_net", "--worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        nodes.append(_Node(proc))
    return nodes


async def _swarm(nodes: list[_Node]) -> None:
    tickets = [(await node.read())["ticket"] for node in nodes]
    for i, node in enumerate(nodes):
        await node.call(cmd="join", bootstrap=[tickets[(i - 1) // 2]] if i else [])
    await asyncio.gather(*(node.call(cmd="wait") for node in nodes))
    await asyncio.sleep(8.0)


async def _throughput_procs(nodes: list[_Node], messages: int, size: int, tag: str) -> float:
    start = time.time()
    await nodes[0].call(cmd="send", tag=tag, count=messages, size=size, timeout=600)
    async with asyncio.timeout(600):
        while True:
            counts = await asyncio.gather(*(node.call(cmd="count", tag=tag) for node in nodes[1:]))
            if all(c["count"] >= messages for c in counts):
                return messages / (max(c["last"] for c in counts) - start)
            await asyncio.sleep(0.5)


async def run_processes(n: int, messages: int, size: int, latency_messages: int, gap: float) -> None:
    pair = await _spawn(2)
    try:
        await _swarm(pair)
        rate2 = await _throughput_procs(pair, messages, size, "pair")
    finally:
        await asyncio.gather(*(node.stop() for node in pair))
    print(f"2 processes: {rate2:,.0f} msgs/s broadcast by one node and received by the other "
          f"({messages} x {size} B)", flush=True)
    nodes = await _spawn(n)
    try:
        await _swarm(nodes)
        for k in range(latency_messages):
            await nodes[(k * 7) % n].call(cmd="send", tag="lat", count=1, size=0)
            await asyncio.sleep(gap)
        await asyncio.sleep(3.0)
        reports = await asyncio.gather(*(node.call(cmd="report", tag="lat") for node in nodes))
        lat = [now - sent for r in reports for sent, now in r["arrivals"]]
        want = latency_messages * (n - 1)
        print(f"{n} processes: latency p50 {statistics.median(lat) * 1000:.1f} ms, p99 {_pct(lat, 0.99) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms; {len(lat)} of {want} deliveries; one message every {gap * 1000:.0f} ms",
              flush=True)
        rate = await _throughput_procs(nodes, messages, size, "swarm")
        print(f"{n} processes: {rate:,.0f} msgs/s from one node until all {n - 1} others had every message "
              f"({rate * (n - 1):,.0f} deliveries/s)", flush=True)
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gossip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    parser.add_argument("--size", type=int, default=100, help="bytes per throughput message")
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between latency messages")
    parser.add_argument("--mode", choices=["processes", "inprocess"], default="processes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(_worker())
        return 0
    run = run_processes if args.mode == "processes" else run_inprocess
    asyncio.run(run(args.nodes, args.messages, args.size, args.latency_messages, args.gap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
