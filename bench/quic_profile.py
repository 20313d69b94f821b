"""Where the engine's CPU goes, split by function group: ``python -m bench.quic_profile``.

Runs the engine-to-engine echo of ``bench.quic_engine`` over real UDP (``--megabytes`` each
way) under cProfile and sums each function's own time into the groups of the QUIC engine:
packet protection, frame parse/encode, recovery/ACK, streams, congestion/pacer, connection
core, endpoint core and the asyncio driver. Time spent in C built-ins (AES-GCM, ``len``,
``bytes.join`` ...) is charged to the groups of their Python callers, in proportion to the
calls each made; time blocked in epoll is left out. cProfile adds a fixed cost per Python
call, so the split overstates the groups with many small functions; it answers "which layer",
not "how many µs".
``--memory`` profiles the in-memory bulk transfer of ``bench.quic_conn`` instead (no
sockets, no asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
from collections import defaultdict

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("packet protection", ("irohpy/quic/packet.py", "irohpy/quic/crypto.py")),
    ("frame parse/encode", ("irohpy/quic/frames.py", "irohpy/quic/buffer.py", "irohpy/quic/varint.py")),
    ("recovery/ACK", ("irohpy/quic/recovery.py", "irohpy/quic/ack.py", "irohpy/quic/rangeset.py")),
    ("streams", ("irohpy/quic/streams.py",)),
    ("congestion/pacer", ("irohpy/quic/congestion.py", "irohpy/quic/pmtud.py")),
    ("connection core", ("irohpy/quic/connection.py",)),
    ("endpoint core", ("irohpy/quic/endpoint.py", "irohpy/quic/cids.py", "irohpy/quic/path.py")),
    ("driver", ("irohpy/endpoint/", "irohpy/socket/", "asyncio/", "selectors.py", "bench/")),
)
#: Built-ins whose time is the kernel's, not a caller's group.
SYSCALLS = ("recvfrom", "recvmsg", "sendmsg", "sendto")
#: Waiting for the socket: wall time, not CPU, so left out.
WAITS = ("poll", "select")


def _group(filename: str) -> str:
    for name, markers in GROUPS:
        if any(m in filename for m in markers):
            return name
    return "other"


def split(stats: pstats.Stats) -> dict[str, float]:
    """Own seconds per group; built-ins go to their callers' groups, syscalls to ``syscalls``."""
    raw = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, tottime, _ct, callers) in raw.items():
        if filename != "~":
            out[_group(filename)] += tottime
            continue
        if any(w in name for w in WAITS):
            continue
        if any(s in name for s in SYSCALLS):
            out["syscalls"] += tottime
            continue
        calls = sum(c[1] for c in callers.values()) or 1
        for (cfile, _cl, _cn), c in callers.items():
            out[_group(cfile)] += tottime * c[1] / calls
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--top", type=int, default=0, help="also print the N functions with most own time")
    args = parser.parse_args()
    profile = cProfile.Profile()
    if args.memory:
        from bench.quic_conn import run_irohpy

        profile.enable()
        run_irohpy(args.megabytes * 1_000_000, 1452)
        profile.disable()
    else:
        from bench.quic_engine import engine_to_engine

        profile.enable()
        asyncio.run(engine_to_engine(args.megabytes << 20))
        profile.disable()
    stats = pstats.Stats(profile)
    groups = split(stats)
    total = sum(groups.values())
    print(f"{'group':<20} {'share':>6}")
    for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{name:<20} {seconds / total * 100:5.1f}%")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
