"""Orchestrator: for each implementation, a server process and a client process.

`python -m bench` spawns, per implementation, `python -m bench --worker server`
then `python -m bench --worker client`, collects their JSON lines, stops them,
prints a Markdown table with ratios and writes every raw sample to JSON.
Separate processes keep each side's CPU accounting honest and stop one
implementation's threads or patches from touching another's.

`python -m bench relay` is a separate suite, the relay server's forwarding
throughput and idle capacity: see bench/relay.py. `python -m bench blobs` measures
blob transfers from one and several providers: see bench/blobs_transfer.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import common
from bench.worker import Worker, WorkerFailed

IMPLS = {
    "irohpy": "bench.impl_irohpy",
    "iroh-stock": "bench.impl_iroh",
    "iroh-patched": "bench.impl_iroh",
    "aioquic": "bench.impl_aioquic",
    "tcp-tls": "bench.impl_tcptls",
}
OFFICIAL_IROH = ("iroh-stock", "iroh-patched")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
BUSY_LOAD = 0.5
"""1-minute load average above which the machine is not idle enough for quiet numbers."""


# ---------------------------------------------------------------- worker side


def _load(name: str) -> ModuleType:
    if name in OFFICIAL_IROH:
        common.require_loopback_only("the official iroh package")
    module = importlib.import_module(IMPLS[name])
    if name == "iroh-patched":
        module.patch_fast_writes()
    return module


async def _server_worker(name: str) -> None:
    module = _load(name)
    await common.until_stdin_closes(module.serve(lambda info: common.emit("ready", info)))


async def _client_worker(name: str, job: dict[str, Any]) -> None:
    module = _load(name)
    params = common.Params(**job["params"])
    result = await common.until_stdin_closes(module.run_client(job["info"], params))
    if result is not None:
        common.emit("result", result)


# ---------------------------------------------------------------- orchestrator


async def _measure(name: str, params: common.Params) -> dict[str, Any]:
    """Run one implementation's server and client; the client's raw results."""
    server = await Worker.spawn(f"{name} server", "--worker", "server", "--impl", name)
    client: Worker | None = None
    try:
        info = await server.message("ready", common.STARTUP_TIMEOUT)
        job = json.dumps({"info": info, "params": dataclasses.asdict(params)})
        client = await Worker.spawn(
            f"{name} client", "--worker", "client", "--impl", name, "--job", job
        )
        result: dict[str, Any] = await client.message("result", params.client_timeout())
        return result
    except WorkerFailed as exc:
        spawned = [w for w in (client, server) if w is not None]
        for w in spawned:
            await w.stop()
        details = "\n".join(f"--- {w.label} stderr:\n{w.stderr_tail()}" for w in spawned)
        raise WorkerFailed(f"{exc}\n{details}") from None
    finally:
        for worker in (client, server):
            if worker is not None:
                await worker.stop()
                worker.close()


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians of the raw samples; each bulk figure is the median over runs."""
    bulk = raw["bulk"]
    return {
        "connect_ms": common.median(raw["connect_ms"]),
        "echo_us": common.median(raw["echo_us"]),
        "bulk_mb_s": common.median([b["mb_s"] for b in bulk]),
        "bulk_runs_mb_s": [b["mb_s"] for b in bulk],
        "cpu_sender_s": common.median([b["cpu_sender_s"] for b in bulk]),
        "cpu_receiver_s": common.median([b["cpu_receiver_s"] for b in bulk]),
        "udp_rcvbuf_errors": [b["udp_errors"].get("RcvbufErrors") for b in bulk],
    }


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _ratio(value: float) -> str:
    if value >= 10:
        return f"{value:.0f}×"
    if value >= 0.95:
        return f"{value:.1f}×"
    if value >= 0.1:
        return f"{value:.2f}×"
    return f"{value:.2g}×"


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| impl | connect ms | echo µs | bulk MB/s median (runs) | CPU s sender+receiver |",
        "|---|---:|---:|---|---:|",
    ]
    for name, res in results.items():
        if "summary" not in res:
            lines.append(f"| {name} | {res['status']} | | | |")
            continue
        s = res["summary"]
        runs = ", ".join(_fmt(r, 1) for r in s["bulk_runs_mb_s"])
        cpu = s["cpu_sender_s"] + s["cpu_receiver_s"]
        lines.append(
            f"| {name} | {_fmt(s['connect_ms'], 2)} | {_fmt(s['echo_us'], 0)} "
            f"| {_fmt(s['bulk_mb_s'], 1)} ({runs}) "
            f"| {_fmt(cpu, 2)} ({_fmt(s['cpu_sender_s'], 2)}+{_fmt(s['cpu_receiver_s'], 2)}) |"
        )
    return "\n".join(lines)


def _ratios(results: dict[str, dict[str, Any]]) -> str:
    """irohpy's medians divided by each other implementation's, one line per metric."""
    base = results.get("irohpy", {}).get("summary")
    others = {n: r["summary"] for n, r in results.items() if n != "irohpy" and "summary" in r}
    if base is None or not others:
        return "(no ratios: irohpy and at least one other implementation must both succeed)"

    def cpu(s: dict[str, Any]) -> float:
        return float(s["cpu_sender_s"] + s["cpu_receiver_s"])

    metrics: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
        ("connect time", lambda s: float(s["connect_ms"]), "lower is better"),
        ("echo RTT", lambda s: float(s["echo_us"]), "lower is better"),
        ("bulk throughput", lambda s: float(s["bulk_mb_s"]), "higher is better"),
        ("bulk CPU (sender+receiver)", cpu, "lower is better"),
    ]
    lines = []
    for label, get, better in metrics:
        parts = [f"{_ratio(get(base) / get(s))} {n}" for n, s in others.items() if get(s) > 0]
        lines.append(f"- irohpy {label} = {', '.join(parts)} ({better})")
    return "\n".join(lines)


def _drops(results: dict[str, dict[str, Any]]) -> str:
    """UDP receive-buffer drops per bulk run: lost packets cost QUIC retransmits and variance."""
    parts = [
        f"{name} {res['summary']['udp_rcvbuf_errors']}"
        for name, res in results.items()
        if "summary" in res and name != "tcp-tls"
    ]
    return "UDP receive-buffer drops per bulk run: " + ("; ".join(parts) or "n/a")


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("irohpy", "aioquic", "iroh", "cryptography"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


async def _orchestrate(args: argparse.Namespace) -> int:
    names: list[str] = args.impl
    results: dict[str, dict[str, Any]] = {}
    foreign = common.foreign_interfaces()
    load_before = os.getloadavg()
    if load_before[0] > BUSY_LOAD:
        print(f"warning: load average {load_before[0]:.2f} before starting; other processes "
              "share the CPUs and will add noise", file=sys.stderr)
    for name in names:
        runs = args.stock_runs if name == "iroh-stock" else args.runs
        params = common.Params(
            megabytes=args.megabytes, runs=runs, connects=args.connects,
            echo_samples=args.echo_samples, echo_warmups=args.echo_warmups,
        )
        if name in OFFICIAL_IROH and foreign:
            reason = (f"skipped: interfaces besides lo ({', '.join(foreign)}); "
                      "run as root via `make bench` (loopback-only namespace)")
            print(f"== {name}: refusing to run the official iroh package; {reason}",
                  file=sys.stderr)
            results[name] = {"status": reason}
            continue
        print(f"== {name}: {params.runs} bulk run(s) of {params.megabytes} MB ...",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            raw = await _measure(name, params)
        except WorkerFailed as exc:
            print(f"== {name}: FAILED: {exc}", file=sys.stderr)
            results[name] = {"status": "failed (see JSON)", "error": str(exc)}
            continue
        results[name] = {"status": "ok", "params": dataclasses.asdict(params),
                         "raw": raw, "summary": _summary(raw)}
        print(f"== {name}: done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    table = _table(results)
    ratios = _ratios(results)
    drops = _drops(results)
    print(f"\n{table}\n\nRatios (irohpy ÷ other):\n{ratios}\n\n{drops}\n", flush=True)
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "loopback_only": not foreign,
        "versions": _versions(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                 if k not in ("worker", "job")},
        "table": table,
        "ratios": ratios,
        "drops": drops,
        "impls": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"raw samples: {args.json}", file=sys.stderr)
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped")
                    for r in results.values()) else 1


def _impl_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in IMPLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown implementation(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(IMPLS))
    return names


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


def main() -> int:
    if sys.argv[1:2] == ["relay"]:
        from bench import relay

        return relay.main(sys.argv[2:])
    if sys.argv[1:2] == ["blobs"]:
        from bench import blobs_transfer

        return blobs_transfer.main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Loopback benchmark, two processes per implementation: connect, "
                    "1-byte echo RTT, one-way bulk throughput and CPU.",
        epilog="`python -m bench relay` runs the relay server benchmarks instead "
               "(see `python -m bench relay --help`).",
    )
    parser.add_argument("--impl", type=_impl_list, default=list(IMPLS),
                        help=f"comma-separated subset of {','.join(IMPLS)} (default: all)")
    parser.add_argument("--megabytes", type=_positive, default=200,
                        help="bulk size in MB (10^6 bytes; default 200)")
    parser.add_argument("--runs", type=_positive, default=3, help="bulk runs (default 3)")
    parser.add_argument("--stock-runs", type=_positive, default=1,
                        help="bulk runs for iroh-stock, which manages only a few MB/s (default 1)")
    parser.add_argument("--connects", type=_positive, default=20,
                        help="sequential connections timed (default 20)")
    parser.add_argument("--echo-samples", type=_positive, default=200,
                        help="1-byte echoes timed (default 200)")
    parser.add_argument("--echo-warmups", type=_non_negative, default=20,
                        help="untimed echoes first (default 20)")
    parser.add_argument("--json", type=Path, default=RESULTS,
                        help=f"where to write raw samples (default {RESULTS})")
    parser.add_argument("--worker", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        if len(args.impl) != 1:
            parser.error("a worker runs exactly one --impl")
        if args.worker == "server":
            asyncio.run(_server_worker(args.impl[0]))
        else:
            asyncio.run(_client_worker(args.impl[0], json.loads(args.job)))
        return 0
    try:
        return asyncio.run(_orchestrate(args))
    except KeyboardInterrupt:
        print("interrupted; workers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
