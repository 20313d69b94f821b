"""bench/results/latest.md from one run's results: tables with medians, ranges and ratios.

Kept apart from the orchestrator so the Markdown can be rebuilt from latest.json
(`python -m bench.report`) after editing bench/analysis.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import sendme

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
LATEST = Path(__file__).resolve().parent / "results" / "latest.json"
IMPL_ORDER = ("irohpy", "irohpy-pure", "irohpy-aioquic", "iroh-stock", "iroh-patched", "aioquic", "tcp-tls")
RATIO_REFS = ("irohpy-pure", "irohpy-aioquic", "iroh-stock", "iroh-patched", "aioquic", "tcp-tls")

Samples = list[float]
Getter = Callable[[dict[str, Any]], Samples]


def _bulk(key: str) -> Getter:
    return lambda raw: [b["mb_s"] for b in raw.get(key, [])]


def _cpu_per(key: str, megabytes: float) -> Callable[[dict[str, Any], dict[str, Any]], Samples]:
    """Sender + receiver CPU seconds scaled to ``megabytes`` of payload."""

    def get(raw: dict[str, Any], params: dict[str, Any]) -> Samples:
        return [(b["cpu_sender_s"] + b["cpu_receiver_s"]) * megabytes / params["megabytes"]
                for b in raw.get(key, [])]

    return get


# (label, unit, higher is better, samples from raw results and params)
CORE_METRICS: list[tuple[str, str, bool, Callable[[dict[str, Any], dict[str, Any]], Samples]]] = [
    ("bulk, 1 stream", "MB/s", True, lambda raw, p: _bulk("bulk")(raw)),
    ("bulk, parallel streams", "MB/s", True, lambda raw, p: _bulk("bulk_streams")(raw)),
    ("CPU per GB, 1 stream (both ends)", "s", False, _cpu_per("bulk", 1000)),
    ("CPU per 200 MB, 1 stream (both ends)", "s", False, _cpu_per("bulk", 200)),
    ("CPU per GB, parallel streams (both ends)", "s", False, _cpu_per("bulk_streams", 1000)),
    ("connect (handshake)", "ms", False, lambda raw, p: raw.get("connect_ms", [])),
    ("connect + first reply, fresh", "ms", False, lambda raw, p: raw.get("first_reply_ms", [])),
    ("connect + first reply, 0-RTT", "ms", False, lambda raw, p: raw.get("first_reply_0rtt_ms", [])),
    ("echo RTT, 1 byte", "µs", False, lambda raw, p: raw.get("echo_us", [])),
]


def _cell(samples: Samples, digits: int) -> str:
    if not samples:
        return "n/a"
    med = statistics.median(samples)
    if len(samples) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(samples):.{digits}f}–{max(samples):.{digits}f})"


def _digits(unit: str, value: float) -> int:
    if unit == "µs" or value >= 100:
        return 0
    return 1 if value >= 10 else 2


def _ratio(ours: Samples, theirs: Samples, higher_better: bool) -> str:
    """irohpy ÷ reference, with ✓ where irohpy is better."""
    if not ours or not theirs:
        return "–"
    a, b = statistics.median(ours), statistics.median(theirs)
    if b == 0:
        return "–"
    r = a / b
    text = f"{r:.0f}×" if r >= 10 else f"{r:.1f}×" if r >= 0.95 else f"{r:.2f}×"
    better = r > 1 if higher_better else r < 1
    return f"{text} ✓" if better else text


def _ok(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and entry.get("status") == "ok"


def core_table(core: dict[str, dict[str, Any]]) -> str:
    impls = [n for n in IMPL_ORDER if n in core]
    refs = [n for n in RATIO_REFS if n in core and n != "irohpy"]
    head = "| metric | " + " | ".join(impls) + " | " + " | ".join(f"irohpy ÷ {r}" for r in refs) + " |"
    lines = [head, "|---|" + "---:|" * (len(impls) + len(refs))]
    for label, unit, higher, get in CORE_METRICS:
        samples = {n: (get(core[n]["raw"], core[n]["params"]) if _ok(core[n]) else []) for n in impls}
        if not any(samples.values()):
            continue
        ref_value = next((statistics.median(v) for v in samples.values() if v), 0.0)
        digits = _digits(unit, ref_value)
        cells = [_cell(samples[n], digits) if _ok(core[n]) else core[n].get("status", "?")[:40]
                 for n in impls]
        ratios = [_ratio(samples.get("irohpy", []), samples[r], higher) for r in refs]
        arrow = "higher is better" if higher else "lower is better"
        lines.append(f"| {label}, {unit} ({arrow}) | " + " | ".join(cells) + " | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


def idle_figures(entry: dict[str, Any]) -> dict[str, float] | None:
    """KiB per connection on each side, from the RSS growth while connections were opened."""
    if not _ok(entry):
        return None
    idle = entry["raw"]["idle"]
    n = idle["connected"]
    if not n:
        return None
    server = idle.get("server_rss_kib", [])
    client = idle["client_rss_kib"]
    return {
        "connected": n,
        "target": idle["target"],
        "alive": idle["alive_after_hold"],
        "failed": idle["failed"],
        "setup_s": idle["setup_s"],
        "server_kib": (server[1] - server[0]) / n if len(server) > 1 else float("nan"),
        "client_kib": (client[1] - client[0]) / n,
        "server_rss_mib": server[1] / 1024 if len(server) > 1 else float("nan"),
        "hold_cpu_pct": 100 * idle.get("server_hold_cpu_s", float("nan")) / (idle["hold_s"] * 0.95),
    }


def idle_table(idle: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| impl | connections held (alive after hold / opened / asked; failed dials) | open time s "
        "| server KiB per conn | server MiB per 1,000 conns | client KiB per conn "
        "| server RSS MiB holding | server CPU % while idle |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [n for n in IMPL_ORDER if n in idle]:
        f = idle_figures(idle[name])
        if f is None:
            lines.append(f"| {name} | {idle[name].get('status', '?')[:60]} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {f['alive']:.0f} / {f['connected']:.0f} / {f['target']:.0f}; {f['failed']:.0f} "
            f"| {f['setup_s']:.1f} "
            f"| {f['server_kib']:.1f} | {f['server_kib'] * 1000 / 1024:.1f} | {f['client_kib']:.1f} "
            f"| {f['server_rss_mib']:.0f} | {f['hold_cpu_pct']:.1f} |"
        )
    return "\n".join(lines)


def relay_path_table(entry: dict[str, Any]) -> str:
    if not _ok(entry):
        return f"relay path: {entry.get('status', '?')}: {entry.get('error', '')[:300]}"
    raw = entry["raw"]
    paths = sorted({str(b.get("path")) for b in raw["bulk"]})
    cpu = [b["cpu_sender_s"] + b["cpu_receiver_s"] for b in raw["bulk"]]
    return "\n".join([
        "| irohpy through our relay | value |",
        "|---|---:|",
        f"| bulk, 1 stream, {entry['params']['megabytes']} MB, MB/s | {_cell(_bulk('bulk')(raw), 1)} |",
        f"| echo RTT, µs | {_cell(raw['echo_us'], 0)} |",
        f"| endpoint CPU per run (both ends), s | {_cell(cpu, 2)} |",
        f"| relay server CPU for the whole part, s | {entry.get('relay_cpu_s', float('nan')):.1f} |",
        f"| path the connection used | {', '.join(paths)} |",
    ])


def sendme_section(entry: dict[str, Any]) -> str:
    if not _ok(entry):
        return f"sendme: {entry.get('status', '?')}: {entry.get('error', '')[:300]}"
    load = ", ".join(f"{x:.2f}" for x in entry["loadavg"])
    return "\n".join([sendme.table(entry), "",
                      f"Measured {entry['when']} (load average after: {load}); bench/sendme.py says what "
                      "is timed. Both processes' CPU is user + system, all threads."])


def _idle(key: str) -> Callable[[dict[str, Any]], float | None]:
    def get(r: dict[str, Any]) -> float | None:
        figures = idle_figures(r["idle"])
        return None if figures is None else figures[key]

    return get


Target = tuple[str, str, Callable[[dict[str, Any]], float | None], Callable[[float], bool]]


def _core(get: Callable[[dict[str, Any], dict[str, Any]], Samples]) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: _median(get(r["core"]["raw"], r["core"]["params"]))


def _sendme_mb_s(r: dict[str, Any]) -> float | None:
    """The sendme part's median MB/s, when it moved the 1 GiB the target names."""
    entry = r.get("sendme")
    if entry is None or not _ok(entry) or entry["size_mib"] != 1024:
        return None
    return _median([run["mb_s"] for run in entry["runs"]])


def _relay_bulk(r: dict[str, Any]) -> float | None:
    entry = r.get("relay_path")
    return _median(_bulk("bulk")(entry["raw"])) if _ok(entry) else None


_IDLE_CPU = "server CPU while idle, 10,000 connections (at the default 5 s keep-alive: `--idle-keep-alive 5`)"

# (issue, whose figures, targets): issue 13's are for plain Python, issue 19's for the compiled build.
TARGETS: list[tuple[str, str, list[Target]]] = [
    ("issue 13, pure Python", "irohpy-pure", [
        ("bulk ≥ 45 MB/s, one stream", "MB/s", _core(lambda raw, p: _bulk("bulk")(raw)), lambda v: v >= 45),
        ("CPU ≤ 5 s per 200 MB, both ends", "s", _core(_cpu_per("bulk", 200)), lambda v: v <= 5),
        ("connect ≤ 4 ms", "ms", _core(lambda raw, p: raw.get("connect_ms", [])), lambda v: v <= 4),
        ("echo RTT ≤ 350 µs", "µs", _core(lambda raw, p: raw.get("echo_us", [])), lambda v: v <= 350),
        ("≥ 10,000 idle connections in one process", "alive",
         lambda r: float(r["idle"]["raw"]["idle"]["alive_after_hold"]), lambda v: v >= 10_000),
        ("≤ 60 KiB per idle connection (server)", "KiB", _idle("server_kib"), lambda v: v <= 60),
        (f"{_IDLE_CPU} ≤ 5%", "%", _idle("hold_cpu_pct"), lambda v: v <= 5),
    ]),
    ("issue 19, compiled", "irohpy", [
        ("bulk ≥ 100 MB/s, one stream", "MB/s", _core(lambda raw, p: _bulk("bulk")(raw)), lambda v: v >= 100),
        ("CPU ≤ 2 s per 200 MB, both ends", "s", _core(_cpu_per("bulk", 200)), lambda v: v <= 2),
        ("bulk ≥ 100 MB/s, parallel streams", "MB/s", _core(lambda raw, p: _bulk("bulk_streams")(raw)),
         lambda v: v >= 100),
        ("connect ≤ 2.5 ms", "ms", _core(lambda raw, p: raw.get("connect_ms", [])), lambda v: v <= 2.5),
        ("echo RTT ≤ 250 µs", "µs", _core(lambda raw, p: raw.get("echo_us", [])), lambda v: v <= 250),
        ("through our relay ≥ 60 MB/s", "MB/s", _relay_bulk, lambda v: v >= 60),
        (f"{_IDLE_CPU} ≤ 2%", "%", _idle("hold_cpu_pct"), lambda v: v <= 2),
        ("`irohpy send`/`receive` of 1 GiB end to end, verified, ≥ 80 MB/s (`--parts sendme`)", "MB/s",
         _sendme_mb_s, lambda v: v >= 80),
    ]),
]


def _median(samples: Samples) -> float | None:
    return statistics.median(samples) if samples else None


def targets_table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for title, impl, targets in TARGETS:
        mine = {"core": results.get("core", {}).get(impl), "idle": results.get("idle", {}).get(impl),
                "relay_path": results.get("relay_path"), "sendme": results.get("sendme")}
        lines += ["", f"| target ({title}) | {impl} | met |", "|---|---:|---|"]
        for label, unit, get, met in targets:
            try:
                value = get(mine)
            except (KeyError, TypeError):
                value = None
            if value is None:
                lines.append(f"| {label} | not measured | |")
                continue
            lines.append(f"| {label} | {value:.{_digits(unit, value)}f} {unit} | {'yes' if met(value) else 'no'} |")
    return "\n".join(lines[1:])


def _args_text(args: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list) else f'"{v}"' if " " in str(v) else str(v)

    return " ".join(f"--{k.replace('_', '-')} {value(v)}" for k, v in args.items() if k != "json")


def markdown(meta: dict[str, Any], results: dict[str, Any]) -> str:
    args = meta["args"]
    load = ", ".join(f"{x:.2f}" for x in meta["loadavg_before"])
    load_after = ", ".join(f"{x:.2f}" for x in meta["loadavg_after"])
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    out = [
        "# irohpy benchmarks",
        "",
        f"Generated by `make bench` on {meta['when']}: {meta['platform']}, {meta['cpus']} CPUs, "
        f"Python {meta['python']}; {versions}. Loopback, two processes per implementation "
        f"({'loopback-only network namespace' if meta['loopback_only'] else 'NOT loopback-only'}). "
        f"Load average before {load}, after {load_after}; total {meta['elapsed_s']:.0f} s. "
        f"Arguments: `{_args_text(args)}`.",
        "",
        f"QUIC datagram size: **{args['datagram_size']} bytes** for irohpy and raw aioquic, configured "
        "(`Endpoint.bind(max_datagram_size=...)`; irohpy's engine starts at 1200 and finds larger sizes by "
        "PMTU discovery; irohpy-aioquic, the last commit before that engine, has none). The official iroh package sizes its datagrams itself (quinn's defaults, not "
        "configured here). Encryption, congestion control (irohpy: CUBIC, aioquic: Reno) and flow control "
        "are on in every QUIC implementation.",
        "",
        "Each cell: median (min–max) over the samples: bulk runs (`--runs`; iroh-stock `--stock-runs`), "
        "`--connects` connections, `--echo-samples` echoes. Ratios are irohpy's median ÷ the reference's, "
        "measured in this run; ✓ marks where irohpy is better. CPU is user + system seconds of both "
        "processes (every thread).",
        "",
    ]
    core = results.get("core", {})
    if core:
        out += ["## Throughput, CPU, latency", "", core_table(core), ""]
        out += ["- iroh-stock: the `iroh` package as shipped; iroh-patched: with its per-byte uniffi "
                "write loop replaced by one memmove (bench/impl_iroh.py), i.e. about Rust iroh itself.",
                "- parallel streams: the same bytes split over `--streams` streams of one connection "
                "(tcp-tls: one TLS connection per stream).",
                "- connect + first reply: dial, open a stream, send 1 byte, receive its echo. "
                "0-RTT reuses a session ticket so the request rides in the first flight; "
                "only irohpy exposes 0-RTT here.", ""]
    idle = results.get("idle", {})
    attempts = max((e["raw"]["idle"].get("attempts", 1) for e in idle.values() if _ok(e)), default=1)
    if idle:
        out += ["## Idle connections and memory", "", idle_table(idle), "",
                f"Connections are opened {args['idle_concurrency']} at a time by one client process "
                f"{f'(a failed dial is retried, {attempts} attempts in all) ' if attempts > 1 else ''}"
                f"and held for {args['idle_hold']:g} s; irohpy sends a keep-alive PING every "
                f"{args.get('idle_keep_alive') or 5:g} s"
                f"{' (configured with `Endpoint.bind(keep_alive=...)`; the default is 5 s)' if args.get('idle_keep_alive') else ''}. "
                "Memory per connection is the growth of RSS while they were opened, divided by their "
                "number; the server's CPU is measured over the hold.", ""]
    if "relay_path" in results:
        out += ["## Relay path", "", relay_path_table(results["relay_path"]), ""]
    relay = results.get("relay")
    if relay:
        out += ["## Relay server: forwarding throughput and idle clients", ""]
        if relay.get("table"):
            out += [f"`python -m bench relay {args.get('relay_args', '')}` (status {relay['status']}):", "",
                    relay["table"], ""]
        else:
            out += [f"failed: {relay.get('error', '?')}", ""]
    if "sendme" in results:
        out += ["## send / receive", "", sendme_section(results["sendme"]), ""]
    out += ["## Targets", "", targets_table(results), ""]
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(out)


def main() -> int:
    """Rebuild latest.md from latest.json (or the JSON given as the only argument)."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else LATEST
    data = json.loads(path.read_text())
    results = data.pop("results")
    path.with_suffix(".md").write_text(markdown(data, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
