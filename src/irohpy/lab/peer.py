"""The irohpy endpoint the lab's scenarios run in a host namespace, one JSON line per event.

``python -m irohpy.lab.peer listen LABFLAGS`` binds an endpoint, waits for its relay,
publishes through the lab's DNS server (relay URL only, as iroh does) and prints
``{"event": "ready", "id": ...}``; it then echoes pings and hashes data streams until
SIGTERM. ``python -m irohpy.lab.peer dial ID LABFLAGS [--bytes N] ...`` dials by
EndpointId alone (the address comes from DNS, so the first path is the relay), or by a
ticket holding the id and relay URL (how ``irohpy.lab.pairs`` dials any kind of peer), pings,
sends ``N`` random bytes, waits for the path to settle, and prints
``{"event": "result", ...}`` with what it saw. ``LABFLAGS`` are ``Lab.peer_args()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from irohpy.base.keys import PublicKey, SecretKey
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint import presets
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import IrohError
from irohpy.lookup.dns import DnsAddressLookup
from irohpy.lookup.pkarr_client import PkarrPublisher
from irohpy.portmapper import PortmapperConfig
from irohpy.relay.map import RelayMode

ALPN = b"irohpy/lab/0"
PING = b"p"
DATA = b"d"
CHUNK = 1 << 14
START_TIMEOUT = 20.0
POLL = 0.01


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def _endpoint_kwargs(args: argparse.Namespace, secret: SecretKey) -> dict[str, Any]:
    host, _, port = args.dns.rpartition(":")
    return {
        "secret_key": secret,
        "preset": presets.MINIMAL,
        "relay_mode": RelayMode.custom([args.relay]),
        "bind_addrs": [f"0.0.0.0:{args.port}"],
        "address_lookup": [PkarrPublisher(secret, args.pkarr),
                           DnsAddressLookup(args.origin, nameservers=[(host, int(port))])],
        # Explicit either way: the lab's own environment may turn the default off.
        "portmapper_config": PortmapperConfig.ENABLED if args.portmap else PortmapperConfig.DISABLED,
    }


# -- listening side ------------------------------------------------------------


async def _serve_stream(send: Any, recv: Any) -> None:
    kind = await recv.read_exact(1)
    if kind == PING:
        await send.write_all(await recv.read_to_end(64))
    else:
        digest = hashlib.sha256()
        total = 0
        while chunk := await recv.read(1 << 16):
            digest.update(chunk)
            total += len(chunk)
        await send.write_all(f"{total} {digest.hexdigest()}".encode())
    await send.finish()


async def serve_conn(conn: Connection) -> None:
    """Serve pings and data streams on ``conn`` until it closes (the Rust lab peer serves with it too)."""
    async with asyncio.TaskGroup() as group:
        with contextlib.suppress(IrohError):
            while True:
                send, recv = await conn.accept_bi()
                group.create_task(_quietly(_serve_stream(send, recv)))


async def _quietly(coro: Any) -> None:
    with contextlib.suppress(IrohError):
        await coro


async def _published(args: argparse.Namespace, endpoint: Endpoint) -> None:
    """Wait until the lab's DNS server answers with our relay URL, so a dialer can find us."""
    host, _, port = args.dns.rpartition(":")
    lookup = DnsAddressLookup(args.origin, nameservers=[(host, int(port))])
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            async for item in lookup.resolve(endpoint.id):
                if item.info.data.relay_urls:
                    return
            await asyncio.sleep(0.05)


async def listen(args: argparse.Namespace) -> int:
    secret = SecretKey.generate()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with await Endpoint.bind(alpns=[ALPN], **_endpoint_kwargs(args, secret)) as endpoint:
        async with asyncio.timeout(START_TIMEOUT):
            await endpoint.online()
        await _published(args, endpoint)
        emit(event="ready", id=str(endpoint.id), sockets=[list(s) for s in endpoint.bound_sockets()])
        async with asyncio.TaskGroup() as group:
            async def accept_loop() -> None:
                while incoming := await endpoint.accept():
                    with contextlib.suppress(IrohError):
                        group.create_task(serve_conn(await incoming.accept()))
            acceptor = group.create_task(accept_loop())
            await stop.wait()
            acceptor.cancel()
            for conn in endpoint.connections():
                conn.close(0, b"lab over")
    return 0


# -- dialing side -----------------------------------------------------------------


@dataclass
class PathLog:
    """Path changes as ``[wall time, "direct"|"relay", address]``, taken as the selection
    changes (``path_events()``), as the Rust peer's ``watch_paths`` takes them: times to
    direct compare without a sampling interval on one side."""

    conn: Connection
    changes: list[list[Any]] = field(default_factory=list)

    def kind(self) -> str:
        return "direct" if self.conn.is_direct else "relay"

    def _note(self) -> None:
        kind = self.kind()
        if not self.changes or self.changes[-1][1] != kind:
            selected = next((p.addr for p in self.conn.paths() if p.selected), None)
            self.changes.append([time.time(), kind, selected])

    async def run(self) -> None:
        self._note()
        async for event in self.conn.path_events():
            if event.kind in ("selected", "fallback"):
                self._note()

    async def wait_direct(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.kind() != "direct":
                    await asyncio.sleep(POLL)
                return True
        return False


async def _ping(conn: Connection) -> float:
    start = time.perf_counter()
    send, recv = await conn.open_bi()
    await send.write_all(PING + os.urandom(8))
    await send.finish()
    await recv.read_to_end(64)
    return time.perf_counter() - start


async def _transfer(conn: Connection, size: int, rate: float) -> tuple[bool, float]:
    """Send ``size`` random bytes (paced to ``rate`` bytes/s if > 0); True if the peer's hash matches."""
    data = os.urandom(size)
    start = time.perf_counter()
    send, recv = await conn.open_bi()
    await send.write_all(DATA)
    for offset in range(0, size, CHUNK):
        await send.write_all(data[offset:offset + CHUNK])
        if rate > 0:
            ahead = (offset + CHUNK) / rate - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
    await send.finish()
    reply = (await recv.read_to_end(256)).decode()
    elapsed = time.perf_counter() - start
    return reply == f"{size} {hashlib.sha256(data).hexdigest()}", elapsed


def _target(text: str) -> PublicKey | EndpointTicket:
    """An EndpointId (its address comes from DNS) or a ticket (its id and relay URL)."""
    return EndpointTicket.parse(text) if text.startswith(EndpointTicket.KIND) else PublicKey.parse(text)


async def dial(args: argparse.Namespace) -> int:
    async with await Endpoint.bind(**_endpoint_kwargs(args, SecretKey.generate())) as endpoint:
        async with asyncio.timeout(START_TIMEOUT):
            await endpoint.online()
        started = time.time()
        try:
            conn = await endpoint.connect(_target(args.target), ALPN, timeout=args.connect_timeout)
        except (IrohError, OSError) as exc:
            emit(event="result", connected=False, error=str(exc))
            return 0
        connected = time.time()
        emit(event="connected", time=connected, connect_s=connected - started)
        log = PathLog(conn)
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(log.run())
            result = await exercise(conn, log, args)
            watcher.cancel()
        final_path = "closed" if conn.is_closed else log.kind()
        conn.close(0, b"done")
        metrics = endpoint.metrics().values()
        emit(event="result", connected=True, started=started, connected_at=connected, path_changes=log.changes,
             final_path=final_path, metrics=metrics, **result)
    return 0


async def exercise(conn: Connection, log: PathLog, args: argparse.Namespace) -> dict[str, Any]:
    """Pings, the transfer, a wait for a direct path, more pings: the run every lab dialer makes."""
    rtts = []
    errors = []
    for _ in range(args.pings):
        rtts.append(await asyncio.wait_for(_ping(conn), args.timeout))
        await asyncio.sleep(args.ping_interval)
    emit(event="transfer_start", time=time.time())
    try:
        ok, seconds = await asyncio.wait_for(_transfer(conn, args.bytes, args.rate), args.timeout)
    except (IrohError, TimeoutError) as exc:
        ok, seconds = False, None
        errors.append(f"transfer: {exc!r}")
    emit(event="transfer_done", time=time.time(), ok=ok)
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline and log.kind() != "direct":
        with contextlib.suppress(IrohError, TimeoutError):
            rtts.append(await asyncio.wait_for(_ping(conn), args.timeout))
        await asyncio.sleep(args.ping_interval)
    for _ in range(args.pings):
        try:
            rtts.append(await asyncio.wait_for(_ping(conn), args.timeout))
        except (IrohError, TimeoutError) as exc:
            errors.append(f"ping: {exc!r}")
        await asyncio.sleep(args.ping_interval)
    return {
        "transfer_ok": ok, "transfer_bytes": args.bytes, "transfer_s": seconds,
        "rtt_ms": statistics.median(rtts) * 1000 if rtts else None, "pings": len(rtts), "errors": errors,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m irohpy.lab.peer", description=__doc__)
    parser.add_argument("mode", choices=("listen", "dial"))
    parser.add_argument("target", nargs="?", help="the listener's EndpointId or ticket (dial)")
    parser.add_argument("--relay", required=True)
    parser.add_argument("--pkarr", required=True)
    parser.add_argument("--dns", required=True, metavar="IP:PORT")
    parser.add_argument("--origin", required=True)
    parser.add_argument("--port", type=int, default=0, help="UDP port to bind (default any)")
    parser.add_argument("--portmap", action="store_true", help="ask the router for a port mapping")
    parser.add_argument("--bytes", type=int, default=4 << 20)
    parser.add_argument("--rate", type=float, default=0.0, help="pace the transfer to this many bytes/s")
    parser.add_argument("--pings", type=int, default=5)
    parser.add_argument("--ping-interval", type=float, default=0.1)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait for a direct path at the end")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(listen(args) if args.mode == "listen" else dial(args))
    except Exception as exc:  # noqa: BLE001 - reported to the lab as an event
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
