"""NAT lab benchmark: `python -m bench nat [--runs N] [SCENARIO ...]` (Linux, root).

Runs every lab scenario (irohpy.lab.scenarios) N times, each in a fresh lab of network
namespaces with our relay and DNS server, and prints one row per scenario: how many runs
connected and ended direct, and the medians of time to direct, bytes over the relay, ping
RTT and the recovery time after a network change; then the lab's setup and teardown
times. Raw results go to bench/results/nat-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

from irohpy.lab import scenarios, topology

RESULTS = Path(__file__).resolve().parent / "results" / "nat-latest.json"


async def _run(args: argparse.Namespace) -> int:
    names = args.scenarios or list(scenarios.SCENARIOS)
    results: dict[str, list[scenarios.ScenarioResult]] = {name: [] for name in names}
    for run in range(args.runs):
        for name in names:
            result = await scenarios.run_scenario(scenarios.SCENARIOS[name],
                                                  transfer_bytes=int(args.megabytes * 1e6))
            results[name].append(result)
            print(f"run {run + 1}/{args.runs} {name}: {'  '.join(scenarios.row(result)[1:])}", file=sys.stderr,
                  flush=True)
    print(f"\nNAT lab, {args.runs} run(s) per scenario, {args.megabytes:g} MB each; medians over runs "
          "(flaps: direct→relay switches summed over runs)\n")
    print(scenarios.format_table([scenarios.median_row(n, rs) for n, rs in results.items()]))
    every = [r for rs in results.values() for r in rs]
    setup = statistics.median(r.setup_s for r in every)
    teardown = statistics.median(r.teardown_s for r in every)
    print(f"\nlab setup (namespaces, routers, relay and DNS server up) median {setup:.2f} s, "
          f"teardown median {teardown:.2f} s; netem {'used' if topology.netem_available() else 'missing: userspace delay'}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({n: [r.to_json() for r in rs] for n, rs in results.items()}, indent=1))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench nat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"scenarios to run (default: all of {', '.join(scenarios.SCENARIOS)})")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--megabytes", type=float, default=4.0, help="transfer per run (default 4)")
    args = parser.parse_args(argv)
    if reason := topology.unavailable_reason():
        parser.error(reason)
    if unknown := [n for n in args.scenarios if n not in scenarios.SCENARIOS]:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    return asyncio.run(_run(args))
