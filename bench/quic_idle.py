"""Idle connections on irohpy's QUIC engine: memory per connection and CPU while idle.

A server engine in this process accepts ``--connections`` connections that a client engine
in a child process dials over loopback UDP; both use keep-alive ``--keep-alive`` (irohpy's
default, 5 s) and the default idle timeout. Once all are established and nothing moves but
keep-alives, it reports:

- the server's memory per connection: the growth of its resident set (and of the Python heap
  as tracemalloc counts it, ``--tracemalloc``) from before the first connection to after the
  last, divided by the count;
- the server's CPU while idle: its process CPU seconds over ``--idle`` seconds of wall time,
  as a share of one core; the client's, read from /proc, alongside.

``--exchange`` instead measures the server's engine core alone on one keep-alive exchange:
two :class:`QuicEndpoint` cores in memory, configured as ``Endpoint`` configures them
(multipath, NAT traversal), in simulated time; each PING reaches the server in a pass of its
own, as from independent clients, and the process CPU of those passes is divided by their
count. ``python -m bench.idle_floor --quic`` is the same exchange done with the least work.

``python -m bench.quic_idle [--connections 10000] [--idle 30] [--keep-alive 5]``
``python -m bench.quic_idle --exchange [--connections 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import sys
import time
import tracemalloc

from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.quic.connection import QuicConfig
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint
from irohpy.tls.keys import private_key, public_key_bytes

ALPN = b"bench/quic-idle/0"
SERVER_SECRET = hashlib.sha256(b"bench-idle-server").digest()
CLIENT_SECRET = hashlib.sha256(b"bench-idle-client").digest()
#: Dials under way at once from the client (the server takes 256 handshakes at a time).
PARALLEL_DIALS = 64
TIMEOUT = 30.0


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client(port: int, count: int, keep_alive: float) -> None:
    """Dial ``count`` connections, say ``ready``, and hold them until stdin closes."""
    config = EndpointConfig(transport=QuicConfig(is_client=True, keep_alive=keep_alive))
    server_id = public_key_bytes(private_key(SERVER_SECRET))
    conns: list[EngineConnection] = []
    async with await QuicEngine.bind(CLIENT_SECRET, config=config) as engine:
        gate = asyncio.Semaphore(PARALLEL_DIALS)

        async def dial() -> None:
            async with gate:
                conns.append(await engine.connect(("127.0.0.1", port), server_id, ALPN, timeout=TIMEOUT))

        await asyncio.gather(*(dial() for _ in range(count)))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def server(args: argparse.Namespace) -> None:
    config = EndpointConfig(alpns=[ALPN], transport=QuicConfig(is_client=False, keep_alive=args.keep_alive))
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()
    async with await QuicEngine.bind(SERVER_SECRET, config=config) as engine:
        held: list[EngineConnection] = []
        gc.collect()
        rss0 = _rss_kib()
        heap0 = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.quic_idle",
            "--client",
            str(engine.local_addr[1]),
            "--connections",
            str(args.connections),
            "--keep-alive",
            str(args.keep_alive),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            start = time.perf_counter()

            async def take() -> None:
                while len(held) < args.connections:
                    held.append(await engine.accept())

            acceptor = asyncio.create_task(take())
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT + args.connections * 0.05)
            if line.strip() != b"ready":
                raise RuntimeError("the client did not connect")
            await asyncio.wait_for(acceptor, TIMEOUT)
            setup = time.perf_counter() - start
            await asyncio.sleep(2 * args.keep_alive)  # handshake leftovers settle
            gc.collect()
            per_conn = (_rss_kib() - rss0) / len(held)
            heap = (tracemalloc.get_traced_memory()[0] - heap0) / len(held) / 1024 if args.tracemalloc else 0.0
            if args.tracemalloc:
                tracemalloc.stop()
            cpu0, client0, wall0 = time.process_time(), _cpu_of(proc.pid), time.perf_counter()
            await asyncio.sleep(args.idle)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            client_cpu = _cpu_of(proc.pid) - client0
            print(f"{len(held)} connections established in {setup:.1f} s, keep-alive {args.keep_alive:g} s")
            print(f"server memory per connection: {per_conn:.1f} KiB resident", end="")
            print(f", {heap:.1f} KiB Python heap" if args.tracemalloc else "")
            print(f"server CPU while idle: {cpu / wall * 100:.2f}% of a core over {wall:.0f} s")
            print(f"client CPU while idle: {client_cpu / wall * 100:.2f}% of a core")
        finally:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


def exchange(count: int, keep_alive: float, seconds: float = 20.0) -> tuple[float, int]:
    """Server core µs per keep-alive exchange over ``seconds`` of simulated idle time, and
    the exchanges measured."""

    def transport(is_client: bool) -> QuicConfig:
        return QuicConfig(is_client=is_client, keep_alive=keep_alive, read_credit=True, max_path_id=7,
                          nat_traversal_addresses=32)

    server = QuicEndpoint(SERVER_SECRET, EndpointConfig(alpns=[ALPN], transport=transport(False)))
    client = QuicEndpoint(CLIENT_SECRET, EndpointConfig(transport=transport(True)))
    server_addr, client_addr = ("10.0.0.1", 4433), ("10.0.0.2", 4433)
    conns = [client.connect(server_addr, public_key_bytes(private_key(SERVER_SECRET)), [ALPN], 0.0)
             for _ in range(count)]
    cpu = 0.0
    exchanges = 0

    def step(now: float, timed: bool) -> None:
        nonlocal cpu, exchanges
        pings = [(d, client_addr) for t in client.poll([], now)[0] for d in t.datagrams]
        answers = []
        if timed:
            for one in pings:
                start = time.process_time()
                answers.extend(server.poll([one], now)[0])
                cpu += time.process_time() - start
            exchanges += len(pings)
            due = server.deadline()
            if due is not None and due <= now:
                start = time.process_time()
                answers.extend(server.poll([], now)[0])
                cpu += time.process_time() - start
        else:
            answers = server.poll(pings, now)[0]
        back = [(d, server_addr) for t in answers for d in t.datagrams]
        if back:
            client.poll(back, now)

    now = 0.0
    while now < 2 * keep_alive + 2.0:  # handshakes, then their leftovers settle
        step(now, False)
        now += 0.001
    if sum(1 for c in conns if c.handshake_complete) != count:
        raise RuntimeError("not every connection was established")
    end = now + seconds
    while now < end:
        step(now, True)
        now += 0.001
    if any(c.is_closed for c in conns):
        raise RuntimeError("a connection closed while idle")
    return cpu / max(exchanges, 1) * 1e6, exchanges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, help="default 10000 (1000 with --exchange)")
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--keep-alive", type=float, default=5.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--exchange", action="store_true",
                        help="the server core's CPU per keep-alive exchange, in memory")
    parser.add_argument("--client", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.connections is None:
        args.connections = 1_000 if args.exchange else 10_000
    if args.exchange:
        micros, exchanges = exchange(args.connections, args.keep_alive)
        print(f"engine core, {args.connections} multipath connections in memory: {micros:.1f} µs of server CPU "
              f"per keep-alive exchange ({exchanges} exchanges)")
        return
    if args.client:
        asyncio.run(client(args.client, args.connections, args.keep_alive))
    else:
        asyncio.run(server(args))


if __name__ == "__main__":
    main()
