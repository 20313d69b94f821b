"""`python -m bench doctor [--megabytes M] [--runs N]`: does `irohpy doctor connect` measure
what `make bench` measures?

For the same sizes, datagram size (irohpy's default 1200) and a relay server of ours on
loopback, it runs `make bench`'s irohpy bulk (core part: direct over loopback; relay-path
part: every packet through the relay) and `irohpy doctor accept`/`connect`, alternating
N times, and prints each path's median MB/s from both with their ratio. Raw numbers go to
bench/results/doctor-latest.json. Run it as root via `make bench BENCH_ARGS=doctor` so it
stays in a loopback-only namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.relay import RelayProcess

RESULTS = Path(__file__).resolve().parent / "results" / "doctor-latest.json"
DATAGRAM_SIZE = 1200
STEP_TIMEOUT = 600.0


async def _bench_once(args: argparse.Namespace, tmp: Path, out: dict[str, list[float]]) -> None:
    """One `make bench` run of both paths, appended to ``out``."""
    result = tmp / "bench.json"
    cmd = [sys.executable, "-m", "bench", "--parts", "core,relay-path", "--impl", "irohpy",
           "--megabytes", str(args.megabytes), "--relay-megabytes", str(args.megabytes), "--runs", "1",
           "--connects", "2", "--echo-samples", "20", "--echo-warmups", "2", "--streams", "2",
           "--datagram-size", str(DATAGRAM_SIZE), "--json", str(result)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
    await asyncio.wait_for(proc.wait(), STEP_TIMEOUT)
    results = json.loads(result.read_text())["results"]
    out["direct"] += [b["mb_s"] for b in results["core"]["irohpy"]["raw"]["bulk"]]
    out["relay"] += [b["mb_s"] for b in results["relay_path"]["raw"]["bulk"]]


async def _doctor_once(args: argparse.Namespace, ticket: str, out: dict[str, list[float]]) -> None:
    """One `irohpy doctor connect` (relay phase, then direct), appended to ``out``."""
    connect = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", "doctor", "connect", ticket, "--size", str(args.megabytes * 1_000_000),
        "--pings", "5", "--ipv6-addr", "none", "--json", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    stdout, _ = await asyncio.wait_for(connect.communicate(), STEP_TIMEOUT)
    for phase in json.loads(stdout)["phases"]:
        if phase["mb_per_s"] is not None and phase["path"] == phase["name"]:
            out[phase["name"]].append(phase["mb_per_s"])


async def _numbers(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Bench and doctor runs interleaved, so a machine that gets busier mid-way weighs on both alike."""
    bench: dict[str, list[float]] = {"direct": [], "relay": []}
    doctor: dict[str, list[float]] = {"direct": [], "relay": []}
    relay = RelayProcess(nofile=4096)
    await relay.start()
    accept = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", "doctor", "accept", "--relay", relay.url, "--ipv6-addr", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert accept.stdout is not None
        ticket = (await asyncio.wait_for(accept.stdout.readline(), 60)).decode().strip()
        for run in range(args.runs):
            print(f"== run {run + 1}/{args.runs}: make bench, then doctor connect", file=sys.stderr, flush=True)
            await _bench_once(args, tmp, bench)
            await _doctor_once(args, ticket, doctor)
    finally:
        accept.terminate()
        await accept.wait()
        await relay.stop()
        relay.close()
    return bench, doctor


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


async def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-doctor-") as tmp:
        bench, doctor = await _numbers(args, Path(tmp))
    rows: list[dict[str, Any]] = []
    print(f"\ndoctor connect vs make bench, {args.megabytes} MB, {args.runs} run(s), datagram size {DATAGRAM_SIZE}; "
          "medians (MB/s = 10^6 bytes/s); 'paired' is the median of each run's doctor/bench ratio, "
          "which load that drifts between runs moves least\n")
    print(f"{'path':8} {'make bench':>11} {'doctor':>8} {'ratio':>6} {'paired':>7}")
    for path in ("direct", "relay"):
        b, d = _median(bench[path]), _median(doctor[path])
        ratio = d / b if b and d else None
        paired = (_median([x / y for x, y in zip(doctor[path], bench[path], strict=True)])
                  if len(doctor[path]) == len(bench[path]) else None)
        rows.append({"path": path, "bench_mb_s": bench[path], "doctor_mb_s": doctor[path], "ratio": ratio,
                     "paired_ratio": paired})
        print(f"{path:8} {b or 0:11.2f} {d or 0:8.2f} {ratio or 0:6.2f} {paired or 0:7.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"megabytes": args.megabytes, "runs": args.runs, "rows": rows}, indent=1) + "\n")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench doctor", description=__doc__)
    parser.add_argument("--megabytes", type=int, default=20, help="bytes per run, in MB (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each (default 5)")
    return asyncio.run(_run(parser.parse_args(argv)))
