"""Orchestrator: `python -m bench` (`make bench`), the whole suite in one run.

For each implementation a server process and a client process (`python -m bench
--worker server|client`) exchange JSON lines with this orchestrator; separate
processes keep each side's CPU and memory accounting honest and stop one
implementation's threads or patches from touching another's. Parts (`--parts`):

- core: connect (fresh, and a first request with and without 0-RTT), 1-byte echo
  RTT, bulk on one stream and on `--streams` parallel streams, CPU per GB;
- idle: memory per idle connection, `--idle-connections` held by irohpy
  (`--idle-ref-connections` by the references) for `--idle-hold` seconds;
- relay-path: irohpy echo and bulk with every packet through our relay server;
- relay: the relay server's own forwarding throughput and idle-client capacity
  (a short run of `python -m bench relay`, see bench/relay.py);
- sendme (opt-in, a few minutes): `irohpy send` → `irohpy receive` of a 1 GiB file, end to
  end and verified (bench/sendme.py).

Every figure is the median of its samples with min and max; ratios divide
irohpy's median by each reference's, all measured in this run. Results go to
bench/results/latest.json (raw samples) and latest.md (tables + Analysis, the
latter from bench/analysis.md).

Other suites: `python -m bench relay`, `soak`, `nat`, `gossip`, `gossip-sim`, `blobs`, `sendme`,
`docs`, `doctor`, `profile` and `tls` (see bench/relay.py, soak.py, nat.py, gossip_net.py,
gossip_sim.py, blobs_transfer.py, sendme.py, docs_sync.py, doctor.py, profile.py, tls_handshake.py).
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
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import common, report, sendme
from bench.baseline import BaselineUnavailable, baseline_src
from bench.relay import RelayProcess, proc_cpu_seconds, raise_nofile
from bench.worker import Worker, WorkerFailed

BASELINE = "irohpy-aioquic"
"""irohpy at the last commit before its own QUIC engine (bench/baseline.py)."""
PURE = "irohpy-pure"
"""Today's irohpy with its compiled engine switched off (IROHPY_PURE=1, docs/build.md)."""

IMPLS = {
    "irohpy": "bench.impl_irohpy",
    PURE: "bench.impl_irohpy",
    BASELINE: "bench.impl_irohpy",
    "iroh-stock": "bench.impl_iroh",
    "iroh-patched": "bench.impl_iroh",
    "aioquic": "bench.impl_aioquic",
    "tcp-tls": "bench.impl_tcptls",
}
OFFICIAL_IROH = ("iroh-stock", "iroh-patched")
IROHPY = ("irohpy", PURE, BASELINE)
PARTS = ("core", "idle", "relay-path", "relay", "sendme")
DEFAULT_PARTS = ("core", "idle", "relay-path", "relay")
"""What runs without --parts: sendme moves gigabytes through the disk and takes minutes."""
RESULTS = Path(__file__).resolve().parent / "results"
BUSY_LOAD = 0.5
"""1-minute load average above which the machine is not idle enough for quiet numbers."""
NOFILE = 65536
"""Open-file limit workers ask for: idle TCP connections need one socket each."""
RELAY_SUITE_TIMEOUT = 600.0


# ---------------------------------------------------------------- worker side


def _load(name: str) -> ModuleType:
    if name in OFFICIAL_IROH:
        common.require_loopback_only("the official iroh package")
    module = importlib.import_module(IMPLS[name])
    if name == BASELINE and not importlib.import_module("irohpy").__file__.startswith(str(baseline_src())):
        raise RuntimeError(f"{BASELINE} worker imported today's irohpy, not the baseline's")
    if name == "iroh-patched":
        module.patch_fast_writes()
    return module


async def _server_worker(name: str, opts: common.Options) -> None:
    module = _load(name)
    raise_nofile(NOFILE)
    await common.until_stdin_closes(module.serve(lambda info: common.emit("ready", info), opts))


async def _client_worker(name: str, job: dict[str, Any]) -> None:
    module = _load(name)
    raise_nofile(NOFILE)
    params = common.Params(**{**job["params"], "parts": tuple(job["params"]["parts"])})
    opts = common.Options(**job["opts"])
    result = await common.until_stdin_closes(module.run_client(job["info"], params, opts))
    if result is not None:
        common.emit("result", result)


# ---------------------------------------------------------------- orchestrator


def _opts_args(opts: common.Options) -> list[str]:
    args = ["--datagram-size", str(opts.datagram_size)]
    if opts.keep_alive is not None:
        args += ["--keep-alive", str(opts.keep_alive)]
    return args + (["--relay-url", opts.relay_url] if opts.relay_url else [])


async def _measure(name: str, params: common.Params, opts: common.Options) -> dict[str, Any]:
    """Run one implementation's server and client; the client's raw results.

    With the idle part, the server's RSS and CPU are read from /proc when the client holds
    every connection, and when the hold is over.
    """
    env = None
    if name == BASELINE:
        env = {**os.environ, "PYTHONPATH": str(baseline_src())}
    elif name == PURE:
        env = {**os.environ, "IROHPY_PURE": "1"}
    server = await Worker.spawn(f"{name} server", "--worker", "server", "--impl", name,
                                *_opts_args(opts), env=env)
    client: Worker | None = None
    try:
        info = await server.message("ready", common.STARTUP_TIMEOUT)
        server_rss = [common.rss_kib(server.proc.pid)]
        job = json.dumps({"info": info, "params": dataclasses.asdict(params),
                          "opts": dataclasses.asdict(opts)})
        client = await Worker.spawn(
            f"{name} client", "--worker", "client", "--impl", name, "--job", job, env=env
        )
        server_cpu: list[float] = []
        if "idle" in params.parts:
            await client.message("holding", params.client_timeout())
            server_rss.append(common.rss_kib(server.proc.pid))
            server_cpu.append(proc_cpu_seconds(server.proc.pid))
            await asyncio.sleep(params.idle_hold * 0.95)
            server_rss.append(common.rss_kib(server.proc.pid))
            server_cpu.append(proc_cpu_seconds(server.proc.pid))
        result: dict[str, Any] = await client.message("result", params.client_timeout())
        if "idle" in result:
            result["idle"]["server_rss_kib"] = server_rss
            if len(server_cpu) == 2:
                result["idle"]["server_hold_cpu_s"] = server_cpu[1] - server_cpu[0]
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


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("irohpy", "aioquic", "iroh", "cryptography"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


async def _run_part(label: str, name: str, params: common.Params,
                    opts: common.Options) -> dict[str, Any]:
    """One measurement with progress on stderr; failures are recorded, not raised."""
    print(f"== {label}: {name} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        raw = await _measure(name, params, opts)
    except WorkerFailed as exc:
        print(f"== {label}: {name} FAILED: {exc}", file=sys.stderr)
        return {"status": "failed", "error": str(exc)}
    except BaselineUnavailable as exc:
        print(f"== {label}: {name} skipped: {exc}", file=sys.stderr)
        return {"status": f"skipped: {exc}"}
    print(f"== {label}: {name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return {"status": "ok", "params": dataclasses.asdict(params), "opts": dataclasses.asdict(opts),
            "raw": raw}


async def _relay_path(args: argparse.Namespace) -> dict[str, Any]:
    """irohpy with every packet relayed through a fresh relay server process."""
    relay = RelayProcess(nofile=4096)
    try:
        await relay.start()
        params = common.Params(parts=("echo", "bulk"), megabytes=args.relay_megabytes,
                               runs=args.runs, echo_samples=args.echo_samples,
                               echo_warmups=args.echo_warmups)
        opts = common.Options(datagram_size=args.datagram_size, relay_url=relay.url)
        cpu0 = relay.cpu_seconds()
        result = await _run_part("relay-path", "irohpy", params, opts)
        result["relay_cpu_s"] = relay.cpu_seconds() - cpu0
        await relay.stop()
        return result
    except (RuntimeError, OSError) as exc:
        return {"status": "failed", "error": str(exc)}
    finally:
        relay.close()


async def _relay_suite(args: argparse.Namespace) -> dict[str, Any]:
    """The relay server's own benchmark, short: `python -m bench relay` in a child process."""
    out = args.json.with_name("relay.json")
    cmd = [sys.executable, "-m", "bench", "relay", *args.relay_args.split(), "--json", str(out)]
    print(f"== relay server: {' '.join(cmd[3:])} ...", file=sys.stderr, flush=True)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(RELAY_SUITE_TIMEOUT):
            code = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"status": "failed", "error": f"no result within {RELAY_SUITE_TIMEOUT:.0f} s"}
    if not out.exists():
        return {"status": "failed", "error": f"exit status {code}, no {out.name}"}
    data = json.loads(out.read_text())
    return {"status": "ok" if code == 0 else f"exit status {code}", "table": data.get("table", ""),
            "args": data.get("args"), "throughput": data.get("throughput"), "idle": data.get("idle")}


async def _sendme(args: argparse.Namespace) -> dict[str, Any]:
    """`irohpy send` → `irohpy receive` of one file, in this process's namespace (bench/sendme.py)."""
    try:
        return {"status": "ok", **await sendme.measure(args.sendme_mib, args.sendme_runs)}
    except (RuntimeError, OSError) as exc:
        print(f"== sendme FAILED: {exc}", file=sys.stderr)
        return {"status": "failed", "error": str(exc)}


async def _orchestrate(args: argparse.Namespace) -> int:
    names: list[str] = args.impl
    foreign = common.foreign_interfaces()
    load_before = os.getloadavg()
    if load_before[0] > BUSY_LOAD:
        print(f"warning: load average {load_before[0]:.2f} before starting; other processes "
              "share the CPUs and will add noise", file=sys.stderr)
    t_start = time.monotonic()
    opts = common.Options(datagram_size=args.datagram_size)
    runnable = []
    results: dict[str, dict[str, Any]] = {"core": {}, "idle": {}}
    for name in names:
        if name in OFFICIAL_IROH and foreign:
            reason = (f"skipped: interfaces besides lo ({', '.join(foreign)}); "
                      "run as root via `make bench` (loopback-only namespace)")
            print(f"== {name}: refusing to run the official iroh package; {reason}", file=sys.stderr)
            for part in ("core", "idle"):
                results[part][name] = {"status": reason}
            continue
        runnable.append(name)
    if "core" in args.parts:
        for name in runnable:
            runs = args.stock_runs if name == "iroh-stock" else args.runs
            params = common.Params(
                megabytes=args.megabytes, runs=runs, streams=args.streams, connects=args.connects,
                echo_samples=args.echo_samples, echo_warmups=args.echo_warmups,
            )
            results["core"][name] = await _run_part("core", name, params, opts)
    if "idle" in args.parts:
        for name in runnable:
            count = args.idle_connections if name in IROHPY else args.idle_ref_connections
            params = common.Params(parts=("idle",), idle_connections=count,
                                   idle_concurrency=args.idle_concurrency, idle_hold=args.idle_hold)
            idle_opts = dataclasses.replace(opts, keep_alive=args.idle_keep_alive)
            results["idle"][name] = await _run_part("idle", name, params, idle_opts)
    if "relay-path" in args.parts:
        results["relay_path"] = await _relay_path(args)
    if "relay" in args.parts:
        results["relay"] = await _relay_suite(args)
    if "sendme" in args.parts:
        results["sendme"] = await _sendme(args)
    elapsed = time.monotonic() - t_start

    meta = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "loopback_only": not foreign,
        "versions": _versions(),
        "elapsed_s": elapsed,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                 if k not in ("worker", "job", "relay_url", "keep_alive")},
    }
    text = report.markdown(meta, results)
    print(f"\n{text}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(text)
    print(f"results: {args.json.with_suffix('.md')} (raw samples: {args.json.name}); "
          f"total {elapsed:.0f} s", file=sys.stderr)
    statuses = [r.get("status", "") for part in results.values() for r in
                (part.values() if "status" not in part else [part])]
    return 0 if all(s == "ok" or s.startswith("skipped") for s in statuses) else 1


def _part_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from " + ", ".join(PARTS))
    return names


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
    if sys.argv[1:2] == ["soak"]:
        from bench import soak

        return soak.main(sys.argv[2:])
    if sys.argv[1:2] == ["nat"]:
        from bench import nat

        return nat.main(sys.argv[2:])
    if sys.argv[1:2] in (["gossip"], ["gossip-sim"]):
        from bench import gossip_net, gossip_sim

        return (gossip_net if sys.argv[1] == "gossip" else gossip_sim).main(sys.argv[2:])
    if sys.argv[1:2] == ["profile"]:
        from bench import profile

        return profile.main(sys.argv[2:])
    if sys.argv[1:2] == ["doctor"]:
        from bench import doctor

        return doctor.main(sys.argv[2:])
    if sys.argv[1:2] == ["blobs"]:
        from bench import blobs_transfer

        return blobs_transfer.main(sys.argv[2:])
    if sys.argv[1:2] == ["sendme"]:
        return sendme.main(sys.argv[2:])
    if sys.argv[1:2] == ["tls"]:
        from bench import tls_handshake

        return tls_handshake.main(sys.argv[2:])
    if sys.argv[1:2] == ["docs"]:
        from bench import docs_sync

        return docs_sync.main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Loopback benchmark suite, two processes per implementation: connect, "
                    "0-RTT, echo RTT, bulk on one and on parallel streams, CPU, idle memory, "
                    "the relay path and the relay server.",
        epilog="`python -m bench relay` runs only the relay server benchmarks, `profile` profiles "
               "irohpy's bulk path, `nat` the NAT lab scenarios (root), `gossip` and `gossip-sim` "
               "the gossip ones (see their --help).",
    )
    parser.add_argument("--parts", type=_part_list, default=list(DEFAULT_PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)} (default: all but sendme)")
    parser.add_argument("--impl", type=_impl_list, default=list(IMPLS),
                        help=f"comma-separated subset of {','.join(IMPLS)} (default: all)")
    parser.add_argument("--megabytes", type=_positive, default=100,
                        help="bulk size in MB (10^6 bytes; default 100)")
    parser.add_argument("--runs", type=_positive, default=3, help="bulk runs (default 3)")
    parser.add_argument("--stock-runs", type=_positive, default=1,
                        help="bulk runs for iroh-stock, which manages only a few MB/s (default 1)")
    parser.add_argument("--streams", type=_positive, default=8,
                        help="parallel streams in the multi-stream bulk run (default 8)")
    parser.add_argument("--connects", type=_positive, default=20,
                        help="sequential connections timed, per connect metric (default 20)")
    parser.add_argument("--echo-samples", type=_positive, default=200,
                        help="1-byte echoes timed (default 200)")
    parser.add_argument("--echo-warmups", type=_non_negative, default=20,
                        help="untimed echoes first (default 20)")
    parser.add_argument("--datagram-size", type=_positive, default=1452,
                        help="QUIC datagram size for irohpy and raw aioquic (default 1452; "
                             "irohpy's own default is the always-safe 1200)")
    parser.add_argument("--idle-connections", type=_positive, default=10_000,
                        help="idle connections irohpy holds in one process (default 10000)")
    parser.add_argument("--idle-ref-connections", type=_positive, default=1000,
                        help="idle connections each reference holds (default 1000)")
    parser.add_argument("--idle-concurrency", type=_positive, default=32,
                        help="handshakes in flight while opening idle connections (default 32)")
    parser.add_argument("--idle-hold", type=float, default=10.0,
                        help="seconds the idle connections are held (default 10, > keep-alive)")
    parser.add_argument("--idle-keep-alive", type=float, default=25.0,
                        help="irohpy's keep-alive interval in the idle part (default 25 s, under "
                             "the 30 s idle timeout; the endpoint's own default is 5 s)")
    parser.add_argument("--relay-megabytes", type=_positive, default=20,
                        help="bulk size over the relay path (default 20)")
    parser.add_argument("--relay-args", default="--pairs 2,10 --seconds 3 --idle-target 2000 "
                                                "--idle-hold 5",
                        help="arguments for the relay server part (default: a short run)")
    parser.add_argument("--sendme-mib", type=_positive, default=1024,
                        help="file size of the sendme part in MiB (default 1024)")
    parser.add_argument("--sendme-runs", type=_positive, default=3,
                        help="send/receives in the sendme part (default 3)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json",
                        help="raw results; the Markdown report goes next to it as .md "
                             "(default bench/results/latest.json)")
    parser.add_argument("--worker", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--relay-url", help=argparse.SUPPRESS)
    parser.add_argument("--keep-alive", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        if len(args.impl) != 1:
            parser.error("a worker runs exactly one --impl")
        if args.worker == "server":
            opts = common.Options(datagram_size=args.datagram_size, relay_url=args.relay_url,
                                  keep_alive=args.keep_alive)
            asyncio.run(_server_worker(args.impl[0], opts))
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
