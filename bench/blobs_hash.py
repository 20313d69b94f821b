"""Bao hashing throughput: outboard computation and verification of a full-range response.

Both hash every byte with the numpy BLAKE3 in ``irohpy.protocols.blobs.blake3_np``;
the ``blake3`` package's plain hash of the same data is shown for scale.
``python -m bench.blobs_hash [--sizes-mib 1 16 256] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import time

import blake3

from irohpy.protocols.blobs.bao import ResponseDecoder, compute_outboard, encode_ranges
from irohpy.protocols.blobs.ranges import ChunkRanges

MIB = 1 << 20


def _best(repeat: int, fn) -> tuple[float, float]:
    """Fastest of `repeat` runs: (wall seconds, CPU seconds of this process, all threads)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def run(size_mib: int, repeat: int) -> dict[str, tuple[float, float]]:
    data = os.urandom(size_mib * MIB)
    outboard = compute_outboard(data)
    stream = len(data).to_bytes(8, "little") + b"".join(
        encode_ranges(lambda o, n: data[o : o + n], outboard, ChunkRanges.all())
    )

    def verify() -> None:
        dec = ResponseDecoder(outboard.root, ChunkRanges.all())
        for i in range(0, len(stream), 64 * 1024):
            dec.feed(stream[i : i + 64 * 1024])
        dec.finish()

    mb = size_mib * MIB / 1e6
    results = {
        "outboard": _best(repeat, lambda: compute_outboard(data)),
        "verify": _best(repeat, verify),
        "blake3": _best(repeat, lambda: blake3.blake3(data).digest()),
    }
    return {name: (mb / wall, mb / cpu) for name, (wall, cpu) in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; MB/s wall (MB per CPU second)")
    print("| size | outboard | verify | blake3 package, root only |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes_mib:
        r = run(size, args.repeat if size < 256 else 1)
        cells = " | ".join(f"{wall:.0f} ({cpu:.0f})" for wall, cpu in r.values())
        print(f"| {size} MiB | {cells} |", flush=True)


if __name__ == "__main__":
    main()
