"""`irohpy send` → `irohpy receive` of one big file, end to end: the real CLI, two processes.

Each run makes a pseudo-random file in a temporary directory (on disk, beside the system's
temporary files), starts `irohpy send FILE` and waits for its ticket (the import: copy,
fsync, outboard), then times `irohpy receive TICKET` from its spawn to its exit: connect,
fetch with bao verification, the store's writes and fsyncs, and the export of the file. The
received file's BLAKE3 must equal the source's. CPU is user + system seconds of each process
(all threads) over the receiver's run; the sender is stopped with Ctrl-C afterwards and must
exit 130. Loopback only: no relay, no address lookup, IPv4 127.0.0.1.

`python -m bench sendme [--size-mib 1024] [--runs 3]`, or as the opt-in `sendme` part of
`make bench` (`BENCH_ARGS="--parts sendme"`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from bench.relay import proc_cpu_seconds

MIB = 1 << 20
LOCAL = ["--relay", "disabled", "--ipv4-addr", "127.0.0.1:0", "--ipv6-addr", "none"]
TICKET_TIMEOUT = 600.0
"""The sender's import of the file (copy, fsync, hash) must print a ticket within this."""
MIN_RATE = 5e6
"""Bytes per second below which a receive counts as hung (its timeout is size / this)."""
PIECE = 64 * MIB


def make_file(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` pseudo-random bytes to ``path``; their BLAKE3 hash."""
    rng = np.random.default_rng(seed)
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with path.open("wb") as f:
        for offset in range(0, size, PIECE):
            piece = rng.bytes(min(PIECE, size - offset))
            hasher.update(piece)
            f.write(piece)
    return hasher.digest()


def file_hash(path: Path) -> bytes:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            hasher.update(piece)
    return hasher.digest()


def _children_cpu() -> float:
    """CPU of the waited-for children of this process (the receiver once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _irohpy(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _ticket(sender: asyncio.subprocess.Process) -> str:
    assert sender.stdout is not None
    async with asyncio.timeout(TICKET_TIMEOUT):
        while line := (await sender.stdout.readline()).decode():
            if line.startswith("irohpy receive "):
                return line.split()[-1]
    raise RuntimeError(f"irohpy send exited without a ticket: {await _stderr(sender)}")


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode(errors="replace")[-2000:]


async def _stop(proc: asyncio.subprocess.Process) -> int:
    """Ctrl-C, as a user stops `irohpy send`; killed if it does not exit within a minute."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(60):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def run_once(src: Path, digest: bytes, work: Path) -> dict[str, Any]:
    """One send/receive of ``src`` under ``work``; the figures of the receive."""
    size = src.stat().st_size
    out = work / "out"
    started = time.perf_counter()
    sender = await _irohpy("send", str(src), "--no-progress", *LOCAL, cwd=work)
    try:
        ticket = await _ticket(sender)
        import_s = time.perf_counter() - started
        sender_cpu, children_cpu = proc_cpu_seconds(sender.pid), _children_cpu()
        t0 = time.perf_counter()
        receiver = await _irohpy("receive", ticket, "--out", str(out), "--json", *LOCAL, cwd=work)
        try:
            async with asyncio.timeout(60 + size / MIN_RATE):
                stdout, stderr = await receiver.communicate()
        except TimeoutError:
            receiver.kill()
            await receiver.wait()
            raise RuntimeError(f"irohpy receive took over {60 + size / MIN_RATE:.0f} s") from None
        wall = time.perf_counter() - t0
        receiver_cpu = _children_cpu() - children_cpu
        sender_cpu = proc_cpu_seconds(sender.pid) - sender_cpu
    finally:
        code = await _stop(sender)
    if receiver.returncode != 0:
        raise RuntimeError(f"irohpy receive exited {receiver.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    if code != 130:
        raise RuntimeError(f"irohpy send exited {code} on Ctrl-C, not 130: {await _stderr(sender)}")
    done = json.loads(stdout.decode().splitlines()[-1])
    received = out / src.name
    if done.get("event") != "done" or done["bytes"] != size or received.stat().st_size != size:
        raise RuntimeError(f"irohpy receive did not report the whole file: {done}")
    if file_hash(received) != digest:
        raise RuntimeError("the received file's BLAKE3 differs from the source's")
    shutil.rmtree(out)
    return {"bytes": size, "seconds": wall, "mb_s": size / wall / 1e6, "receiver_cpu_s": receiver_cpu,
            "sender_cpu_s": sender_cpu, "import_s": import_s, "receiver_elapsed_s": done["elapsed"]}


async def measure(size_mib: int, runs: int, *, quiet: bool = False) -> dict[str, Any]:
    """``runs`` send/receives of one ``size_mib`` MiB file; the file is deleted afterwards."""
    size = size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="irohpy-bench-sendme-") as tmp:
        work = Path(tmp)
        free = shutil.disk_usage(work).free
        if free < 4 * size + (1 << 30):  # source, the sender's store, the receiver's store, the export
            raise RuntimeError(f"{work} has {free / MIB:.0f} MiB free; a {size_mib} MiB run needs {4 * size_mib + 1024}")
        src = work / "payload.bin"
        digest = await asyncio.to_thread(make_file, src, size, size_mib)
        samples = []
        for i in range(runs):
            if not quiet:
                print(f"== sendme: run {i + 1}/{runs}, {size_mib} MiB ...", file=sys.stderr, flush=True)
            samples.append(await run_once(src, digest, work))
            if not quiet:
                s = samples[-1]
                print(f"== sendme: {s['mb_s']:.1f} MB/s, {s['seconds']:.1f} s, CPU receiver "
                      f"{s['receiver_cpu_s']:.1f} s, sender {s['sender_cpu_s']:.1f} s", file=sys.stderr, flush=True)
    return {"size_mib": size_mib, "runs": samples,
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg": os.getloadavg()}


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Medians over the runs."""
    keys = ("mb_s", "seconds", "receiver_cpu_s", "sender_cpu_s", "import_s")
    return {k: statistics.median(r[k] for r in result["runs"]) for k in keys}


def table(result: dict[str, Any]) -> str:
    def cell(key: str, digits: int) -> str:
        values = [r[key] for r in result["runs"]]
        med = statistics.median(values)
        if len(values) == 1:
            return f"{med:.{digits}f}"
        return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"

    return "\n".join([
        f"| `irohpy send` → `irohpy receive`, {result['size_mib']} MiB, {len(result['runs'])} run{'s' * (len(result['runs']) != 1)} | value |",
        "|---|---:|",
        f"| throughput, receiver's start to its verified exit, MB/s | {cell('mb_s', 1)} |",
        f"| receiver wall time, s | {cell('seconds', 1)} |",
        f"| receiver CPU, s | {cell('receiver_cpu_s', 1)} |",
        f"| sender CPU during the receive, s | {cell('sender_cpu_s', 1)} |",
        f"| sender's import before the ticket (copy, fsync, outboard), s | {cell('import_s', 1)} |",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sendme", description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="send/receives of the file (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.runs < 1:
        parser.error("--size-mib and --runs must be at least 1")
    print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    result = asyncio.run(measure(args.size_mib, args.runs))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
