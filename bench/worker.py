"""Benchmark worker processes, as the orchestrators see them.

A worker is ``python -m bench ...``: it reports on stdout lines that start
with ``@bench``, takes ``go`` on stdin, and stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from typing import IO, Any

from bench import common

STDERR_TAIL = 3000


class WorkerFailed(Exception):
    """A worker died or did not report in time; the message carries its stderr tail."""


class Worker:
    """A child process with stdout lines to read and stderr kept for error reports."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: IO[bytes], label: str) -> None:
        self.proc = proc
        self._stderr = stderr
        self.label = label

    @classmethod
    async def spawn(cls, label: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- owned by the Worker, see close()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            # Ctrl-C reaches only the orchestrator, which then stops workers in order.
            start_new_session=True,
            env=env,
        )
        return cls(proc, stderr, label)

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-STDERR_TAIL:]

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def message(self, kind: str, timeout: float) -> Any:
        """The data of the worker's next message of this kind."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while line := await self.proc.stdout.readline():
                    text = line.decode(errors="replace").rstrip("\n")
                    if not text.startswith(common.PREFIX):
                        print(f"[{self.label}] {text}", file=sys.stderr)
                        continue
                    msg = json.loads(text[len(common.PREFIX):])
                    if msg["kind"] == kind:
                        return msg["data"]
        except TimeoutError:
            raise WorkerFailed(f"{self.label}: no {kind!r} within {timeout:.0f} s\n{self.stderr_tail()}") from None
        await self.stop()
        raise WorkerFailed(f"{self.label} exited with {self.proc.returncode} before {kind!r}\n"
                           f"{self.stderr_tail()}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Close stdin (the worker's stop signal), then escalate if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        for escalate in (None, self.proc.terminate, self.proc.kill):
            if escalate is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    escalate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
                    break

    def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self._stderr.close()
