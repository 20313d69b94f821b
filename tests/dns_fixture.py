"""OUR DNS server (``irohpy dns-server --dev``) as a separate process on 127.0.0.1, for tests.

Usage::

    from tests.dns_fixture import dns_server

    async with dns_server(origin="irohpy.test.") as server:
        server.pkarr_url                 # http://127.0.0.1:P/pkarr
        server.dns_addr                  # ("127.0.0.1", Q), UDP and TCP
        await server.restart()           # same ports, same database
        server.metric("irohpy_dns_pkarr_puts_total", result="stored")

The process is always killed at the end (and, through ``die_with_parent``, if the test
process dies); the database lives in a temporary directory unless ``db`` is given.
``fd_soft_limit=N`` starts it with that open-file soft limit, as ``relay_server`` does; run
with ``IROHPY_DNS_TEST_FLAGS=-v`` to get the server's info log in ``server.stderr_text()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tests.relay_fixture import metric_key, parse_metrics, server_preexec

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_ANNOUNCE = re.compile(r"^(pkarr http on|dns on udp\+tcp|metrics on) (\S+)$")
_PORT = re.compile(r":(\d+)(?:/|$)")


def _port(text: str) -> int:
    return int(_PORT.search(text).group(1))  # type: ignore[union-attr]


class DnsServerProcess:
    """One dns-server process; ports and database are kept across restarts."""

    def __init__(self, origin: str = "irohpy.test.", db: str | Path | None = None,
                 config: str | None = None, args: Sequence[str] = (), fd_soft_limit: int | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="irohpy-dns-")
        self.db = Path(db) if db is not None else Path(self._dir.name) / "dns.sqlite"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = Path(self._dir.name) / "dns.toml"
            self.config_path.write_text(config)
        self.origin = origin
        self._args = list(args)
        self._fd_soft_limit = fd_soft_limit
        self._binds = {"--http-bind": "127.0.0.1:0", "--dns-bind": "127.0.0.1:0", "--metrics-bind": "127.0.0.1:0"}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = tempfile.TemporaryFile()
        self.pkarr_url = ""
        self.dns_addr: tuple[str, int] = ("127.0.0.1", 0)
        self.metrics_url = ""

    def command(self) -> list[str]:
        flags = os.environ.get("IROHPY_DNS_TEST_FLAGS", "").split()
        cmd = [sys.executable, "-m", "irohpy", *flags, "dns-server", "--dev", "--origin", self.origin, "--db", str(self.db)]
        for flag, value in self._binds.items():
            cmd += [flag, value]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        cmd += self._args
        return cmd

    def _start_blocking(self, timeout: float) -> None:
        if self._proc is not None:
            raise RuntimeError("the dns server is already running")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._stderr, env=env,
                                      preexec_fn=server_preexec(self._fd_soft_limit))
        assert self._proc.stdout is not None
        found: dict[str, str] = {}
        buffer = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while len(found) < 3:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise self._failed(f"did not announce its ports within {timeout} s")
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    raise self._failed("exited before announcing its ports")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if m := _ANNOUNCE.match(line.decode(errors="replace").strip()):
                        found[m.group(1)] = m.group(2)
        self.pkarr_url = found["pkarr http on"]
        self.metrics_url = found["metrics on"]
        self.dns_addr = ("127.0.0.1", _port(found["dns on udp+tcp"]))
        self._binds = {"--http-bind": f"127.0.0.1:{_port(self.pkarr_url)}",
                       "--dns-bind": f"127.0.0.1:{self.dns_addr[1]}",
                       "--metrics-bind": f"127.0.0.1:{_port(self.metrics_url)}"}

    def _failed(self, what: str) -> RuntimeError:
        self.kill()
        return RuntimeError(f"dns server {what}; stderr:\n{self.stderr_text()[-4000:]}")

    def _stop_blocking(self, timeout: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._release()
        return proc.returncode

    def kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._release()

    def _release(self) -> None:
        assert self._proc is not None
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def close(self) -> None:
        self.kill()
        self._stderr.close()
        self._dir.cleanup()

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        await asyncio.to_thread(self._start_blocking, timeout)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        return await asyncio.to_thread(self._stop_blocking, timeout)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get(metric_key(name, labels), 0.0)


@contextlib.asynccontextmanager
async def dns_server(origin: str = "irohpy.test.", db: str | Path | None = None, *, config: str | None = None,
                     args: Sequence[str] = (), fd_soft_limit: int | None = None) -> AsyncIterator[DnsServerProcess]:
    """A running dns-server for the duration of the block; stopped gracefully, then killed for sure."""
    server = DnsServerProcess(origin, db, config, args, fd_soft_limit)
    try:
        await server.start()
        yield server
        await server.stop()
    finally:
        server.close()
