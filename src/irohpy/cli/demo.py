"""``irohpy demo``: a relay and two endpoints on this machine, dialing by key.

Everything stays on loopback. A local relay server runs as its own process,
as a deployed one would; a second process serves; this one dials it by
EndpointId, first with nothing but the relay (the path when no direct
address is known or reachable), then directly, and reports path, round trip
and throughput for each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import time

from irohpy.base.addr import EndpointAddr, TransportAddr
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint import presets
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.protocols import ping as ping_proto
from irohpy.protocols.router import Router
from irohpy.relay.map import RelayMode
from irohpy.socket.paths import RelayPath, describe_path

SINK_ALPN = b"irohpy/demo-sink/0"
LOOPBACK = ["127.0.0.1:0"]
DEFAULT_MB = 64
RELAY_MB = 8
PINGS = 20
START_TIMEOUT = 20.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("demo", help="run a local relay and two endpoints; show a connection (loopback only)")
    parser.add_argument("--megabytes", type=int, default=DEFAULT_MB, help=f"direct transfer size (default {DEFAULT_MB})")
    parser.add_argument("--serve", metavar="RELAY_URL", help=argparse.SUPPRESS)
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


def _local(relay_url: str) -> dict[str, object]:
    return {"preset": presets.MINIMAL, "relay_mode": RelayMode.custom([relay_url]), "bind_addrs": LOOPBACK}


async def serve(relay_url: str) -> int:
    endpoint = await Endpoint.bind(**_local(relay_url))  # type: ignore[arg-type]
    router = Router.builder(endpoint).accept(ping_proto.ALPN, ping_proto.Ping()).accept(SINK_ALPN, Sink()).spawn()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with asyncio.timeout(START_TIMEOUT):
        await endpoint.online()
    print(EndpointTicket(endpoint.addr()), flush=True)
    async with router:
        await stop.wait()
    return 0


def _row(label: str, value: str) -> None:
    print(f"  {label:<22}{value}", flush=True)


@contextlib.asynccontextmanager
async def _child(*args: str):  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", *args, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _first_line(proc: asyncio.subprocess.Process, marker: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(START_TIMEOUT):
        while line := (await proc.stdout.readline()).decode():
            if marker in line:
                return line.strip()
    raise RuntimeError(f"a demo process exited before printing {marker!r}")


async def run(args: argparse.Namespace) -> int:
    if args.serve:
        return await serve(args.serve)
    print("irohpy demo: a local relay and two endpoints on loopback, dialed by key")
    relay_args = ("relay", "--dev", "--http-bind", "127.0.0.1:0", "--metrics-bind", "none")
    async with _child(*relay_args) as relay:
        relay_url = (await _first_line(relay, "relay listening on")).split()[-1]
        _row("relay server", f"{relay_url} (irohpy relay, its own process)")
        async with _child("demo", "--serve", relay_url) as server:
            ticket = EndpointTicket.parse(await _first_line(server, "endpoint"))
            await _dial(ticket, relay_url, args.megabytes)
    return 0


async def _measure(endpoint: Endpoint, target: EndpointAddr, megabytes: int, label: str) -> None:
    start = time.perf_counter()
    conn = await endpoint.connect(target, SINK_ALPN)
    handshake = time.perf_counter() - start
    path = conn.path
    kind = "relay" if isinstance(path, RelayPath) else "direct UDP"
    print(f"\n  {label}")
    _row("path", f"{kind}: {describe_path(path)}" if path else "unknown")
    _row("handshake", f"{handshake * 1000:.1f} ms (TLS 1.3, raw public keys, peer {conn.remote_id.fmt_short()} ✓)")

    rtts = []
    for _ in range(PINGS):
        send, recv = await conn.open_bi()
        t0 = time.perf_counter()
        await send.write_all(b"x")
        await send.finish()
        await recv.read_to_end(64)
        rtts.append(time.perf_counter() - t0)
    _row("rtt (median)", f"{statistics.median(rtts) * 1000:.3f} ms over {PINGS} round trips")

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


async def _dial(ticket: EndpointTicket, relay_url: str, megabytes: int) -> None:
    server = ticket.addr
    _row("server endpoint id", str(server.id))
    _row("ticket", str(ticket))
    async with await Endpoint.bind(**_local(relay_url)) as endpoint:  # type: ignore[arg-type]
        async with asyncio.timeout(START_TIMEOUT):
            await endpoint.online()
        _row("client endpoint id", str(endpoint.id))
        relay_only = EndpointAddr(server.id, frozenset(TransportAddr.Relay(u) for u in server.relay_urls()))
        await _measure(endpoint, relay_only, RELAY_MB, "1. dialed with the relay only (no known IP address)")
        direct = EndpointAddr(server.id, frozenset(server.ip_addrs()))
        fresh = await Endpoint.bind(preset=presets.MINIMAL, bind_addrs=LOOPBACK)
        async with fresh:
            await _measure(fresh, direct, megabytes, "2. dialed with its direct address")
