"""Relay soak under attack: `python -m bench soak` (see docs/deploy-a-relay.md, "Limits").

One relay process (`irohpy relay --dev`, default limits unless `--rx-limit`) on 127.0.0.1:

1. `--clients` idle clients (default 10,000) connect from worker processes, 64 per loopback
   source address (the relay caps connections per address), and answer the relay's Pings;
2. honest pairs, in two worker processes of their own: `--latency-pairs` pairs each send a
   small timestamped datagram every `--probe-ms` (one-way forwarding latency), and
   `--bulk-pairs` pairs stream 1200-byte datagrams in batch frames of 20 (throughput);
3. a baseline window of `--seconds`, then the same window while one abusive client of each
   kind runs, each in its own process (`python -m tests.relay_attacker`): a Ping flood, a
   flood of 64 KB batch frames with segment size 1 aimed at a latency receiver, junk QUIC
   Initials flooded to a sink of the attacker's own, a client address holding 1,000 idle
   sockets, and one sending malformed HTTP requests.

Reported per window: the honest pairs' latency p50/p99/max and bulk throughput, the relay's
CPU% and RSS, its connection count and drops by reason, and what each attacker achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.relay import (
    BATCH, CONNECT_TIMEOUT, DATAGRAM_SIZE, FD_HEADROOM, REPO, WORKER_READY_TIMEOUT, RelayProcess, Receiver,
    _close_all, _gather_messages, _session, _split, _stdin_reader, dial, raise_nofile,
)
from bench.worker import Worker, WorkerFailed

RESULTS = REPO / "bench" / "results" / "soak.json"
HONEST_SOURCE = "127.0.0.1"
HOG_SOURCE = "127.0.0.2"
JUNK_HTTP = b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Header: " + b"A" * 4000 + b"\r\n\r\n"


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- the honest pairs (worker side)


async def _pairs_worker(job: dict[str, Any]) -> None:
    """Latency and bulk pairs; every `mark` line on stdin reports the window since the last one."""
    from irohpy import SecretKey
    from irohpy.relay import protocol as p

    raise_nofile(4 * (job["latency_pairs"] + job["bulk_pairs"]) + FD_HEADROOM)
    stdin = await _stdin_reader()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    late = 0
    async with _session(HONEST_SOURCE) as session:
        n = job["latency_pairs"] + job["bulk_pairs"]
        keys = [(SecretKey.generate(), SecretKey.generate()) for _ in range(n)]
        conns = await asyncio.gather(*(dial(session, job["url"], k) for pair in keys for k in pair))
        wss = [ws for ws, _ in conns]
        tasks: list[asyncio.Task[None]] = []
        bulk_receivers: list[Receiver] = []

        async def probe(ws: Any, to: Any) -> None:
            while True:
                await ws.send_bytes(p.encode(p.ClientToRelay(to, 0, time.perf_counter().hex().encode())))
                await asyncio.sleep(job["probe_ms"] / 1000)

        async def measure(ws: Any, version: int) -> None:
            nonlocal late
            while True:
                msg = await ws.receive()
                if msg.type.name != "BINARY":
                    return
                frame = p.decode(msg.data, version=version)
                if isinstance(frame, p.RelayToClient):
                    latencies.append(time.perf_counter() - float.fromhex(frame.payload.decode()))
                elif isinstance(frame, p.Ping):
                    await ws.send_bytes(p.encode(p.Pong(frame.data)))

        async def bulk(ws: Any, message: bytes) -> None:
            while True:
                await ws.send_bytes(message)
                await asyncio.sleep(0)

        payload = os.urandom(DATAGRAM_SIZE * BATCH)
        for i, (a, b) in enumerate(keys):
            (ws_a, va), (ws_b, vb) = conns[2 * i], conns[2 * i + 1]
            if i < job["latency_pairs"]:
                tasks += [asyncio.create_task(probe(ws_a, b.public())), asyncio.create_task(measure(ws_b, vb)),
                          asyncio.create_task(Receiver(ws_a, va, None).run())]
            else:
                receiver = Receiver(ws_b, vb, bytes(a.public()))
                bulk_receivers.append(receiver)
                message = p.encode(p.ClientToRelay(b.public(), 0, payload, DATAGRAM_SIZE))
                tasks += [asyncio.create_task(bulk(ws_a, message)), asyncio.create_task(receiver.run()),
                          asyncio.create_task(Receiver(ws_a, va, None).run())]
        victims = [str(b.public()) for _, b in keys[:job["latency_pairs"]]]
        common.emit("ready", {"victims": victims})
        t0, bytes0, cpu0 = loop.time(), 0, common.cpu_seconds()
        while line := await stdin.readline():
            if line.strip() != b"mark":
                continue
            now, got = loop.time(), sum(r.bytes for r in bulk_receivers)
            window, latencies[:] = list(latencies), []
            common.emit("window", {
                "seconds": now - t0,
                "samples": len(window),
                "latency_ms_p50": (_pct(window, 0.5) or 0) * 1e3,
                "latency_ms_p99": (_pct(window, 0.99) or 0) * 1e3,
                "latency_ms_max": max(window, default=0) * 1e3,
                "bulk_mbit_s": 8 * (got - bytes0) / (now - t0) / 1e6,
                "worker_cpu_s": common.cpu_seconds() - cpu0,
                "closed": sum(1 for ws in wss if ws.closed),
            })
            t0, bytes0, cpu0 = now, got, common.cpu_seconds()
        await _close_all(wss, tasks)


# ---------------------------------------------------------------- attackers


def _attacker(relay: RelayProcess, kind: str, seconds: float, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.relay_attacker", relay.url, kind, f"{seconds:g}", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _junk_http(relay: RelayProcess, seconds: float) -> dict[str, int]:
    """Malformed requests back to back from one address; how many got their 400."""
    port = int(relay.url.rsplit(":", 1)[1].strip("/"))
    end = time.monotonic() + seconds
    counts = {"sent": 0, "answered_400": 0}
    while time.monotonic() < end:
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
                writer.write(JUNK_HTTP)
                counts["sent"] += 1
                if b" 400 " in (await reader.read(64)):
                    counts["answered_400"] += 1
                writer.close()
                await writer.wait_closed()
        await asyncio.sleep(0.01)
    return counts


async def _collect(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    try:
        out, err = await asyncio.to_thread(proc.communicate, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = await asyncio.to_thread(proc.communicate)
    lines = out.decode(errors="replace").strip().splitlines()
    return json.loads(lines[-1]) if lines else {"error": err.decode(errors="replace")[-500:]}


# ---------------------------------------------------------------- orchestrator


async def _mark(workers: list[Worker]) -> list[dict[str, Any]]:
    for w in workers:
        assert w.proc.stdin is not None
        w.proc.stdin.write(b"mark\n")
    return await _gather_messages(workers, "window", 30)


async def _window(relay: RelayProcess, latency: Worker, bulk: Worker | None, seconds: float) -> dict[str, Any]:
    pairs = [latency] if bulk is None else [latency, bulk]
    cpu0, wall0 = relay.cpu_seconds(), time.monotonic()
    await _mark(pairs)  # start of the window
    await asyncio.sleep(seconds)
    windows = await _mark(pairs)
    honest = dict(windows[0], bulk_mbit_s=windows[1]["bulk_mbit_s"] if bulk is not None else 0.0)
    cpu1, wall1 = relay.cpu_seconds(), time.monotonic()
    mem = relay.memory_kib()
    m = await relay.metrics()
    return {
        "honest": honest,
        "relay_cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "relay_rss_mib": mem.get("VmRSS", 0) / 1024,
        "relay_rss_peak_mib": mem.get("VmHWM", 0) / 1024,
        "relay_connections": m.get("iroh_relay_connections", 0.0),
        "metrics": {k: v for k, v in m.items() if v and not k.startswith(("iroh_relay_queued", "iroh_relay_pings"))},
    }


async def _orchestrate(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    config = None
    if args.rx_limit:
        config = f"[limits.client.rx]\nbytes_per_second = {args.rx_limit}\n"
    relay = RelayProcess(args.clients + 4 * args.latency_pairs + 4 * args.bulk_pairs + 2 * FD_HEADROOM,
                         config=config)
    workers: list[Worker] = []
    latency: Worker | None = None
    bulk: Worker | None = None
    result: dict[str, Any] = {}
    try:
        await relay.start()
        shares = _split(args.clients, args.workers) if args.clients else []
        for i, n in enumerate(shares):
            job = {"url": relay.ws_url(), "count": n, "concurrency": max(1, 128 // len(shares)),
                   "budget": args.connect_budget, "first": sum(shares[:i])}
            workers.append(await Worker.spawn(f"idle worker {i}", "relay", "--worker", "idle",
                                              "--job", json.dumps(job)))
        await _gather_messages(workers, "ready", WORKER_READY_TIMEOUT)
        print(f"== connecting {args.clients} idle clients ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        cpu0 = relay.cpu_seconds()
        for w in workers:
            w.go()
        connected = await _gather_messages(workers, "result", args.connect_budget + CONNECT_TIMEOUT + 60)
        result["idle"] = {
            "target": args.clients,
            "connected": sum(r["connected"] for r in connected),
            "failed": sum(r["failed"] for r in connected),
            "connect_s": time.monotonic() - t0,
            "relay_cpu_s": relay.cpu_seconds() - cpu0,
            "errors": [e for r in connected for e in r["errors"]][:5],
        }
        print(f"== {result['idle']['connected']} connected in {result['idle']['connect_s']:.0f} s",
              file=sys.stderr, flush=True)
        job = {"url": relay.ws_url(), "latency_pairs": args.latency_pairs, "bulk_pairs": 0, "probe_ms": args.probe_ms}
        latency = await Worker.spawn("latency pairs", "soak", "--worker", "pairs", "--job", json.dumps(job))
        victims = (await latency.message("ready", WORKER_READY_TIMEOUT))["victims"]
        if args.bulk_pairs:
            job = dict(job, latency_pairs=0, bulk_pairs=args.bulk_pairs)
            bulk = await Worker.spawn("bulk pairs", "soak", "--worker", "pairs", "--job", json.dumps(job))
            await bulk.message("ready", WORKER_READY_TIMEOUT)
        await asyncio.sleep(2.0)
        print(f"== baseline window, {args.seconds:g} s ...", file=sys.stderr, flush=True)
        result["baseline"] = await _window(relay, latency, bulk, args.seconds)
        attack_s = args.seconds + 6
        print(f"== attack window, {args.seconds:g} s ...", file=sys.stderr, flush=True)
        attackers = {
            "ping_flood": _attacker(relay, "ping", attack_s, "--source", "127.0.0.4"),
            "segment_1_batches": _attacker(relay, "batch", attack_s, "--to", victims[0], "--segment", "1",
                                           "--source", "127.0.0.5"),
            "junk_initials": _attacker(relay, "junk", attack_s, "--source", "127.0.0.6"),
            "idle_sockets": _attacker(relay, "idle", attack_s, "--sockets", "1000", "--source", HOG_SOURCE),
        }
        junk = asyncio.create_task(_junk_http(relay, attack_s))
        try:
            await asyncio.sleep(3.0)
            result["attack"] = await _window(relay, latency, bulk, args.seconds)
        finally:
            outcomes = {name: await _collect(proc, attack_s + 30) for name, proc in attackers.items()}
            outcomes["malformed_http"] = await junk
        result["attackers"] = outcomes
        for w in (latency, bulk, *workers):
            if w is not None:
                await w.stop()
        result["relay_end"] = await relay.stop()
    except (WorkerFailed, RuntimeError, OSError) as exc:
        print(f"soak FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for w in (latency, bulk, *workers):
            if w is not None:
                w.close()
        relay.close()
    print(_report(result, args))
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "job")},
        **result,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"raw results: {args.json}", file=sys.stderr)
    return 0


def _report(r: dict[str, Any], args: argparse.Namespace) -> str:
    idle = r["idle"]
    lines = [f"Relay soak: {idle['connected']}/{idle['target']} idle clients connected in {idle['connect_s']:.0f} s "
             f"({idle['failed']} failed); {args.latency_pairs} latency pairs (probe every {args.probe_ms} ms), "
             f"{args.bulk_pairs} bulk pairs; rx limit: {args.rx_limit or 'none'}", "",
             "| window | latency p50 | p99 | max | samples | bulk Mbit/s | relay CPU | relay RSS | connections |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ("baseline", "attack"):
        w = r[name]
        h = w["honest"]
        lines.append(f"| {name} | {h['latency_ms_p50']:.1f} ms | {h['latency_ms_p99']:.1f} ms | "
                     f"{h['latency_ms_max']:.1f} ms | {h['samples']} | {h['bulk_mbit_s']:.1f} | "
                     f"{w['relay_cpu_pct']:.0f}% | {w['relay_rss_mib']:.0f} MiB | {w['relay_connections']:.0f} |")
    lines += ["", "Attackers: " + json.dumps(r["attackers"]), "",
              "Relay counters after the attack: " + json.dumps(r["attack"]["metrics"])]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000, help="idle clients (default 10000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes for the idle clients (default 4)")
    parser.add_argument("--connect-budget", type=float, default=240.0,
                        help="seconds to keep connecting idle clients (default 240)")
    parser.add_argument("--latency-pairs", type=int, default=10, help="latency-probing pairs (default 10)")
    parser.add_argument("--bulk-pairs", type=int, default=2, help="bulk-streaming pairs (default 2)")
    parser.add_argument("--probe-ms", type=float, default=20.0, help="probe interval per latency pair (default 20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="each measurement window (default 20)")
    parser.add_argument("--rx-limit", type=int, default=0, metavar="BYTES_PER_S",
                        help="run the relay with [limits.client.rx] bytes_per_second (default: no limit)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"raw results (default {RESULTS})")
    parser.add_argument("--worker", choices=("pairs",), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "pairs":
        asyncio.run(_pairs_worker(json.loads(args.job)))
        return 0
    if args.latency_pairs < 1 or args.seconds <= 0 or args.clients < 0:
        parser.error("need at least one latency pair, a positive window and a non-negative client count")
    try:
        return asyncio.run(_orchestrate(args))
    except KeyboardInterrupt:
        print("interrupted; relay and workers stopped", file=sys.stderr)
        return 130
