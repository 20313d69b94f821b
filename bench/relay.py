"""Relay benchmarks: `python -m bench relay` (or `make bench BENCH_ARGS=relay`).

Two measurements against our relay server (`python -m irohpy relay --dev`), one server
process per scenario on 127.0.0.1, with the load in separate worker processes
(`python -m bench relay --worker pairs|idle`) so the server's CPU and memory are its own:

1. **Forwarding throughput**, for each pair count (default 2, 10, 50): every pair is two raw
   relay clients (aiohttp WebSocket, the challenge handshake, `irohpy.relay.protocol`
   frames); the sender streams 1200-byte datagrams to its partner in batch frames of 20, as
   iroh clients write them, for `--seconds`; the receiver counts payload bytes. Reported:
   payload delivered per second (sum over pairs), datagrams the relay dropped (sent vs
   delivered once the receivers drained, and the relay's own drop counters), the relay's
   CPU% over the sending window (from /proc/PID/stat), payload per relay CPU-second (the
   figure least disturbed by other load on the machine) and its RSS.
2. **Idle capacity**: up to `--idle-target` authenticated clients that only answer the
   relay's Pings, opened from several workers; reported: how many connected, how long it
   took, the relay's CPU per connect, its RSS before/after and per client, its CPU% while
   the clients sit idle for `--idle-hold` seconds (ping timers), and its open-file limit
   (raised for the child through `preexec_fn` as far as the hard limit, or CAP_SYS_RESOURCE,
   allows).

Senders are not paced: each writes as fast as TCP back-pressure from the relay lets it.
The relay drops a datagram when its recipient's send queue (512 frames / 2 MiB) is full,
which happens only if recipients read slower than the relay forwards; the drop rate is
part of the result either way. `--batch 1` sends single-datagram frames instead, to show
the relay's per-frame cost.

Orchestrator ⇄ worker: workers print `common.PREFIX` JSON lines (`ready`, then `result`);
a `go` line on their stdin starts the measured phase; closing stdin stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bench import common
from bench.worker import STDERR_TAIL, Worker, WorkerFailed

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "relay.json"
DATAGRAM_SIZE = 1200
BATCH = 20
"""Datagrams per batch frame, as iroh's relay client writes them."""
DEFAULT_PAIRS = (2, 10, 50)

SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 10.0
WORKER_READY_TIMEOUT = 60.0
WORKER_STOP_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
"""One client's dial + upgrade + handshake, iroh's client connect timeout."""
CLOSE_TIMEOUT = 5.0
DRAIN_MAX = 30.0
"""After the sending window, receivers wait at most this long for frames still in flight..."""
DRAIN_QUIET = 2.0
"""...and stop early once nothing arrived for this long."""
SETTLE = 1.0
"""Pause before reading the relay's RSS, so that it reflects a quiet state."""
FD_HEADROOM = 1024
VARIANTS = {
    "stock": "the relay as it is in src/",
}
_ANNOUNCE = re.compile(r"^(relay listening on|metrics on) (\S+)$")
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------- process facts (/proc)


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def proc_nofile(pid: int) -> int | None:
    """The soft open-files limit of a process (None: unlimited or unreadable)."""
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else int(soft)
    except OSError:
        pass
    return None


def proc_open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


_CAP_SYS_RESOURCE = 24


def has_cap_sys_resource() -> bool:
    """Whether this process may raise hard rlimits (root usually may; some sandboxes drop it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return False


def raise_nofile(want: int) -> int:
    """Raise this process's open-files limit to at least ``want`` if allowed; the new soft limit.

    The soft limit goes up to the hard limit for anyone; root (CAP_SYS_RESOURCE) may raise the
    hard limit too, up to /proc/sys/fs/nr_open.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= want else want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, new_hard))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _server_preexec(nofile: int) -> Callable[[], None]:
    """Runs in the relay child before exec: its fd limit, and death with the orchestrator."""

    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        raise_nofile(nofile)

    return setup


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition as ``{name{label="v"}: value}`` (no ``_created`` samples)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


# ---------------------------------------------------------------- the relay server process


class RelayProcess:
    """One `irohpy relay --dev` child on 127.0.0.1 with ephemeral ports, killed for sure at the end."""

    def __init__(self, nofile: int, profile: Path | None = None, config: str | None = None) -> None:
        self._nofile = nofile
        self._profile = profile
        self._config = config
        self._config_file: IO[bytes] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: IO[bytes] | None = None
        self.url = ""
        self.metrics_url = ""

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> None:
        cmd = [sys.executable]
        if self._profile is not None:
            cmd += ["-m", "cProfile", "-o", str(self._profile)]
        cmd += ["-m", "irohpy"]
        cmd += ["relay", "--dev", "--http-bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"]
        if self._config is not None:
            self._config_file = tempfile.NamedTemporaryFile(suffix=".toml")  # noqa: SIM115 -- closed in close()
            self._config_file.write(self._config.encode())
            self._config_file.flush()
            cmd += ["--config", self._config_file.name]
        self._stderr = tempfile.TemporaryFile()
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=self._stderr,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True, cwd=REPO,
            preexec_fn=_server_preexec(self._nofile),
        )
        found: dict[str, str] = {}
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(SERVER_START_TIMEOUT):
                while len(found) < 2:
                    line = await self._proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"relay exited before announcing its URLs:\n{self.stderr_tail()}")
                    if m := _ANNOUNCE.match(line.decode(errors="replace").strip()):
                        found[m.group(1)] = m.group(2)
        except TimeoutError:
            raise RuntimeError(f"relay did not announce its URLs within {SERVER_START_TIMEOUT:.0f} s:\n"
                               f"{self.stderr_tail()}") from None
        self.url = found["relay listening on"]
        self.metrics_url = found["metrics on"]

    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1).rstrip("/") + "/relay"

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def memory_kib(self) -> dict[str, int]:
        return proc_memory_kib(self.pid)

    def nofile(self) -> int | None:
        return proc_nofile(self.pid)

    def _fetch_metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return parse_metrics(response.read().decode())

    async def metrics(self) -> dict[str, float]:
        return await asyncio.to_thread(self._fetch_metrics)

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-STDERR_TAIL:]

    async def stop(self) -> str:
        """SIGTERM (graceful: clients get Restarting), then SIGKILL; how it ended."""
        proc = self._proc
        if proc is None:
            return "not started"
        how = "exited by itself"
        if proc.returncode is None:
            how = "stopped by SIGTERM"
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(SERVER_STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                how = f"killed (no exit within {SERVER_STOP_TIMEOUT:.0f} s of SIGTERM)"
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return f"{how}, status {proc.returncode}"

    def close(self) -> None:
        """Last resort (also on errors and Ctrl-C): kill without waiting, release the log."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._config_file is not None:
            self._config_file.close()
            self._config_file = None


# ---------------------------------------------------------------- worker processes (orchestrator side)


async def _gather_messages(workers: list[Worker], kind: str, timeout: float) -> list[Any]:
    return list(await asyncio.gather(*(w.message(kind, timeout) for w in workers)))


def _split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive shares (fewer parts if total is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------- raw relay clients (worker side)


async def _first_binary(ws: Any) -> bytes:
    import aiohttp

    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"relay closed the WebSocket during the handshake ({ws.close_code})")


async def dial(session: Any, url: str, secret: Any) -> tuple[Any, int]:
    """An authenticated relay WebSocket (challenge handshake) and its protocol version."""
    from irohpy.relay import protocol as p

    async with asyncio.timeout(CONNECT_TIMEOUT):
        ws = await session.ws_connect(url, protocols=p.SUBPROTOCOLS, max_msg_size=p.MAX_MESSAGE_SIZE,
                                      compress=0, autoping=True)
        try:
            if ws.protocol not in p.SUBPROTOCOLS:
                raise ConnectionError(f"relay picked no iroh-relay subprotocol ({ws.protocol!r})")
            version = p.version_of(ws.protocol)
            challenge = p.decode(await _first_binary(ws), version=version)
            if not isinstance(challenge, p.ServerChallenge):
                raise ConnectionError(f"expected ServerChallenge, got {type(challenge).__name__}")
            await ws.send_bytes(p.encode(p.answer_challenge(secret, challenge)))
            answer = p.decode(await _first_binary(ws), version=version)
            if not isinstance(answer, p.ServerConfirmsAuth):
                raise ConnectionError(f"handshake refused: {answer!r}")
        except BaseException:
            await ws.close()
            raise
    return ws, version


class Receiver:
    """Reads one relay connection: counts datagram payload, answers the relay's Pings."""

    def __init__(self, ws: Any, version: int, source: bytes | None) -> None:
        self.ws = ws
        self.version = version
        self.source = source
        self.bytes = 0
        self.datagrams = 0
        self.frames = 0
        self.wrong_source = 0
        self.pings = 0
        self.other: collections.Counter[str] = collections.Counter()
        self.closed: str | None = None

    async def run(self) -> None:
        import aiohttp

        from irohpy.relay import protocol as p

        batch, single = p.FrameType.RELAY_TO_CLIENT_DATAGRAM_BATCH, p.FrameType.RELAY_TO_CLIENT_DATAGRAM
        key = p.KEY_LEN
        ws, source = self.ws, self.source
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.BINARY:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    continue
                self.closed = f"{msg.type.name} {ws.close_code}"
                return
            data = msg.data
            kind = data[0]
            # Datagram frames are counted from their header alone: decoding each one with the
            # codec would validate the source key every time and make the receiver the bottleneck.
            if kind == batch:
                n = len(data) - (key + 4)
                self.datagrams += -(-n // int.from_bytes(data[key + 2:key + 4], "big"))
            elif kind == single:
                n = len(data) - (key + 2)
                self.datagrams += 1
            else:
                await self._control(p.decode(data, version=self.version))
                continue
            if source is not None and data[1:key + 1] != source:
                self.wrong_source += 1
            self.bytes += n
            self.frames += 1

    async def _control(self, frame: Any) -> None:
        from irohpy.relay import protocol as p

        if isinstance(frame, p.Ping):
            self.pings += 1
            await self.ws.send_bytes(p.encode(p.Pong(frame.data)))
        else:
            self.other[type(frame).__name__] += 1


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _wait_go(stdin: asyncio.StreamReader) -> bool:
    """True on a `go` line; False when the orchestrator closed our stdin instead."""
    while line := await stdin.readline():
        if line.strip() == b"go":
            return True
    return False


async def _drain_stdin(stdin: asyncio.StreamReader) -> None:
    while await stdin.read(4096):
        pass


CLIENTS_PER_SOURCE = 64
"""Idle clients per loopback source address: the relay caps connections per address (128)."""


def source_address(index: int) -> str:
    """A loopback address (in 127.64.0.0/10) for the ``index``-th client, ``CLIENTS_PER_SOURCE`` each."""
    n = index // CLIENTS_PER_SOURCE + 1
    return f"127.{64 + (n >> 16 & 63)}.{n >> 8 & 255}.{n & 255}"


def _session(source: str | None = None) -> Any:
    import aiohttp

    # No per-host connection limit: every client is one long-lived connection to the same relay.
    local = (source, 0) if source is not None else None
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, local_addr=local))


async def _close_all(wss: list[Any], tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(*(ws.close() for ws in wss), return_exceptions=True)


async def _pairs_worker(job: dict[str, Any]) -> None:
    """Connect `pairs` sender/receiver pairs; on `go` stream for `seconds`, then report counts."""
    from irohpy import SecretKey
    from irohpy.relay import protocol as p

    pairs, seconds, url, batch = job["pairs"], job["seconds"], job["url"], job["batch"]
    nofile = raise_nofile(4 * pairs + FD_HEADROOM)
    stdin = await _stdin_reader()
    loop = asyncio.get_running_loop()
    payload = os.urandom(DATAGRAM_SIZE * batch)
    segment_size = DATAGRAM_SIZE if batch > 1 else None  # one datagram: the non-batch frame
    async with _session() as session:
        keys = [(SecretKey.generate(), SecretKey.generate()) for _ in range(pairs)]
        conns = await asyncio.gather(*(dial(session, url, k) for pair in keys for k in pair))
        wss = [ws for ws, _ in conns]
        receivers: list[Receiver] = []
        senders: list[tuple[Any, bytes]] = []
        for i, (a, b) in enumerate(keys):
            (ws_a, va), (ws_b, vb) = conns[2 * i], conns[2 * i + 1]
            receivers += [Receiver(ws_a, va, None), Receiver(ws_b, vb, bytes(a.public()))]
            # Encoded once: the bytes on the wire are the same for every frame of a pair.
            senders.append((ws_a, p.encode(p.ClientToRelay(b.public(), 0, payload, segment_size))))
        readers = [asyncio.create_task(r.run()) for r in receivers]
        common.emit("ready", {"pairs": pairs, "nofile": nofile})
        if not await _wait_go(stdin):
            await _close_all(wss, readers)
            return

        cpu0 = common.cpu_seconds()
        t0 = loop.time()
        stop_at = t0 + seconds
        sent_frames = [0] * pairs
        window: dict[str, Any] = {}

        def snapshot() -> None:
            window["seconds"] = loop.time() - t0
            window["bytes"] = sum(r.bytes for r in receivers)
            window["datagrams"] = sum(r.datagrams for r in receivers)
            window["frames"] = sum(r.frames for r in receivers)
            window["per_pair_bytes"] = [r.bytes for r in receivers if r.source is not None]
            window["sent_frames"] = sum(sent_frames)
            window["cpu_s"] = common.cpu_seconds() - cpu0

        async def send(i: int, ws: Any, message: bytes) -> None:
            while loop.time() < stop_at:
                # Returns at once unless the socket's buffer is full; then it waits for TCP to drain.
                await ws.send_bytes(message)
                sent_frames[i] += 1
                await asyncio.sleep(0)  # let the other senders and the receivers run

        timer = loop.call_at(stop_at, snapshot)
        errors: list[str] = []
        try:
            async with asyncio.timeout(seconds + CONNECT_TIMEOUT):
                outcomes = await asyncio.gather(*(send(i, ws, m) for i, (ws, m) in enumerate(senders)),
                                                return_exceptions=True)
            errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        except TimeoutError:
            errors = ["senders still blocked 10 s after the window"]
        if "seconds" not in window:
            timer.cancel()
            snapshot()
        sent_datagrams = sum(sent_frames) * batch
        # Drain: frames still in socket buffers or relay queues, until all arrived or it goes quiet.
        last, quiet_since = -1, loop.time()
        drain_end = loop.time() + DRAIN_MAX
        while loop.time() < drain_end:
            got = sum(r.datagrams for r in receivers if r.source is not None)
            if got >= sent_datagrams:
                break
            if got != last:
                last, quiet_since = got, loop.time()
            elif loop.time() - quiet_since >= DRAIN_QUIET:
                break
            await asyncio.sleep(0.05)
        drain_s = loop.time() - stop_at
        rx = [r for r in receivers if r.source is not None]
        other: collections.Counter[str] = collections.Counter()
        for r in receivers:
            other.update(r.other)
        common.emit("result", {
            "pairs": pairs,
            "window": window,
            "sent_frames": sum(sent_frames),
            "sent_datagrams": sent_datagrams,
            "sent_bytes": sum(sent_frames) * len(payload),
            "delivered_bytes": sum(r.bytes for r in rx),
            "delivered_datagrams": sum(r.datagrams for r in rx),
            "delivered_frames": sum(r.frames for r in rx),
            "per_pair_delivered_bytes": [r.bytes for r in rx],
            "per_pair_sent_frames": sent_frames,
            "wrong_source": sum(r.wrong_source for r in rx),
            "pings_answered": sum(r.pings for r in receivers),
            "other_frames": dict(other),
            "closed": [r.closed for r in receivers if r.closed],
            "errors": errors,
            "drain_s": drain_s,
            "cpu_s": common.cpu_seconds() - cpu0,
        })
        await _drain_stdin(stdin)
        await _close_all(wss, readers)


async def _idle_worker(job: dict[str, Any]) -> None:
    """Make `count` keys; on `go` connect them (`concurrency` at a time), report, hold until EOF."""
    from irohpy import SecretKey

    count, concurrency, url, budget = job["count"], job["concurrency"], job["url"], job["budget"]
    first = job.get("first", 0)
    nofile = raise_nofile(count + FD_HEADROOM)
    stdin = await _stdin_reader()
    loop = asyncio.get_running_loop()
    keys = [SecretKey.generate() for _ in range(count)]
    async with contextlib.AsyncExitStack() as stack:
        sessions: dict[str, Any] = {}
        for i in range(count):
            source = source_address(first + i)
            if source not in sessions:
                sessions[source] = await stack.enter_async_context(_session(source))
        common.emit("ready", {"count": count, "nofile": nofile})
        if not await _wait_go(stdin):
            return
        cpu0 = common.cpu_seconds()
        t0 = loop.time()
        deadline = t0 + budget
        wss: list[Any] = []
        receivers: list[Receiver] = []
        readers: list[asyncio.Task[None]] = []
        errors: collections.Counter[str] = collections.Counter()
        handshake_ms: list[float] = []
        skipped = 0
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int, secret: Any) -> None:
            nonlocal skipped
            async with gate:
                if loop.time() >= deadline:
                    skipped += 1
                    return
                started = loop.time()
                try:
                    ws, version = await dial(sessions[source_address(first + i)], url, secret)
                except Exception as exc:  # noqa: BLE001 -- counted and reported by kind
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                    return
                handshake_ms.append((loop.time() - started) * 1e3)
            receiver = Receiver(ws, version, None)
            wss.append(ws)
            receivers.append(receiver)
            readers.append(asyncio.create_task(receiver.run()))

        await asyncio.gather(*(one(i, k) for i, k in enumerate(keys)))
        seconds = loop.time() - t0
        handshake_ms.sort()

        def pct(q: float) -> float | None:
            return handshake_ms[min(len(handshake_ms) - 1, int(q * len(handshake_ms)))] if handshake_ms else None

        common.emit("result", {
            "count": count,
            "connected": len(wss),
            "failed": sum(errors.values()),
            "skipped_after_budget": skipped,
            "errors": dict(errors.most_common(5)),
            "seconds": seconds,
            "cpu_s": common.cpu_seconds() - cpu0,
            "handshake_ms_p50": pct(0.5),
            "handshake_ms_p99": pct(0.99),
            "nofile": nofile,
        })
        await _drain_stdin(stdin)
        common.emit("closing", {
            "still_open": sum(1 for r in receivers if r.closed is None),
            "pings_answered": sum(r.pings for r in receivers),
        })
        await _close_all(wss, readers)


# ---------------------------------------------------------------- scenarios (orchestrator)


def _dropped(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    prefix = "iroh_relay_packets_dropped_total{"
    out = {}
    for key, value in after.items():
        if key.startswith(prefix):
            delta = value - before.get(key, 0.0)
            if delta:
                out[key[len(prefix):-1].removeprefix('reason="').removesuffix('"')] = delta
    return out


async def _stop_all(workers: list[Worker], server: RelayProcess) -> str:
    await asyncio.gather(*(w.stop(WORKER_STOP_TIMEOUT) for w in workers))
    return await server.stop()


async def _throughput(variant: str, pairs: int, args: argparse.Namespace) -> dict[str, Any]:
    """One relay, `pairs` pairs spread over the load workers, one sending window."""
    profile = args.server_profile / f"relay-pairs{pairs}.pstats" if args.server_profile else None
    server = RelayProcess(4 * pairs + FD_HEADROOM, profile)
    workers: list[Worker] = []
    try:
        await server.start()
        shares = _split(pairs, args.load_workers)
        for i, n in enumerate(shares):
            job = {"url": server.ws_url(), "pairs": n, "seconds": args.seconds, "batch": args.batch}
            workers.append(await Worker.spawn(f"pairs worker {i}", "relay", "--worker", "pairs", "--job", json.dumps(job)))
        await _gather_messages(workers, "ready", WORKER_READY_TIMEOUT)
        m0 = await server.metrics()
        mem0 = server.memory_kib()
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        for w in workers:
            w.go()
        await asyncio.sleep(args.seconds)
        cpu1, wall1 = server.cpu_seconds(), time.monotonic()
        results = await _gather_messages(workers, "result", args.seconds + CONNECT_TIMEOUT + DRAIN_MAX + 10)
        m1 = await server.metrics()
        mem1 = server.memory_kib()
        ended = await _stop_all(workers, server)
    finally:
        for w in workers:
            w.close()
        server.close()

    dropped = _dropped(m0, m1)
    window_s = max(r["window"]["seconds"] for r in results)
    window_bytes = sum(r["window"]["bytes"] for r in results)
    sent = sum(r["sent_datagrams"] for r in results)
    delivered = sum(r["delivered_datagrams"] for r in results)
    per_pair = [b for r in results for b in r["window"]["per_pair_bytes"]]
    return {
        "variant": variant,
        "pairs": pairs,
        "batch": args.batch,
        "workers": len(shares),
        "seconds": args.seconds,
        "window_s": window_s,
        "delivered_mb_s": window_bytes / 1e6 / args.seconds,
        "written_mb_s": sum(r["window"]["sent_frames"] for r in results) * args.batch * DATAGRAM_SIZE
        / 1e6 / args.seconds,
        "relay_frames_per_s": sum(r["window"]["frames"] for r in results) / args.seconds,
        "sent_datagrams": sent,
        "delivered_datagrams": delivered,
        "drop_rate": 1 - delivered / sent if sent else float("nan"),
        "relay_dropped": dropped,
        "relay_dropped_datagrams": sum(dropped.values()),
        "undelivered_not_dropped": sent - delivered - sum(dropped.values()),
        "drain_s_max": max(r["drain_s"] for r in results),
        "relay_forwarded_bytes": m1.get("iroh_relay_bytes_forwarded_total", 0) - m0.get(
            "iroh_relay_bytes_forwarded_total", 0),
        "relay_cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "mb_per_relay_cpu_s": window_bytes / 1e6 / (cpu1 - cpu0) if cpu1 > cpu0 else None,
        "relay_rss_kib_before": mem0.get("VmRSS"),
        "relay_rss_kib_after": mem1.get("VmRSS"),
        "relay_rss_kib_peak": mem1.get("VmHWM"),
        "load_cpu_pct": 100 * sum(r["window"]["cpu_s"] for r in results) / window_s,
        "per_pair_mb_s_min": min(per_pair) / 1e6 / args.seconds if per_pair else None,
        "per_pair_mb_s_max": max(per_pair) / 1e6 / args.seconds if per_pair else None,
        "wrong_source": sum(r["wrong_source"] for r in results),
        "worker_errors": [e for r in results for e in r["errors"]],
        "closed": [c for r in results for c in r["closed"]],
        "relay_end": ended,
        "workers_raw": results,
    }


async def _idle(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One relay, up to `idle_target` idle clients from several workers, then a quiet hold."""
    target = args.idle_target
    profile = args.server_profile / "relay-idle.pstats" if args.server_profile else None
    server = RelayProcess(target + FD_HEADROOM, profile)
    workers: list[Worker] = []
    try:
        await server.start()
        nofile = server.nofile()
        shares = _split(target, args.idle_workers)
        per_worker_concurrency = max(1, args.idle_concurrency // len(shares))
        for i, n in enumerate(shares):
            job = {"url": server.ws_url(), "count": n, "concurrency": per_worker_concurrency,
                   "budget": args.idle_budget, "first": sum(shares[:i])}
            workers.append(await Worker.spawn(f"idle worker {i}", "relay", "--worker", "idle", "--job", json.dumps(job)))
        ready = await _gather_messages(workers, "ready", WORKER_READY_TIMEOUT)
        await asyncio.sleep(SETTLE)
        mem0 = server.memory_kib()
        fds0 = proc_open_fds(server.pid)
        cpu0 = server.cpu_seconds()
        t0 = time.monotonic()
        for w in workers:
            w.go()
        results = await _gather_messages(workers, "result", args.idle_budget + CONNECT_TIMEOUT + 30)
        connect_s = time.monotonic() - t0
        cpu1 = server.cpu_seconds()
        await asyncio.sleep(SETTLE)
        mem1 = server.memory_kib()
        fds1 = proc_open_fds(server.pid)
        m1 = await server.metrics()
        # The hold: every client sits idle; the relay only runs its ping timers (15 s + 1-5 s).
        cpu2, wall2 = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.idle_hold)
        cpu3, wall3 = server.cpu_seconds(), time.monotonic()
        mem3 = server.memory_kib()
        m3 = await server.metrics()
        for w in workers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        closing = await _gather_messages(workers, "closing", WORKER_STOP_TIMEOUT)
        ended = await _stop_all(workers, server)
    finally:
        for w in workers:
            w.close()
        server.close()

    connected = sum(r["connected"] for r in results)
    relay_connections = m1.get("iroh_relay_connections", 0.0)
    grew = (mem1["VmRSS"] - mem0["VmRSS"]) if "VmRSS" in mem0 and "VmRSS" in mem1 else None
    errors: collections.Counter[str] = collections.Counter()
    for r in results:
        errors.update(r["errors"])
    disconnect = "iroh_relay_disconnects_total{"
    return {
        "variant": variant,
        "target": target,
        "workers": len(shares),
        "concurrency": per_worker_concurrency * len(shares),
        "connected": connected,
        "relay_connections": relay_connections,
        "failed": sum(r["failed"] for r in results),
        "skipped_after_budget": sum(r["skipped_after_budget"] for r in results),
        "errors": dict(errors.most_common(5)),
        "connect_s": connect_s,
        "connects_per_s": connected / connect_s if connect_s else None,
        "handshake_ms_p50_max": max((r["handshake_ms_p50"] or 0) for r in results),
        "handshake_ms_p99_max": max((r["handshake_ms_p99"] or 0) for r in results),
        "relay_cpu_s": cpu1 - cpu0,
        "relay_cpu_ms_per_connect": 1e3 * (cpu1 - cpu0) / connected if connected else None,
        "relay_rss_kib_before": mem0.get("VmRSS"),
        "relay_rss_kib_after": mem1.get("VmRSS"),
        "relay_rss_kib_after_hold": mem3.get("VmRSS"),
        "relay_rss_kib_peak": mem3.get("VmHWM"),
        "rss_kib_per_client": grew / relay_connections if grew is not None and relay_connections else None,
        "relay_fds_before": fds0,
        "relay_fds_after": fds1,
        "relay_nofile": nofile,
        "relay_nofile_requested": target + FD_HEADROOM,
        "worker_nofile": [r["nofile"] for r in ready],
        "hold_s": wall3 - wall2,
        "hold_relay_cpu_pct": 100 * (cpu3 - cpu2) / (wall3 - wall2) if wall3 > wall2 else None,
        "hold_relay_connections_end": m3.get("iroh_relay_connections", 0.0),
        "relay_pings_sent": m3.get("iroh_relay_pings_sent_total", 0.0),
        "relay_disconnects": {k[len(disconnect):-1]: v for k, v in m3.items()
                              if k.startswith(disconnect) and v},
        "still_open_at_end": sum(c["still_open"] for c in closing),
        "pings_answered": sum(c["pings_answered"] for c in closing),
        "load_cpu_s": sum(r["cpu_s"] for r in results),
        "relay_end": ended,
    }


# ---------------------------------------------------------------- report


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.0f}"


def _throughput_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| relay | pairs | delivered MB/s | delivered frames/s | drop % (sent vs delivered) | relay drops by reason | relay CPU % "
        "| MB per relay CPU-s | relay RSS MiB (peak) | load CPU % (of 200) | per-pair MB/s min–max |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['pairs']} | failed: {r['error'].splitlines()[0][:120]} "
                         "| | | | | | | | |")
            continue
        drops = ", ".join(f"{k} {v:.0f}" for k, v in r["relay_dropped"].items()) or "none"
        efficiency = "?" if r["mb_per_relay_cpu_s"] is None else f"{r['mb_per_relay_cpu_s']:.0f}"
        lines.append(
            f"| {r['variant']} | {r['pairs']} | {r['delivered_mb_s']:.1f} | {r['relay_frames_per_s']:.0f} "
            f"| {100 * r['drop_rate']:.2f} | {drops} | {r['relay_cpu_pct']:.0f} "
            f"| {efficiency} "
            f"| {_mib(r['relay_rss_kib_after'])} ({_mib(r['relay_rss_kib_peak'])}) | {r['load_cpu_pct']:.0f} "
            f"| {r['per_pair_mb_s_min']:.2f}–{r['per_pair_mb_s_max']:.2f} |"
        )
    return "\n".join(lines)


def _idle_table(r: dict[str, Any]) -> str:
    lines = [
        "| relay | target | connected (relay gauge) | failed | connect s | connects/s | handshake ms p50/p99 "
        "| relay CPU ms/connect | relay RSS MiB before → after | KiB/client | idle relay CPU % "
        "| relay fd limit |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    if "error" in r:
        lines.append(f"| {r['variant']} | {r['target']} | failed: {r['error'].splitlines()[0][:120]} "
                     "| | | | | | | | | |")
        return "\n".join(lines)
    per = r["rss_kib_per_client"]
    per_connect = r["relay_cpu_ms_per_connect"]
    hold = r["hold_relay_cpu_pct"]
    lines.append(
        f"| {r['variant']} | {r['target']} | {r['connected']} ({r['relay_connections']:.0f}) | {r['failed']} "
        f"| {r['connect_s']:.1f} | {r['connects_per_s']:.0f} "
        f"| {r['handshake_ms_p50_max']:.0f}/{r['handshake_ms_p99_max']:.0f} "
        f"| {'?' if per_connect is None else f'{per_connect:.2f}'} "
        f"| {_mib(r['relay_rss_kib_before'])} → {_mib(r['relay_rss_kib_after'])} "
        f"| {'?' if per is None else f'{per:.1f}'} | {'-' if hold is None else f'{hold:.1f}'} "
        f"| {r['relay_nofile']} |"
    )
    return "\n".join(lines)


def _notes(rows: list[dict[str, Any]], idle: dict[str, Any] | None, args: argparse.Namespace) -> list[str]:
    notes = []
    for r in rows:
        label = f"{r['variant']}, {r['pairs']} pairs"
        if r.get("wrong_source"):
            notes.append(f"{label}: {r['wrong_source']} frames arrived with the wrong source id")
        if r.get("worker_errors"):
            notes.append(f"{label}: sender errors {r['worker_errors'][:3]}")
        if r.get("closed"):
            notes.append(f"{label}: connections closed early {r['closed'][:3]}")
        if r.get("undelivered_not_dropped", 0) > 0:
            notes.append(f"{label}: {r['undelivered_not_dropped']} datagrams the relay did not count as dropped "
                         f"had not arrived when the receivers stopped waiting ({r['drain_s_max']:.1f} s after "
                         "the window): a backlog in TCP buffers, not relay drops")
    saturated = [f"{r['variant']}/{r['pairs']}" for r in rows if r.get("relay_cpu_pct", 0) >= 90]
    if saturated:
        notes.append(f"relay CPU ≥ 90% of one core (it is the bottleneck: one process, one event loop) in "
                     f"{', '.join(saturated)}")
    busy = [f"{r['variant']}/{r['pairs']}" for r in rows if r.get("load_cpu_pct", 0) + r.get("relay_cpu_pct", 0)
            >= 90 * (os.cpu_count() or 1)]
    if busy:
        notes.append(f"relay + load used ≥ 90% of all {os.cpu_count()} CPUs in {', '.join(busy)}: "
                     "the load generators compete with the relay for CPU there")
    if idle is not None and "error" not in idle:
        limit = idle["relay_nofile"]
        if limit is not None and limit < idle["target"] + 64:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            why = ("this process lacks CAP_SYS_RESOURCE (even as root here), so the hard limit "
                   f"{hard} stays" if not has_cap_sys_resource() else f"the hard limit is {hard}")
            notes.append(f"the relay's open-files limit ({limit}) caps idle clients below the target "
                         f"{idle['target']} (it needs about target + 10): {why}")
        if idle["connected"] < idle["target"]:
            notes.append(f"idle: {idle['connected']}/{idle['target']} connected; failures {idle['errors']}, "
                         f"{idle['skipped_after_budget']} not tried within --idle-budget {args.idle_budget:g} s")
        if idle["still_open_at_end"] < idle["connected"] or idle["relay_disconnects"]:
            notes.append(f"idle: {idle['still_open_at_end']} of {idle['connected']} still open after the hold; "
                         f"relay disconnects {idle['relay_disconnects']}")
        notes.append(f"idle: held {idle['hold_s']:.0f} s; the relay sent {idle['relay_pings_sent']:.0f} pings, "
                     f"clients answered {idle['pings_answered']}; RSS after the hold "
                     f"{_mib(idle['relay_rss_kib_after_hold'])} MiB")
    return notes


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for dist in ("irohpy", "aiohttp"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


async def _orchestrate(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before starting; other processes share the CPUs",
              file=sys.stderr)
    if args.server_profile is not None:
        args.server_profile.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    rows: list[dict[str, Any]] = []
    ok = True
    for variant in args.relay:
        for pairs in args.pairs:
            print(f"== relay ({variant}) throughput: {pairs} pairs for {args.seconds:g} s ...",
                  file=sys.stderr, flush=True)
            try:
                rows.append(await _throughput(variant, pairs, args))
            except (WorkerFailed, RuntimeError, OSError) as exc:
                ok = False
                print(f"== {pairs} pairs: FAILED: {exc}", file=sys.stderr)
                rows.append({"variant": variant, "pairs": pairs, "error": str(exc)})
    idle: dict[str, Any] | None = None
    if args.idle_target > 0:
        variant = args.relay[0]
        print(f"== relay ({variant}) idle capacity: up to {args.idle_target} clients, then {args.idle_hold:g} s "
              "idle ...", file=sys.stderr, flush=True)
        try:
            idle = await _idle(variant, args)
        except (WorkerFailed, RuntimeError, OSError) as exc:
            ok = False
            print(f"== idle: FAILED: {exc}", file=sys.stderr)
            idle = {"variant": variant, "target": args.idle_target, "error": str(exc)}
    elapsed = time.monotonic() - t_start

    frames = f"batch frames of {args.batch}" if args.batch > 1 else "single-datagram frames"
    out = []
    if rows:
        out.append(f"Relay forwarding: {DATAGRAM_SIZE}-byte datagrams in {frames}, {args.seconds:g} s per row, "
                   f"pairs over {args.load_workers} load worker processes, a fresh relay process per row")
        out.append(_throughput_table(rows))
    if idle is not None:
        out.append(f"Relay idle capacity: {idle.get('workers', args.idle_workers)} worker processes, "
                   f"{args.idle_concurrency} handshakes in flight, then {args.idle_hold:g} s idle")
        out.append(_idle_table(idle))
    if any(v != "stock" for v in args.relay):
        out.append("Relay variants:\n" + "\n".join(f"- {v}: {VARIANTS[v]}" for v in args.relay))
    notes = _notes(rows, idle, args)
    if notes:
        out.append("Notes:\n" + "\n".join(f"- {n}" for n in notes))
    text = "\n\n".join(out)
    print(f"\n{text}\n\n(total {elapsed:.0f} s)", flush=True)

    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "loopback_only": not common.foreign_interfaces(),
        "cap_sys_resource": has_cap_sys_resource(),
        "nofile_limits": resource.getrlimit(resource.RLIMIT_NOFILE),
        "versions": _versions(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                 if k not in ("worker", "job")},
        "elapsed_s": elapsed,
        "table": text,
        "throughput": rows,
        "idle": idle,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"raw results: {args.json}", file=sys.stderr)
    return 0 if ok else 1


# ---------------------------------------------------------------- command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _pair_list(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of pair counts, e.g. 2,10,50") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("pair counts must be at least 1")
    return values


def _variant_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VARIANTS)}")
    return names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench relay",
        description="Relay server benchmarks on loopback: forwarding throughput with N client pairs, "
                    "and idle client capacity. The relay runs alone in its own process (a fresh one "
                    "per scenario); the load comes from worker processes.",
    )
    parser.add_argument("--pairs", type=_pair_list, default=list(DEFAULT_PAIRS),
                        help="comma-separated pair counts for the throughput runs, 'none' to skip "
                             f"(default {','.join(map(str, DEFAULT_PAIRS))})")
    parser.add_argument("--seconds", type=float, default=5.0, help="sending window per throughput run (default 5)")
    parser.add_argument("--batch", type=int, choices=range(1, BATCH + 1), default=BATCH, metavar="N",
                        help=f"datagrams per frame, 1 for single-datagram frames (default {BATCH}, iroh's maximum)")
    parser.add_argument("--load-workers", type=_positive, default=max(2, os.cpu_count() or 2),
                        help="worker processes the pairs are spread over (default: CPUs, at least 2)")
    parser.add_argument("--idle-target", type=_non_negative, default=10_000,
                        help="idle clients to open, 0 to skip (default 10000)")
    parser.add_argument("--idle-workers", type=_positive, default=4,
                        help="worker processes for the idle clients (default 4)")
    parser.add_argument("--idle-concurrency", type=_positive, default=128,
                        help="handshakes in flight, over all idle workers (default 128; the relay's "
                             "listen backlog is 100)")
    parser.add_argument("--idle-budget", type=float, default=90.0,
                        help="seconds to keep opening idle clients before settling for fewer (default 90)")
    parser.add_argument("--idle-hold", type=float, default=25.0,
                        help="seconds the idle clients stay connected after the last one joined, so that "
                             "the relay pings each at least once (default 25; ping interval 15 s + 1-5 s)")
    parser.add_argument("--relay", type=_variant_list, default=["stock"],
                        help="comma-separated relay variants for the throughput runs, the first also for "
                             f"the idle run: {'; '.join(f'{k}: {v}' for k, v in VARIANTS.items())} "
                             "(default stock)")
    parser.add_argument("--server-profile", type=Path, metavar="DIR",
                        help="run each relay under cProfile, writing DIR/relay-*.pstats (slows it down)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write raw results (default {RESULTS})")
    parser.add_argument("--worker", choices=("pairs", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        job = json.loads(args.job)
        work = _pairs_worker(job) if args.worker == "pairs" else _idle_worker(job)
        asyncio.run(work)
        return 0
    if args.seconds <= 0 or args.idle_hold < 0 or args.idle_budget <= 0:
        parser.error("--seconds and --idle-budget must be positive, --idle-hold not negative")
    try:
        return asyncio.run(_orchestrate(args))
    except KeyboardInterrupt:
        print("interrupted; relay and workers stopped", file=sys.stderr)
        return 130
