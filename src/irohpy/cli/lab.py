"""``irohpy lab``: run the NAT lab's scenarios (Linux, root) and print what happened.

``irohpy lab list`` names the scenarios; ``irohpy lab run [SCENARIO ...] [--json]``
runs them (all by default), each in a fresh lab of network namespaces that is removed
afterwards, and prints a table (or one JSON object per scenario). With ``--peers`` it runs
each scenario once per peer pair (irohpy or Rust iroh on each side, ``irohpy.lab.pairs``),
``--runs`` times over, and prints medians with bytes counted on the routers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from irohpy.cli.common import positive_int
from irohpy.errors import LabError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("lab", help="run the NAT lab's scenarios (Linux, root)",
                            description="Real NATs from network namespaces and nftables; see "
                                        "docs/concepts/nat-traversal.md.")
    actions = parser.add_subparsers(dest="lab_command", required=True, metavar="SUBCOMMAND")
    listing = actions.add_parser("list", help="list the scenarios")
    listing.set_defaults(func=list_cmd)
    run = actions.add_parser("run", help="run scenarios (all by default) and print a table")
    run.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names (see `irohpy lab list`)")
    run.add_argument("--json", action="store_true", help="print one JSON object per scenario instead of a table")
    run.add_argument("--megabytes", type=float, default=4.0, help="data transferred per scenario (default 4)")
    run.add_argument("--peers", metavar="PAIRS",
                     help="run each scenario with these DIALER-LISTENER pairs, comma-separated, or all: rust-rust, "
                          "rust-irohpy, irohpy-rust, irohpy-irohpy (Rust: the official iroh package); dials by "
                          "ticket (id and relay URL), counts bytes on the routers (default scenarios: "
                          "cone_cone fullcone_symmetric symmetric_symmetric udp_blocked loss_5pct wan_50ms "
                          "network_change)")
    run.add_argument("--runs", type=positive_int, default=1,
                     help="with --peers: runs of every scenario and pair, interleaved (default 1)")
    run.set_defaults(func=run_cmd)


def list_cmd(args: argparse.Namespace) -> int:
    from irohpy.lab.scenarios import SCENARIOS  # noqa: PLC0415 - keep `irohpy --help` fast

    width = max(len(name) for name in SCENARIOS)
    for name, scenario in SCENARIOS.items():
        print(f"{name:<{width}}  {scenario.description}")
    return 0


async def run_cmd(args: argparse.Namespace) -> int:
    from irohpy.lab import scenarios, topology  # noqa: PLC0415

    if reason := topology.unavailable_reason():
        raise LabError(reason)
    if args.peers is not None:
        return await _run_pairs(args)
    names = args.scenarios or list(scenarios.SCENARIOS)
    unknown = [n for n in names if n not in scenarios.SCENARIOS]
    if unknown:
        raise LabError(f"unknown scenario(s) {', '.join(unknown)}; see `irohpy lab list`")
    results = []
    for i, name in enumerate(names, 1):
        start = time.perf_counter()
        result = await scenarios.run_scenario(scenarios.SCENARIOS[name], transfer_bytes=int(args.megabytes * 1e6))
        results.append(result)
        print(f"[{i}/{len(names)}] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
    if not args.json:
        print(scenarios.format_table([scenarios.row(r) for r in results]))
    return 0


async def _run_pairs(args: argparse.Namespace) -> int:
    from irohpy.lab import pairs, rust_peer, scenarios  # noqa: PLC0415

    chosen = pairs.parse_pairs(args.peers)
    names = args.scenarios or list(pairs.MIXED)
    if unknown := [n for n in names if n not in scenarios.SCENARIOS]:
        raise LabError(f"unknown scenario(s) {', '.join(unknown)}; see `irohpy lab list`")
    if any(p.needs_rust for p in chosen) and (reason := rust_peer.unavailable_reason()):
        raise LabError(reason)
    results = []
    total = args.runs * len(names) * len(chosen)
    for run in range(args.runs):
        for name in names:
            for pair in chosen:
                start = time.perf_counter()
                result = await pairs.run_pair(scenarios.SCENARIOS[name], pair,
                                              transfer_bytes=int(args.megabytes * 1e6))
                results.append(result)
                print(f"[{len(results)}/{total}] run {run + 1} {name} {pair}: {time.perf_counter() - start:.1f} s",
                      file=sys.stderr, flush=True)
                if args.json:
                    print(json.dumps(result.to_json()), flush=True)
    if not args.json:
        print(pairs.table(results))
    return 0
