"""Programs running inside a lab namespace, speaking JSON lines on stdout.

Children go through ``ip netns exec`` (which execs, so the pid is the program's)
and are set to die with the lab's owner even if it crashes (:func:`die_with_parent`).
Stderr goes to a temporary file, kept for error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from irohpy.errors import LabError

STOP_TIMEOUT = 5.0


PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when the thread that forks it exits.

    It runs between fork and exec and then checks that the parent is still the one that
    forked: a parent killed in between would otherwise leave the child running forever,
    which a wrapper such as ``setpriv --pdeathsig`` cannot rule out. ``None`` off Linux.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return set_pdeathsig


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class LabProcess:
    """One child; read its events with :meth:`expect` / :meth:`next_event`, end it with :meth:`stop`."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr: Any) -> None:
        self.name = name
        self.proc = proc
        self._stderr = stderr
        self.events: list[dict[str, Any]] = []
        self._last_stderr = ""

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], ns: str | None = None,
                    env: dict[str, str] | None = None, *, stdin: bool = False) -> LabProcess:
        """Start ``argv`` inside namespace ``ns`` (or right here, for processes that enter
        namespaces); with ``stdin`` it reads the lines :meth:`send_line` writes."""
        prefix = ["ip", "netns", "exec", ns] if ns else []
        stderr = tempfile.TemporaryFile()
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix, *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            stderr.close()
            raise LabError(f"cannot start {name}: {exc}") from exc
        return cls(name, proc, stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def send_line(self, line: str, timeout: float = STOP_TIMEOUT) -> None:
        """Write one line to the child's stdin (started with ``stdin=True``)."""
        stdin = self.proc.stdin
        if stdin is None:
            raise LabError(f"{self.name} was started without stdin")
        try:
            stdin.write(line.encode() + b"\n")
            await asyncio.wait_for(stdin.drain(), timeout)
        except (ConnectionError, TimeoutError) as exc:
            raise LabError(f"{self.name}: cannot write to it: {exc!r}") from exc

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return self._last_stderr
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def next_line(self, timeout: float) -> str:
        """The next stdout line, or LabError on end of output or timeout."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise LabError(f"{self.name}: no output within {timeout} s; stderr:\n{self.stderr_text()[-3000:]}") from None
        if not line:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            raise LabError(f"{self.name} exited ({self.proc.returncode}); stderr:\n{self.stderr_text()[-3000:]}")
        return line.decode(errors="replace").strip()

    async def next_event(self, timeout: float) -> dict[str, Any]:
        """The next JSON-object line; other lines (logs) are skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await self.next_line(max(0.0, deadline - loop.time()))
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    return event

    async def expect(self, kind: str | tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Events up to the first whose ``"event"`` is ``kind`` (or one of them); ``error`` raises."""
        kinds = (kind,) if isinstance(kind, str) else kind
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next_event(max(0.0, deadline - loop.time()))
            if event.get("event") in kinds:
                return event
            if event.get("event") == "error":
                raise LabError(f"{self.name}: {event.get('message')}; stderr:\n{self.stderr_text()[-3000:]}")

    async def expect_line(self, prefix: str, timeout: float) -> str:
        """The first plain stdout line starting with ``prefix`` (servers announce their URLs so)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (line := await self.next_line(max(0.0, deadline - loop.time()))).startswith(prefix):
            pass
        return line

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, then SIGKILL; always releases the pipes and the stderr file."""
        try:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    await asyncio.wait_for(self.proc.wait(), timeout)
            if self.proc.stdout is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.proc.stdout.read(), timeout)
        finally:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self._last_stderr = self.stderr_text()
            self._stderr.close()
        return self.proc.returncode if self.proc.returncode is not None else -1
