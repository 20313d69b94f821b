"""Where irohpy's bulk path spends its time: `python -m bench profile`.

Runs one irohpy bulk transfer between the usual two worker processes and samples
both with py-spy (``pip install py-spy``; it attaches by PID, so the code profiled
is exactly the code benchmarked, unmodified). Writes bench/results/profile.md:
the functions with the most own time on the sender (client) and the receiver
(server), and the same by source file. Sampling wall-clock stacks of a process
that is busy almost all the time approximates its CPU profile; time blocked in
epoll shows up as ``select``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench import common
from bench.worker import Worker

RESULTS = Path(__file__).resolve().parent / "results" / "profile.md"
PYSPY_STOP_TIMEOUT = 30.0
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _short(path: str) -> str:
    """A source path without the interpreter's or the venv's prefix."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarise(raw: str, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """py-spy raw (collapsed) stacks → sample count, own time by function, by file.

    Stacks inside the import machinery (worker start-up) are left out.
    """
    by_fn: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if "<frozen importlib._bootstrap>" in stack:
            continue  # start-up imports, not the data path
        n = int(count)
        leaf = stack.rsplit(";", 1)[-1]
        m = _FRAME.match(leaf)
        fn, file = (m.group("fn"), _short(m.group("file"))) if m else (leaf, "?")
        by_fn[f"{fn} ({file})"] += n
        by_file[file] += n
        total += n
    return total, by_fn.most_common(top), by_file.most_common(top)


def _table(title: str, total: int, rows: list[tuple[str, int]]) -> str:
    lines = [f"| {title} | share of samples |", "|---|---:|"]
    lines += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in rows]
    return "\n".join(lines)


async def _spy(pyspy: str, pid: int, rate: int, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        pyspy, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
        "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        async with asyncio.timeout(PYSPY_STOP_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _run(args: argparse.Namespace, pyspy: str) -> str:
    opts = common.Options(datagram_size=args.datagram_size)
    params = common.Params(parts=("bulk",), megabytes=args.megabytes, runs=1)
    server = await Worker.spawn("irohpy server", "--worker", "server", "--impl", "irohpy",
                                "--datagram-size", str(opts.datagram_size))
    client: Worker | None = None
    spies: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="irohpy-profile-") as tmp:
        outs = {"receiver (server)": Path(tmp, "server.txt"), "sender (client)": Path(tmp, "client.txt")}
        try:
            info = await server.message("ready", common.STARTUP_TIMEOUT)
            job = json.dumps({"info": info, "params": dataclasses.asdict(params),
                              "opts": dataclasses.asdict(opts)})
            client = await Worker.spawn("irohpy client", "--worker", "client", "--impl", "irohpy",
                                        "--job", job)
            spies.append(await _spy(pyspy, server.proc.pid, args.rate, outs["receiver (server)"]))
            spies.append(await _spy(pyspy, client.proc.pid, args.rate, outs["sender (client)"]))
            result = await client.message("result", params.client_timeout())
        finally:
            for spy in spies:
                await _stop(spy)
            for worker in (client, server):
                if worker is not None:
                    await worker.stop()
                    worker.close()
        run = result["bulk"][0]
        parts = [
            f"irohpy bulk, one stream, {args.megabytes} MB, datagrams of {args.datagram_size} bytes, "
            f"sampled at {args.rate} Hz by py-spy (non-blocking): {run['mb_s']:.1f} MB/s, CPU "
            f"sender {run['cpu_sender_s']:.2f} s + receiver {run['cpu_receiver_s']:.2f} s "
            "(sampling costs some throughput).",
        ]
        for role, path in outs.items():
            if not path.exists():
                parts.append(f"{role}: py-spy wrote no samples")
                continue
            total, fns, files = summarise(path.read_text(), args.top)
            if not total:
                continue
            parts += [f"### {role}: {total} samples",
                      _table("function (own time)", total, fns),
                      _table("file (own time)", total, files)]
        return "\n\n".join(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=100, help="bulk size in MB (default 100)")
    parser.add_argument("--datagram-size", type=int, default=1452, help="QUIC datagram size (default 1452)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    parser.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"Markdown output (default {RESULTS})")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    text = asyncio.run(_run(args, pyspy))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Profile of irohpy's bulk path\n\n{text}\n")
    print(text)
    return 0
