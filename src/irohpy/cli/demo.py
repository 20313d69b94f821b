"""``irohpy demo``: a relay, a DNS server and two endpoints on this machine, dialing by key.

Everything stays on loopback. A relay server and a DNS/pkarr server run as
their own processes, as deployed ones would; a second process serves and
publishes its address; this one dials it by EndpointId alone, found through
DNS. The first dial is relay-only (IP privacy mode); the second starts on
the relay and hole-punches to a direct path. Both report path, round trip
and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import time

from irohpy.base.keys import EndpointId, SecretKey
from irohpy.cli.common import positive_int
from irohpy.endpoint import presets
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.socket.metrics import SocketMetrics
from irohpy.lookup.dns import DnsAddressLookup
from irohpy.lookup.pkarr_client import PkarrPublisher
from irohpy.protocols import ping as ping_proto
from irohpy.protocols.router import Router
from irohpy.relay.map import RelayMode
from irohpy.socket.paths import RelayPath, describe_path

SINK_ALPN = b"irohpy/demo-sink/0"
LOOPBACK = ["127.0.0.1:0"]
ORIGIN = "irohpy.demo."
DEFAULT_MB = 64
RELAY_MB = 8
DIRECT_TIMEOUT = 10.0
PINGS = 20
START_TIMEOUT = 20.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("demo", help="run a local relay and two endpoints; show a connection (loopback only)")
    parser.add_argument("--megabytes", type=positive_int, default=DEFAULT_MB, help=f"direct transfer size (default {DEFAULT_MB}; the relay-only one is at most {RELAY_MB})")
    parser.add_argument("--serve", nargs=3, metavar=("RELAY_URL", "PKARR_URL", "DNS_PORT"), help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


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


def _local(relay_url: str, **extra: object) -> dict[str, object]:
    return {"preset": presets.MINIMAL, "relay_mode": RelayMode.custom([relay_url]), "bind_addrs": LOOPBACK, **extra}


async def _published(lookup: DnsAddressLookup, endpoint_id: EndpointId) -> None:
    """Wait until DNS names our relay: publishing is asynchronous."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            async for item in lookup.resolve(endpoint_id):
                if item.info.data.relay_urls:
                    return
            await asyncio.sleep(0.1)


async def serve(relay_url: str, pkarr_url: str, dns_port: int) -> int:
    secret = SecretKey.generate()
    publisher = PkarrPublisher(secret, pkarr_url)
    endpoint = await Endpoint.bind(**_local(relay_url, secret_key=secret, address_lookup=[publisher]))  # type: ignore[arg-type]
    router = Router.builder(endpoint).accept(ping_proto.ALPN, ping_proto.Ping()).accept(SINK_ALPN, Sink()).spawn()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with asyncio.timeout(START_TIMEOUT):
        await endpoint.online()
    lookup = DnsAddressLookup(ORIGIN, nameservers=[("127.0.0.1", dns_port)])
    try:
        await _published(lookup, endpoint.id)
    finally:
        await lookup.close()
    print(f"endpoint {endpoint.id}", flush=True)
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
        relay_url, pkarr_url, dns_port = args.serve
        return await serve(relay_url, pkarr_url, int(dns_port))
    print("irohpy demo: a local relay, a DNS server and two endpoints on loopback, dialed by key")
    relay_args = ("relay", "--dev", "--http-bind", "127.0.0.1:0", "--metrics-bind", "none")
    with tempfile.TemporaryDirectory(prefix="irohpy-demo-") as tmp:
        dns_args = ("dns-server", "--dev", "--origin", ORIGIN, "--db", f"{tmp}/dns.sqlite", "--http-bind",
                    "127.0.0.1:0", "--dns-bind", "127.0.0.1:0", "--metrics-bind", "none")
        async with _child(*relay_args) as relay, _child(*dns_args) as dns:
            relay_url = (await _first_line(relay, "relay listening on")).split()[-1]
            _row("relay server", f"{relay_url} (irohpy relay, its own process; STUN on the same port)")
            pkarr_url = (await _first_line(dns, "pkarr http on")).split()[-1]
            dns_addr = (await _first_line(dns, "dns on udp+tcp")).split()[-1]
            dns_port = int(dns_addr.rsplit(":", 1)[1])
            _row("dns server", f"pkarr {pkarr_url}, DNS udp+tcp {dns_addr} (irohpy dns-server)")
            async with _child("demo", "--serve", relay_url, pkarr_url, str(dns_port)) as server:
                server_id = EndpointId.parse((await _first_line(server, "endpoint")).split()[-1])
                await _dial(server_id, relay_url, dns_port, args.megabytes)
    return 0


async def _measure(conn: Connection, megabytes: int) -> None:
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
    _row("path at the end", _path(conn))
    conn.close(0, b"done")


def _path(conn: Connection) -> str:
    path = conn.path
    if path is None:
        return "unknown"
    return f"{'relay' if isinstance(path, RelayPath) else 'direct UDP'}: {describe_path(path)}"


async def _connect(endpoint: Endpoint, server_id: EndpointId, label: str) -> Connection:
    print(f"\n  {label}")
    start = time.perf_counter()
    conn = await endpoint.connect(server_id, SINK_ALPN)
    _row("dialed by", f"EndpointId only, addresses from DNS ({ORIGIN})")
    _row("handshake", f"{(time.perf_counter() - start) * 1000:.1f} ms (TLS 1.3, raw public keys, "
                      f"peer {conn.remote_id.fmt_short()} ✓)")
    _row("path at connect", _path(conn))
    return conn


async def _dial(server_id: EndpointId, relay_url: str, dns_port: int, megabytes: int) -> None:
    _row("server endpoint id", str(server_id))

    def lookup() -> list[DnsAddressLookup]:
        return [DnsAddressLookup(ORIGIN, nameservers=[("127.0.0.1", dns_port)])]

    options = _local(relay_url, address_lookup=lookup(), relay_only=True)
    async with await Endpoint.bind(**options) as endpoint:  # type: ignore[arg-type]
        async with asyncio.timeout(START_TIMEOUT):
            await endpoint.online()
        conn = await _connect(endpoint, server_id, "1. relay-only mode: our IP addresses stay private")
        await _measure(conn, min(RELAY_MB, megabytes))

    async with await Endpoint.bind(**_local(relay_url, address_lookup=lookup())) as endpoint:  # type: ignore[arg-type]
        async with asyncio.timeout(START_TIMEOUT):
            await endpoint.online()
        _row("client endpoint id", str(endpoint.id))
        conn = await _connect(endpoint, server_id, "2. default mode: start on the relay, hole-punch to direct")
        start = time.perf_counter()
        async with asyncio.timeout(DIRECT_TIMEOUT):
            while not conn.is_direct:
                await asyncio.sleep(0.005)
        _row("went direct after", f"{(time.perf_counter() - start) * 1000:.0f} ms "
                                  f"(NAT traversal inside QUIC: candidates over the relay, probes, a validated path)")
        await _measure(conn, megabytes)
        metrics = endpoint.metrics().group(SocketMetrics)
        _row("bytes over the relay", f"{int(metrics.send_relay.get() + metrics.recv_data_relay.get()):,}")
