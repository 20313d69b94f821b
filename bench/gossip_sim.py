"""Gossip swarm simulation: delivery, hops, duplicates and view degrees under 20% churn.

Runs the sans-IO state machine in the deterministic in-memory network
(``irohpy.protocols.gossip.sim``), so numbers are reproducible for a seed and measure the
protocol logic, not sockets. ``python -m bench gossip-sim [--sizes 100 500 1000] [--seed N]``.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from irohpy.protocols.gossip.sim import Simulation

BROADCASTS_PER_PHASE = 5
CHURN_CYCLES = 2
SETTLE = 2.0


@dataclass
class Result:
    nodes: int
    messages: int
    delivery: float
    min_delivery: float
    hop_p50: int
    hop_p99: int
    dups_per_msg: float
    dups_median: float
    degrees: dict[int, int]
    seconds: float


def _pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(n: int, seed: int) -> Result:
    """Bootstrap ``n`` nodes, then broadcast before churn, during it, right after and settled."""
    started = time.monotonic()
    sim = Simulation(n, seed=seed)
    sim.bootstrap()
    mids: list[bytes] = []

    def burst(tag: str) -> None:
        batch = [sim.broadcast(sim.rng.choice(sim.joined()), f"{tag} {i}".encode()) for i in range(BROADCASTS_PER_PHASE)]
        sim.run_until(sim.now + SETTLE)
        mids.extend(batch)

    burst("stable")
    ratios: list[float] = []
    for cycle in range(CHURN_CYCLES):
        gone = sim.churn_out(0.2)
        burst(f"down {cycle}")
        sim.rejoin(gone)
        burst(f"rejoin {cycle}")
        burst(f"settled {cycle}")
        ratios += [sim.delivery_ratio(m) for m in mids[len(ratios) :]]
        sim.left.clear()
    hops = [h for m in mids for h in sim.deliveries[m].hops.values()]
    dups = [sim.deliveries[m].receipts - len(sim.deliveries[m].hops) for m in mids]
    degrees = collections.Counter(len(s.active) for s in sim.nodes.values())
    return Result(
        nodes=n,
        messages=len(mids),
        delivery=statistics.fmean(ratios),
        min_delivery=min(ratios),
        hop_p50=_pct(hops, 0.5),
        hop_p99=_pct(hops, 0.99),
        dups_per_msg=statistics.fmean(dups),
        dups_median=statistics.median(dups),
        degrees=dict(sorted(degrees.items())),
        seconds=time.monotonic() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gossip-sim", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print("| nodes | msgs | delivery (mean / min) | hops p50 / p99 | dups/msg mean / median | active-view degree: count | wall s |")
    print("|---:|---:|---|---|---:|---|---:|")
    for n in args.sizes:
        r = run(n, args.seed)
        deg = ", ".join(f"{d}: {c}" for d, c in r.degrees.items())
        print(
            f"| {r.nodes} | {r.messages} | {r.delivery:.4f} / {r.min_delivery:.4f} | {r.hop_p50} / {r.hop_p99}"
            f" | {r.dups_per_msg:.1f} / {r.dups_median:.0f} | {deg} | {r.seconds:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
