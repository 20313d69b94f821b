"""What every implementation shares: the benchmark's wire protocol and its drivers.

One client driver (`run_metrics`) and one server state machine (`ServerStream`)
measure all implementations, so a difference in the numbers is a difference in
the transport, not in the harness. Implementations only adapt their streams to
the small protocols below.

Wire protocol, on one bidirectional stream (one TCP connection for tcp-tls):
the client sends a 9-byte header, `op` (1 byte) + `length` (u64, big endian).

- `E` (echo): the server sends back every byte it receives until end of stream.
- `B` (bulk): the client sends `length` bytes; once the server has them all it
  replies with a JSON object `{"bytes": n, "cpu_s": s}` (its own CPU seconds from
  header to last byte) and finishes its side.

Between processes, workers print JSON lines prefixed with `PREFIX` on stdout;
they exit when their stdin closes, so a dying orchestrator takes them along.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import os
import resource
import socket
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

ALPN = b"bench/0"
HOST = "127.0.0.1"
HEADER = struct.Struct("!cQ")
OP_ECHO = b"E"
OP_BULK = b"B"
PREFIX = "@bench "
READ_SIZE = 1 << 20
REPLY_LIMIT = 4096

STARTUP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
IDLE_CONNECT_TIMEOUT = 30.0
"""Per connection while thousands are opened: the handshakes queue behind each other's CPU."""
IDLE_CONNECT_ATTEMPTS = 3
"""Dials per idle connection, as an application would retry; every failed dial is counted."""
MAX_FAILURE_REASONS = 20
"""Distinct failure texts kept per idle run; the rest count as "(other)"."""
ECHO_TIMEOUT = 60.0
SLOWEST_MB_S = 1.0
"""Bulk runs slower than this time out (iroh-stock manages ~7 MB/s)."""

T = TypeVar("T")
ServerInfo = dict[str, Any]
ReadyCallback = Callable[[ServerInfo], None]


PARTS = ("connect", "zero_rtt", "echo", "bulk", "bulk_streams", "idle")
"""What a client worker can measure; `Params.parts` picks some."""


@dataclasses.dataclass(frozen=True)
class Params:
    """What the client measures; sent to the client worker as JSON."""

    parts: tuple[str, ...] = ("connect", "zero_rtt", "echo", "bulk", "bulk_streams")
    megabytes: int = 200
    runs: int = 3
    streams: int = 8
    connects: int = 20
    echo_samples: int = 200
    echo_warmups: int = 20
    write_size: int = 1 << 20
    idle_connections: int = 1000
    idle_concurrency: int = 64
    idle_hold: float = 10.0

    def bulk_timeout(self) -> float:
        """Seconds one bulk run may take before it counts as hung."""
        return 30.0 + self.megabytes / SLOWEST_MB_S

    def client_timeout(self) -> float:
        """Seconds a whole client worker may take: every step at its own limit, plus start-up."""
        per_conn = CONNECT_TIMEOUT + CLOSE_TIMEOUT
        idle = (self.idle_connections * IDLE_CONNECT_ATTEMPTS * IDLE_CONNECT_TIMEOUT
                / self.idle_concurrency + self.idle_hold
                if "idle" in self.parts else 0.0)
        return (STARTUP_TIMEOUT + 3 * self.connects * per_conn + per_conn + ECHO_TIMEOUT
                + 2 * self.runs * (self.streams * per_conn + self.bulk_timeout()) + idle)


@dataclasses.dataclass(frozen=True)
class Options:
    """How both workers of one implementation are set up (the server gets them as arguments)."""

    datagram_size: int = 1452
    """QUIC datagram size for irohpy and raw aioquic (iroh's own is fixed at 1452 with PMTUD on)."""
    relay_url: str | None = None
    """irohpy only: dial through this relay server instead of directly."""
    keep_alive: float | None = None
    """irohpy only: seconds between keep-alive PINGs (None: the endpoint's default, 5 s)."""


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB, from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds() -> float:
    """User + system CPU of this whole process, all threads (Rust's tokio included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def udp_counters() -> dict[str, int]:
    """The namespace's UDP error counters: receive-buffer drops explain QUIC variance."""
    try:
        with open("/proc/net/snmp", encoding="ascii") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return {}
    if len(rows) != 2:
        return {}
    names, values = rows[0][1:], rows[1][1:]
    return {k: int(v) for k, v in zip(names, values, strict=True) if k.endswith("Errors")}


def foreign_interfaces() -> list[str]:
    """Interfaces other than loopback in this network namespace."""
    return [name for _, name in socket.if_nameindex() if name != "lo"]


def require_loopback_only(what: str) -> None:
    """Refuse to start code that may probe the gateway unless only `lo` exists."""
    others = foreign_interfaces()
    if others:
        raise SystemExit(
            f"refusing to run {what}: this network namespace has interfaces besides lo "
            f"({', '.join(others)}) and the official iroh package may send port-mapping "
            "probes to the gateway; run `make bench` as root so scripts/loopback-only "
            "moves it into a loopback-only namespace"
        )


# ---------------------------------------------------------------- server side


class ServerStream:
    """Server side of one benchmark stream, sans-IO so raw aioquic can feed it events."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._op: bytes | None = None
        self._length = 0
        self._received = 0
        self._finished = False
        self._cpu0 = 0.0

    def feed(self, data: bytes, end: bool) -> tuple[bytes, bool]:
        """Take received bytes (end: the client ended the stream).

        Returns what to send back and whether to finish the sending side after
        it; the second is true exactly once per stream.
        """
        if self._op is None:
            self._head += data
            if len(self._head) < HEADER.size:
                return b"", self._finish_if(end)
            op, self._length = HEADER.unpack_from(self._head)
            if op not in (OP_ECHO, OP_BULK):
                raise ValueError(f"unknown benchmark op {op!r}")
            self._op = op
            data = bytes(self._head[HEADER.size:])
            self._head.clear()
            self._cpu0 = cpu_seconds()
        if self._op == OP_ECHO:
            return data, self._finish_if(end)
        self._received += len(data)
        if self._finished or self._received < self._length:
            return b"", self._finish_if(end)
        cpu = cpu_seconds() - self._cpu0
        return json.dumps({"bytes": self._received, "cpu_s": cpu}).encode(), self._finish_if(True)

    def _finish_if(self, condition: bool) -> bool:
        if not condition or self._finished:
            return False
        self._finished = True
        return True


class ServerStreamIO(Protocol):
    """One accepted stream as the async implementations expose it."""

    async def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at end of stream."""
        ...

    async def write(self, data: bytes) -> None:
        """Send all of data."""
        ...

    async def finish(self) -> None:
        """End the sending side."""
        ...


async def serve_stream(io: ServerStreamIO) -> None:
    """Answer one benchmark stream, reading until the client ends it."""
    state = ServerStream()
    while True:
        data = await io.read(READ_SIZE)
        out, finish = state.feed(data, end=not data)
        if out:
            await io.write(out)
        if finish:
            await io.finish()
        if not data:
            return


def self_signed_ed25519() -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A throwaway certificate for localhost/127.0.0.1, Ed25519 like iroh's keys."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .sign(key, None)
    )
    return key, cert


# ---------------------------------------------------------------- client side


class ClientStream(Protocol):
    """A bidirectional stream opened by the client."""

    async def write(self, data: bytes) -> None:
        """Send all of data, waiting as the transport's back-pressure demands."""
        ...

    async def finish(self) -> None:
        """End the sending side."""
        ...

    async def read_exact(self, n: int) -> bytes:
        """Exactly n bytes."""
        ...

    async def read_to_end(self, limit: int) -> bytes:
        """Everything until the peer ends the stream."""
        ...


class ClientConn(Protocol):
    """A connection whose handshake is complete."""

    async def open_stream(self) -> ClientStream:
        """Open a bidirectional stream."""
        ...

    def is_open(self) -> bool:
        """Whether the connection is still up (idle connections are checked after the hold)."""
        ...

    async def close(self) -> None:
        """Close the connection (not timed)."""
        ...


class Dialer(Protocol):
    """A client endpoint: one socket, or one TLS context for TCP, for all connections."""

    stream_per_connection: bool
    """True where a connection carries exactly one stream (TCP): parallel streams need connections."""

    async def connect(self) -> ClientConn:
        """Dial the server; return once the handshake is complete."""
        ...

    async def connect_0rtt(self) -> ClientConn | None:
        """Dial with a session ticket from an earlier connection and return at once, so the
        first stream's data rides in 0-RTT; None where the implementation offers no 0-RTT."""
        ...

    async def aclose(self) -> None:
        """Release the endpoint."""
        ...


async def run_metrics(dialer: Dialer, params: Params) -> dict[str, Any]:
    """Measure the chosen parts through one dialer, the same way for every impl."""
    out: dict[str, Any] = {}
    parts = params.parts
    if "connect" in parts:
        out["connect_ms"] = await _connects(dialer, params)
        out["first_reply_ms"] = await _first_replies(dialer, params, zero_rtt=False)
    if "zero_rtt" in parts:
        out["first_reply_0rtt_ms"] = await _first_replies(dialer, params, zero_rtt=True)
    if "echo" in parts:
        out["echo_us"] = await _echo(dialer, params)
    if "bulk" in parts:
        out["bulk"] = [await _bulk(dialer, params, 1) for _ in range(params.runs)]
    if "bulk_streams" in parts:
        out["bulk_streams"] = [await _bulk(dialer, params, params.streams) for _ in range(params.runs)]
    if "idle" in parts:
        out["idle"] = await _idle(dialer, params)
    return out


async def _connects(dialer: Dialer, params: Params) -> list[float]:
    samples = []
    for _ in range(params.connects):
        async with asyncio.timeout(CONNECT_TIMEOUT):
            t0 = time.perf_counter()
            conn = await dialer.connect()
            samples.append((time.perf_counter() - t0) * 1e3)
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.close()
    return samples


async def _first_replies(dialer: Dialer, params: Params, zero_rtt: bool) -> list[float]:
    """Dial, send a 1-byte request on a new stream, wait for its echo: a request on a new connection.

    With zero_rtt the request rides in the first flight (it needs a ticket from an earlier
    connection, which the connect samples leave behind); an empty list where 0-RTT is unsupported.
    """
    samples = []
    for _ in range(params.connects):
        async with asyncio.timeout(CONNECT_TIMEOUT):
            t0 = time.perf_counter()
            conn = await (dialer.connect_0rtt() if zero_rtt else dialer.connect())
            if conn is None:
                return []
            stream = await conn.open_stream()
            await stream.write(HEADER.pack(OP_ECHO, 0) + b"x")
            await stream.read_exact(1)
            samples.append((time.perf_counter() - t0) * 1e3)
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await stream.finish()
            await conn.close()
    return samples


async def _echo(dialer: Dialer, params: Params) -> list[float]:
    async with asyncio.timeout(CONNECT_TIMEOUT):
        conn = await dialer.connect()
    try:
        async with asyncio.timeout(ECHO_TIMEOUT):
            stream = await conn.open_stream()
            await stream.write(HEADER.pack(OP_ECHO, 0))
            samples = []
            for i in range(params.echo_warmups + params.echo_samples):
                t0 = time.perf_counter_ns()
                await stream.write(b"x")
                await stream.read_exact(1)
                if i >= params.echo_warmups:
                    samples.append((time.perf_counter_ns() - t0) / 1e3)
            await stream.finish()
    finally:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.close()
    return samples


async def _send_one(stream: ClientStream, chunk: bytes, total: int) -> dict[str, Any]:
    """Send one bulk stream of ``total`` bytes; the server's reply."""
    await stream.write(HEADER.pack(OP_BULK, total))
    sent = 0
    while sent < total:
        n = min(len(chunk), total - sent)
        await stream.write(chunk if n == len(chunk) else chunk[:n])
        sent += n
    await stream.finish()
    reply: dict[str, Any] = json.loads(await stream.read_to_end(REPLY_LIMIT))
    if reply["bytes"] != total:
        raise RuntimeError(f"server counted {reply['bytes']} bytes, sent {total}")
    return reply


async def _bulk(dialer: Dialer, params: Params, streams: int) -> dict[str, Any]:
    """``megabytes`` from client to server, split over ``streams`` parallel streams.

    The receiver's CPU is the largest of the per-stream figures the server reports: each
    covers its stream's header to last byte, and parallel streams overlap almost entirely.
    """
    total = params.megabytes * 1_000_000
    shares = [total // streams + (1 if i < total % streams else 0) for i in range(streams)]
    chunk = os.urandom(params.write_size)
    conns: list[ClientConn] = []
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT * streams):
            for _ in range(streams if dialer.stream_per_connection else 1):
                conns.append(await dialer.connect())
            opened = [await conns[i % len(conns)].open_stream() for i in range(streams)]
        async with asyncio.timeout(params.bulk_timeout()):
            udp0 = udp_counters()
            cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            replies = await asyncio.gather(*(_send_one(s, chunk, n) for s, n in zip(opened, shares, strict=True)))
            seconds = time.perf_counter() - t0
            cpu = cpu_seconds() - cpu0
            udp1 = udp_counters()
            path = getattr(conns[0], "path_name", lambda: None)()
    finally:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            for conn in conns:
                await conn.close()
    return {
        "streams": streams,
        "seconds": seconds,
        "mb_s": total / 1e6 / seconds,
        "cpu_sender_s": cpu,
        "cpu_receiver_s": max(r["cpu_s"] for r in replies),
        "udp_errors": {k: udp1[k] - udp0.get(k, 0) for k in udp1},
        "path": path,
    }


async def _idle(dialer: Dialer, params: Params) -> dict[str, Any]:
    """Open ``idle_connections`` connections, hold them idle, count the survivors.

    Reports this process's RSS before and after; the orchestrator reads the server's. The
    `holding` message tells the orchestrator when every connection is up.
    """
    rss0 = rss_kib()
    conns: list[ClientConn] = []
    failures = 0
    # Why dials failed, by the error's text, so that a run's failed dials are told apart.
    reasons: dict[str, int] = {}
    gate = asyncio.Semaphore(params.idle_concurrency)

    async def one() -> None:
        nonlocal failures
        async with gate:
            for _ in range(IDLE_CONNECT_ATTEMPTS):
                try:
                    async with asyncio.timeout(IDLE_CONNECT_TIMEOUT):
                        conns.append(await dialer.connect())
                    return
                except Exception as exc:  # noqa: BLE001 -- counted by reason
                    failures += 1
                    reason = f"{type(exc).__name__}: {exc}"[:200]
                    if reason not in reasons and len(reasons) >= MAX_FAILURE_REASONS:
                        reason = "(other)"
                    reasons[reason] = reasons.get(reason, 0) + 1

    t0 = time.perf_counter()
    cpu0 = cpu_seconds()
    await asyncio.gather(*(one() for _ in range(params.idle_connections)))
    setup_s = time.perf_counter() - t0
    setup_cpu = cpu_seconds() - cpu0
    rss1 = rss_kib()
    emit("holding", {"connected": len(conns)})
    cpu1 = cpu_seconds()
    await asyncio.sleep(params.idle_hold)
    hold_cpu = cpu_seconds() - cpu1
    alive = sum(1 for c in conns if c.is_open())
    rss2 = rss_kib()
    async with asyncio.timeout(CLOSE_TIMEOUT + len(conns) / 1000):
        for conn in conns:
            await conn.close()
    return {
        "target": params.idle_connections,
        "attempts": IDLE_CONNECT_ATTEMPTS,
        "connected": len(conns),
        "failed": failures,
        "failure_reasons": reasons,
        "alive_after_hold": alive,
        "hold_s": params.idle_hold,
        "setup_s": setup_s,
        "setup_cpu_s": setup_cpu,
        "hold_cpu_s": hold_cpu,
        "client_rss_kib": [rss0, rss1, rss2],
    }


def median(values: list[float]) -> float:
    """Median, NaN for no samples (a skipped metric)."""
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- worker processes


def emit(kind: str, data: Any) -> None:
    """Report to the orchestrator on a stdout line it can tell from library output."""
    sys.stdout.write(PREFIX + json.dumps({"kind": kind, "data": data}) + "\n")
    sys.stdout.flush()


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def until_stdin_closes(work: Awaitable[T]) -> T | None:
    """Run work; cancel it and return None once the orchestrator closes our stdin (or dies)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_stdin_closed())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        task.cancel()
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(task, watch, return_exceptions=True)
    return None if task.cancelled() else task.result()
