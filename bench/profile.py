"""Where irohpy's bulk path spends its CPU, by layer: `python -m bench profile`.

Runs irohpy bulk transfers (one stream, ``--megabytes`` each, ``--runs`` of them on one
connection) between the usual two worker processes and samples both with py-spy. py-spy is a
bench-only tool, not a dependency of irohpy: ``pip install py-spy`` into the venv. It attaches
by PID, so the code profiled is exactly the code benchmarked, unmodified. ``--pure`` runs the
workers with ``IROHPY_PURE=1`` (plain Python, what issue 13's targets are about); the report
records the build the workers ran (``python -m irohpy --version`` in their environment).

The report (bench/results/profile.md for the pure build, profile-compiled.md for the compiled
one) splits each side's samples of its event-loop thread into groups: the QUIC engine
(``irohpy/quic``), irohpy's own layers (every other irohpy module: endpoint, socket, base ...),
the runtime (asyncio, selectors, asyncio's C module, the cycle collector), other (the
benchmark's own code), and idle. A sample goes to the innermost frame that belongs to one of
the groups; frames of anything else (stdlib helpers such as ``enum``, C built-ins,
cryptography's AEAD) count for the group whose code called them. With native stacks the
socket system calls (``sendmsg``, ``recvfrom`` ...) are a group of their own, the cycle
collector counts for the runtime, and cryptography's frames for the engine (native unwinding
often stops inside them, short of the compiled engine's frames, and the engine's packet
protection is their only caller on this path); without native stacks the system calls count
for the socket layer that made them, and a collection for whatever allocation set it off.
Idle is the event loop waiting in epoll: wall time, not CPU. Shares are given of all samples
(wall time) and of busy samples (all but idle, which approximates CPU); issue 13's bound,
irohpy's layers at most 25% of CPU, is read on busy samples. Then the
functions and files with the most own time, as before: the innermost Python or compiled
function of each busy sample, or the native frame that gave it its group.

py-spy's flags, and why:

- ``--idle``: py-spy drops by default the samples of a thread the kernel reports as not
  running at that moment (``/proc/<tid>/stat``); we keep every sample, so that "of all" is a
  share of wall time, and mark idle ourselves by the innermost Python frame, the selector's
  epoll wait, which cannot disagree with the stack it came with. A thread that is runnable but
  waiting for a core (the machine is shared) counts as busy where it was preempted.
- ``--threads``: stacks name their thread; only the main (event-loop) thread is split, and
  the busy samples of any other thread are counted beside it.
- ``--nonblocking`` (pure build): read the stacks without stopping the process, so sampling
  costs the worker almost nothing; a stack read mid-update is occasionally inconsistent,
  which is noise in shares of thousands of samples.
- ``--native`` (compiled build; ``--native`` forces it for the pure one): mypyc's functions
  push no Python frames, so without native stacks their time lands on the Python frame that
  called them (asyncio's ``Handle._run``). py-spy unwinds native stacks only by pausing the
  process for each sample, so ``--nonblocking`` is off then and throughput under profiling is
  lower; compiled functions are told apart by their symbols (``CPyDef_<module>___...``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.worker import Worker

RESULTS = Path(__file__).resolve().parent / "results"
MANIFEST = Path(__file__).resolve().parent.parent / "src" / "irohpy" / "_native.json"
PYSPY_STOP_TIMEOUT = 30.0
VERSION_TIMEOUT = 30.0
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::\d+)?\)$")
_MYPYC = re.compile(r"^CPy(?:Def|Py)_(?P<rest>.+)$")

ENGINE = "QUIC engine (irohpy/quic)"
LAYERS = "irohpy's layers (endpoint, socket, base, ...)"
RUNTIME = "runtime (asyncio, selectors, garbage collection)"
SYSCALLS = "socket system calls (native stacks only)"
OTHER = "other (the benchmark's own code)"
IDLE = "idle (epoll wait)"
GROUPS = (ENGINE, LAYERS, SYSCALLS, RUNTIME, OTHER)
RUNTIME_FILES = ("selectors.py", "_asynciomodule.c", "selectmodule.c")
SOCKET_CALLS = frozenset({"sendmsg", "sendmmsg", "sendto", "recvmsg", "recvmmsg", "recvfrom"})


def _short(path: str) -> str:
    """A source path without the interpreter's or the venv's prefix."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _group_of(file: str) -> str | None:
    """The group of a source file; None for code that counts for its caller's group."""
    if file.startswith("irohpy/quic/"):
        return ENGINE
    if file.startswith("irohpy/"):
        return LAYERS
    if file.startswith("asyncio/") or file in RUNTIME_FILES:
        return RUNTIME
    if file.startswith("bench/"):
        return OTHER
    return None


def _native_group(fn: str, file: str) -> str | None:
    """The group of a native frame: the kernel's socket calls, the cycle collector, and
    cryptography's, whose only caller on the bulk path is the engine's packet protection (and
    through whose frames native unwinding often stops short of the engine's)."""
    if file.startswith("libc.so") and fn in SOCKET_CALLS:
        return SYSCALLS
    if file.startswith("cryptography/"):
        return ENGINE
    if fn.startswith("gc_collect"):
        return RUNTIME
    return None


class Symbols:
    """mypyc's C symbols → (module source file, Class.method), from the build's manifest.

    mypyc names a compiled function ``CPyDef_<m>___<Class>___<name>`` (``CPyPy_`` for its
    Python-callable wrapper), where ``<m>`` is the shortest dotted suffix of the module's
    name that no other compiled module shares, dots as ``___``.
    """

    def __init__(self, modules: list[str]) -> None:
        self._prefixes: list[tuple[str, str]] = []
        for module in modules:
            parts = module.split(".")
            file = "/".join(parts) + ".py"
            self._prefixes += [("___".join(parts[i:]) + "___", file) for i in range(len(parts))]
        self._prefixes.sort(key=lambda p: -len(p[0]))  # the longest (most specific) match first

    @classmethod
    def load(cls) -> Symbols:
        try:
            modules = list(json.loads(MANIFEST.read_text())["modules"])
        except (OSError, ValueError, KeyError, TypeError):
            modules = []
        return cls(modules)

    def resolve(self, symbol: str) -> tuple[str, str] | None:
        m = _MYPYC.match(symbol)
        if m is None:
            return None
        rest = m.group("rest")
        for prefix, file in self._prefixes:
            if rest.startswith(prefix):
                return file, rest[len(prefix):].replace("___", ".")
        return None


@dataclasses.dataclass
class Summary:
    """One side's samples of its event-loop thread, grouped; see the module docstring."""

    total: int = 0
    idle: int = 0
    empty: int = 0
    other_threads_busy: int = 0
    groups: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_fn: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_file: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def busy(self) -> int:
        return self.total - self.idle


def _frames(stack: str, symbols: Symbols) -> list[tuple[str, str, str | None]]:
    """(function, file, group) per Python or compiled frame (group None: it counts for its
    caller's) and per native frame that has a group of its own, outermost first; other native
    frames are left out, so they count for their caller's group."""
    out: list[tuple[str, str, str | None]] = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame)
        if m is None:
            continue
        fn, file = m.group("fn"), _short(m.group("file"))
        if file.endswith(".py") or file.startswith("<"):
            out.append((fn, file, _group_of(file)))
        elif (resolved := symbols.resolve(fn)) is not None:
            out.append((resolved[1], resolved[0], _group_of(resolved[0])))
        elif (group := _native_group(fn, file)) is not None:
            out.append((fn, file, group))
    return out


def summarise(raw: str, pid: int, symbols: Symbols) -> Summary:
    """py-spy raw (collapsed) stacks of process ``pid``, recorded with ``--threads --idle``.

    The event-loop thread is the main one, whose thread ID is the PID (py-spy does not always
    manage to read thread names). Stacks inside the import machinery (worker start-up) are
    left out.
    """
    main_thread = f"thread ({pid})"
    s = Summary()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or "<frozen importlib._bootstrap>" in stack:
            continue
        n = int(count)
        thread, _, stack = stack.partition(";")
        frames = _frames(stack, symbols)
        code = [(fn, file) for fn, file, _group in frames if file.endswith(".py") or file.startswith("<")]
        idle = bool(code) and code[-1] == ("EpollSelector.select", "selectors.py")
        if thread.partition(":")[0] != main_thread:
            if not idle:
                s.other_threads_busy += n
            continue
        if not code:
            s.empty += n  # py-spy read no frame at all (a stack mid-update)
            continue
        s.total += n
        if idle:
            s.idle += n
            continue
        group = next((g for _fn, _file, g in reversed(frames) if g is not None), OTHER)
        s.groups[group] += n
        fn, file, _group = frames[-1]
        s.by_fn[f"{fn} ({file})"] += n
        s.by_file[file] += n
    return s


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def split_table(sides: dict[str, Summary]) -> str:
    head = "| group | " + " | ".join(f"{role}: of busy | {role}: of all" for role in sides) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(sides)]
    for group in GROUPS:
        if group == SYSCALLS and not any(s.groups[group] for s in sides.values()):
            continue
        cells = [f"{_pct(s.groups[group], s.busy)} | {_pct(s.groups[group], s.total)}" for s in sides.values()]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    cells = [f" | {_pct(s.idle, s.total)}" for s in sides.values()]
    lines.append(f"| {IDLE} | " + " | ".join(cells) + " |")
    cells = [f"{s.busy} | {s.total}" for s in sides.values()]
    lines.append("| samples | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table(title: str, total: int, rows: list[tuple[str, int]]) -> str:
    lines = [f"| {title} | share of busy samples |", "|---|---:|"]
    lines += [f"| `{name}` | {_pct(n, total)} |" for name, n in rows]
    return "\n".join(lines)


def build_of(env: dict[str, str]) -> str:
    """What ``irohpy --version`` says in the workers' environment: version and build."""
    out = subprocess.run([sys.executable, "-m", "irohpy", "--version"], env=env, capture_output=True,
                         text=True, timeout=VERSION_TIMEOUT, check=True)
    return out.stdout.strip()


def _spy_args(pid: int, rate: int, native: bool, out: Path) -> list[str]:
    return ["record", "--pid", str(pid), "--rate", str(rate), "--idle", "--threads",
            "--native" if native else "--nonblocking", "--format", "raw", "--output", str(out)]


async def _spy(pyspy: str, args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        pyspy, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
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


async def _run(args: argparse.Namespace, pyspy: str, env: dict[str, str],
               native: bool) -> tuple[list[dict[str, Any]], dict[str, tuple[int, str]]]:
    """The bulk runs' results, and each side's PID and raw py-spy output."""
    opts = common.Options(datagram_size=args.datagram_size)
    params = common.Params(parts=("bulk",), megabytes=args.megabytes, runs=args.runs)
    server = await Worker.spawn("irohpy server", "--worker", "server", "--impl", "irohpy",
                                "--datagram-size", str(opts.datagram_size), env=env)
    client: Worker | None = None
    spies: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="irohpy-profile-") as tmp:
        outs = {"sender": Path(tmp, "client.txt"), "receiver": Path(tmp, "server.txt")}
        pids = {"receiver": server.proc.pid}
        try:
            info = await server.message("ready", common.STARTUP_TIMEOUT)
            job = json.dumps({"info": info, "params": dataclasses.asdict(params),
                              "opts": dataclasses.asdict(opts)})
            client = await Worker.spawn("irohpy client", "--worker", "client", "--impl", "irohpy",
                                        "--job", job, env=env)
            pids["sender"] = client.proc.pid
            for role, pid in pids.items():
                spies.append(await _spy(pyspy, _spy_args(pid, args.rate, native, outs[role])))
            result = await client.message("result", params.client_timeout())
        finally:
            for spy in spies:
                await _stop(spy)
            for worker in (client, server):
                if worker is not None:
                    await worker.stop()
                    worker.close()
        raw = {role: (pids[role], outs[role].read_text(errors="replace") if outs[role].exists() else "")
               for role in ("sender", "receiver")}
        return result["bulk"], raw


def report(args: argparse.Namespace, version: str, native: bool, load: tuple[float, float, float],
           runs: list[dict[str, Any]], raw: dict[str, tuple[int, str]]) -> str:
    symbols = Symbols.load()
    sides = {role: summarise(text, pid, symbols) for role, (pid, text) in raw.items()}
    mode = "--native, pausing the process per sample" if native else "--nonblocking"
    mb_s = statistics.median(r["mb_s"] for r in runs)
    cpu_s = statistics.median(r["cpu_sender_s"] for r in runs)
    cpu_r = statistics.median(r["cpu_receiver_s"] for r in runs)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"Build: `{version}`. {when}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"before the run ({os.cpu_count()} cores, shared with other work).",
        f"irohpy bulk, one stream, {args.megabytes} MB × {args.runs} runs on one connection, datagrams "
        f"of {args.datagram_size} bytes, sampled at {args.rate} Hz by py-spy (--idle --threads {mode}); "
        f"median per run {mb_s:.1f} MB/s, CPU sender {cpu_s:.2f} s + receiver {cpu_r:.2f} s "
        "(sampling costs some throughput).",
        "### Split by layer\n\nEach sample of the event-loop thread goes to the innermost frame of one "
        "of the groups; other libraries' frames (stdlib, C built-ins" + (
            ") count for their caller's group, except the socket system calls, the cycle collector "
            "(runtime) and cryptography's (engine)" if native else
            ", AEAD, system calls, the cycle collector) count for their caller's group")
        + " (bench/profile.py). Issue 13 bounds irohpy's layers at 25% of CPU: read the \"of busy\" "
        "columns.\n\n" + split_table(sides),
    ]
    notes = [f"{role}: {s.empty} without any frame, {s.other_threads_busy} busy ones in other threads"
             for role, s in sides.items() if s.empty or s.other_threads_busy]
    if notes:
        parts.append("Samples left out of the split: " + "; ".join(notes) + ".")
    for role, s in sides.items():
        if not s.busy:
            parts.append(f"### {role}: no busy samples")
            continue
        parts += [f"### {role}: {s.busy} busy samples of {s.total}",
                  _table("function (own time)", s.busy, s.by_fn.most_common(args.top)),
                  _table("file (own time)", s.busy, s.by_file.most_common(args.top))]
    return "\n\n".join(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=100, help="bulk size in MB per run (default 100)")
    parser.add_argument("--runs", type=int, default=5, help="bulk runs, all sampled (default 5)")
    parser.add_argument("--datagram-size", type=int, default=1452, help="QUIC datagram size (default 1452)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    parser.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    parser.add_argument("--pure", action="store_true", help="run the workers with IROHPY_PURE=1 (plain Python)")
    parser.add_argument("--native", action="store_true",
                        help="native stacks for the pure build too (always on for the compiled one)")
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw stacks in this directory")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"Markdown output (default {RESULTS}/profile.md, or profile-compiled.md)")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        print("error: py-spy not found (a bench-only tool: pip install py-spy)", file=sys.stderr)
        return 2
    env = {**os.environ, "IROHPY_PURE": "1"} if args.pure else dict(os.environ)
    try:
        version = build_of(env)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"error: cannot tell which build the workers run: {exc}", file=sys.stderr)
        return 2
    compiled = version.endswith("(compiled)")
    native = args.native or compiled
    load = os.getloadavg()
    runs, raw = asyncio.run(_run(args, pyspy, env, native))
    text = report(args, version, native, load, runs, raw)
    if args.raw is not None:
        args.raw.mkdir(parents=True, exist_ok=True)
        for role, (_pid, stacks) in raw.items():
            (args.raw / f"{role}.txt").write_text(stacks)
    out = args.out or RESULTS / ("profile-compiled.md" if compiled else "profile.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = "compiled" if compiled else "pure Python"
    out.write_text(f"# Profile of irohpy's bulk path ({title})\n\n{text}\n")
    print(text)
    return 0
