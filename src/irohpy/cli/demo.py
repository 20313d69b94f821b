"""``irohpy demo``: two endpoints on this machine, one dialing the other by key.

Everything stays on loopback: a second process serves, this one dials by
ticket, then reports the path, the ping round trip and the throughput. The
relay and address-lookup steps join as those parts land.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import time

from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint import presets
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.protocols import ping as ping_proto
from irohpy.protocols.router import Router

SINK_ALPN = b"irohpy/demo-sink/0"
LOOPBACK = ["127.0.0.1:0"]
DEFAULT_MB = 64
PINGS = 20


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("demo", help="run two local endpoints and show a connection (loopback only)")
    parser.add_argument("--megabytes", type=int, default=DEFAULT_MB, help=f"bulk transfer size (default {DEFAULT_MB})")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run, interrupt_exit=0)


class Sink:
    """Reads a whole stream and answers with how many bytes arrived."""

    async def accept(self, conn: Connection) -> None:
        with contextlib.suppress(Exception):
            while True:
                send, recv = await conn.accept_bi()
                total = 0
                while chunk := await recv.read(1 << 20):
                    total += len(chunk)
                await send.write_all(str(total).encode())
                await send.finish()


async def serve() -> int:
    endpoint = await Endpoint.bind(preset=presets.MINIMAL, bind_addrs=LOOPBACK)
    router = Router.builder(endpoint).accept(ping_proto.ALPN, ping_proto.Ping()).accept(SINK_ALPN, Sink()).spawn()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(EndpointTicket(endpoint.addr()), flush=True)
    async with router:
        await stop.wait()
    return 0


def _row(label: str, value: str) -> None:
    print(f"  {label:<22}{value}", flush=True)


async def run(args: argparse.Namespace) -> int:
    if args.serve:
        return await serve()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", "demo", "--serve", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(20):
            line = await child.stdout.readline()
        ticket = EndpointTicket.parse(line.decode().strip())
        await _dial(ticket, args.megabytes)
    finally:
        if child.returncode is None:
            child.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await child.wait()
    return 0


async def _dial(ticket: EndpointTicket, megabytes: int) -> None:
    print("irohpy demo: two endpoints on loopback, dialed by key")
    _row("server endpoint id", str(ticket.addr.id))
    _row("ticket", str(ticket))
    async with await Endpoint.bind(preset=presets.MINIMAL, bind_addrs=LOOPBACK) as endpoint:
        _row("client endpoint id", str(endpoint.id))

        start = time.perf_counter()
        conn = await endpoint.connect(ticket, SINK_ALPN)
        _row("handshake", f"{(time.perf_counter() - start) * 1000:.1f} ms (TLS 1.3, raw public keys)")
        _row("authenticated peer", f"{conn.remote_id} ✓")
        path = endpoint._remotes.for_id(ticket.addr.id).paths.selected
        _row("path", f"direct UDP {path[0]}:{path[1]}" if path else "unknown")

        ping = ping_proto.Ping()
        rtts = [await ping.ping(endpoint, ticket) for _ in range(PINGS)]
        _row("ping rtt (median)", f"{statistics.median(rtts) * 1000:.3f} ms over {PINGS} pings")

        payload = b"\x00" * (1 << 20)
        start = time.perf_counter()
        send, recv = await conn.open_bi()
        for _ in range(megabytes):
            await send.write(payload)
        await send.finish()
        received = int(await recv.read_to_end(64))
        elapsed = time.perf_counter() - start
        _row("throughput", f"{received / elapsed / 1e6:.1f} MB/s ({received / 1e6:.0f} MB in {elapsed:.2f} s)")
        conn.close(0, b"done")
