"""``irohpy lab``: run the NAT lab's scenarios (Linux, root) and print what happened.

``irohpy lab list`` names the scenarios; ``irohpy lab run [SCENARIO ...] [--json]``
runs them (all by default), each in a fresh lab of network namespaces that is removed
afterwards, and prints a table (or one JSON object per scenario).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

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
