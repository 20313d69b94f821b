"""OUR relay server (``irohpy relay --dev``) as a separate process on 127.0.0.1, for tests.

Usage::

    from tests.relay_fixture import relay_server

    async with relay_server() as relay:                  # or relay_server(config=TOML_TEXT)
        ep = await Endpoint.bind(relay_mode=RelayMode.custom([relay.url]), ...)
        before = relay.metrics()                         # {"iroh_relay_bytes_forwarded_total": 0.0, ...}
        ...
        assert relay.forwarded_bytes(relay.metrics()) > relay.forwarded_bytes(before)
        await relay.restart()                            # graceful (clients get Restarting), same ports

- ``relay.url`` is the normalised relay URL (``http://127.0.0.1:PORT/``), ``relay.metrics_url``
  the Prometheus page; ``relay.metrics()`` parses it into ``{"name{label=\"v\"}": value}`` and
  ``relay.metric(name, **labels)`` reads one value (0.0 if absent).
- ``await relay.stop()`` stops it gracefully (SIGTERM); ``await relay.reload(toml)`` rewrites
  the config file and sends SIGHUP. Stop and restart run in a thread so that clients on the
  test's event loop keep running and can answer the relay's close handshake.
- ``relay_process()`` is the same as a plain context manager, for module-scoped fixtures.
- The process is always killed at the end (and, through ``die_with_parent``, if the test
  process dies). Its stderr is kept: ``relay.stderr_text()``; run with
  ``IROHPY_RELAY_TEST_FLAGS=-vv`` to get the relay's debug log there.
- ``fd_soft_limit=N`` starts it with that open-file soft limit (as a distribution default
  would leave it), so a test sees whether the server raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from irohpy.lab.process import die_with_parent

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_ANNOUNCE = re.compile(r"^(relay listening on|captive portal on|metrics on) (\S+)$")
_PORT = re.compile(r":(\d+)/")


def metric_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{metric_key: value}``, without the ``_created`` samples."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                out[metric_key(sample.name, sample.labels)] = sample.value
    return out


def server_preexec(fd_soft_limit: int | None) -> Callable[[], None] | None:
    """``die_with_parent``, and the open-file soft limit lowered to ``fd_soft_limit`` if given."""
    die = die_with_parent()
    if fd_soft_limit is None:
        return die

    def preexec() -> None:
        if die is not None:
            die()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_soft_limit, hard))

    return preexec


class RelayProcess:
    """One relay process; ports are kept across restarts so clients can reconnect."""

    def __init__(self, config: str | None = None, args: Sequence[str] = (), *, metrics: bool = True,
                 fd_soft_limit: int | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="irohpy-relay-")
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = Path(self._dir.name) / "relay.toml"
            self.config_path.write_text(config)
        self._args = list(args)
        self._metrics_enabled = metrics
        self._fd_soft_limit = fd_soft_limit
        self._http_bind = "127.0.0.1:0"
        self._metrics_bind = "127.0.0.1:0" if metrics else "none"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._last_stderr = ""
        self.url = ""
        self.metrics_url: str | None = None
        self.portal_url: str | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the relay is not running"
        return self._proc.pid

    @property
    def port(self) -> int:
        return int(_PORT.search(self.url).group(1))  # type: ignore[union-attr]

    def command(self) -> list[str]:
        flags = os.environ.get("IROHPY_RELAY_TEST_FLAGS", "").split()
        cmd = [sys.executable, "-m", "irohpy", *flags, "relay", "--dev", "--http-bind", self._http_bind,
               "--metrics-bind", self._metrics_bind]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        cmd += self._args
        return cmd

    # -- starting and stopping ---------------------------------------------------

    def _spawn(self) -> None:
        """Start the child from the calling thread: pdeathsig follows the thread that forks."""
        if self._proc is not None:
            raise RuntimeError("the relay is already running")
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._stderr, env=env,
                                      preexec_fn=server_preexec(self._fd_soft_limit))

    def _await_announcement(self, timeout: float) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        found: dict[str, str] = {}
        wanted = {"relay listening on"} | ({"metrics on"} if self._metrics_enabled else set())
        buffer = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while not wanted <= found.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise self._failed(f"did not announce its URLs within {timeout} s")
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    raise self._failed("exited before announcing its URLs")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if m := _ANNOUNCE.match(line.decode(errors="replace").strip()):
                        found[m.group(1)] = m.group(2)
        self.url = found["relay listening on"]
        self.metrics_url = found.get("metrics on")
        self.portal_url = found.get("captive portal on")
        # Keep the ports for restarts.
        self._http_bind = f"127.0.0.1:{self.port}"
        if self.metrics_url:
            self._metrics_bind = f"127.0.0.1:{_PORT.search(self.metrics_url).group(1)}"  # type: ignore[union-attr]

    def _failed(self, what: str) -> RuntimeError:
        self.kill()
        return RuntimeError(f"relay {what}; stderr:\n{self.stderr_text()[-4000:]}")

    def start_blocking(self, timeout: float = START_TIMEOUT) -> None:
        self._spawn()
        self._await_announcement(timeout)

    def stop_blocking(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status (None if not running)."""
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
        return self.returncode

    def kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._release()

    def _release(self) -> None:
        assert self._proc is not None
        self.returncode = self._proc.returncode
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._last_stderr = self.stderr_text()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    def close(self) -> None:
        """Kill the process (if running) and remove the temporary files."""
        self.kill()
        self._dir.cleanup()

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        self._spawn()
        await asyncio.to_thread(self._await_announcement, timeout)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        return await asyncio.to_thread(self.stop_blocking, timeout)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def send_signal(self, sig: int) -> None:
        assert self._proc is not None, "the relay is not running"
        self._proc.send_signal(sig)

    async def reload(self, config: str, timeout: float = 10.0) -> None:
        """Rewrite the config file and SIGHUP the relay; returns once it applied the file."""
        assert self.config_path is not None, "start the relay with a config to reload one"
        done = self.metric("iroh_relay_config_reloads_total", result="ok")
        failed = self.metric("iroh_relay_config_reloads_total", result="error")
        self.config_path.write_text(config)
        self.send_signal(signal.SIGHUP)
        async with asyncio.timeout(timeout):
            while True:
                m = self.metrics()
                if self.metric("iroh_relay_config_reloads_total", m, result="error") > failed:
                    raise RuntimeError(f"the relay refused the new config:\n{self.stderr_text()[-2000:]}")
                if self.metric("iroh_relay_config_reloads_total", m, result="ok") > done:
                    return
                await asyncio.sleep(0.02)

    # -- observing ------------------------------------------------------------------

    def stderr_text(self) -> str:
        if self._stderr is None:
            return self._last_stderr
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def metrics(self) -> dict[str, float]:
        assert self.metrics_url, "metrics are disabled for this relay"
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def metric(self, name: str, metrics: dict[str, float] | None = None, **labels: str) -> float:
        values = self.metrics() if metrics is None else metrics
        return values.get(metric_key(name, labels), 0.0)

    def forwarded_bytes(self, metrics: dict[str, float] | None = None) -> float:
        return self.metric("iroh_relay_bytes_forwarded_total", metrics)


@contextlib.asynccontextmanager
async def relay_server(config: str | None = None, args: Sequence[str] = (), *, metrics: bool = True,
                       fd_soft_limit: int | None = None) -> AsyncIterator[RelayProcess]:
    """A running relay for the duration of the block; stopped gracefully, then killed for sure."""
    relay = RelayProcess(config, args, metrics=metrics, fd_soft_limit=fd_soft_limit)
    try:
        await relay.start()
        yield relay
        await relay.stop()
    finally:
        relay.close()


@contextlib.contextmanager
def relay_process(config: str | None = None, args: Sequence[str] = (), *,
                  metrics: bool = True) -> Iterator[RelayProcess]:
    """:func:`relay_server` for synchronous code, e.g. a module-scoped fixture."""
    relay = RelayProcess(config, args, metrics=metrics)
    try:
        relay.start_blocking()
        yield relay
        relay.stop_blocking()
    finally:
        relay.close()
