"""stdin/stdout as asyncio byte streams.

Reading stdin blocks in the OS whatever it is (a tty, a file, a pipe), so a
daemon thread does it; unlike the default executor, that thread cannot keep
the process alive after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import sys
import threading

CHUNK = 64 * 1024


class StdinReader:
    """``await read(n)`` over stdin; ``b""`` at EOF."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self._eof = False
        threading.Thread(target=self._pump, name="irohpy-stdin", daemon=True).start()

    def _pump(self) -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(self._queue.put(data), self._loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                # The loop closed or cancelled the put (Ctrl-C): nobody reads any more.
                return
            if not data:
                return

    async def read(self, n: int = CHUNK) -> bytes:
        if self._eof:
            return b""
        data = await self._queue.get()
        if not data:
            self._eof = True
        return data


class StdoutWriter:
    """stdout for :func:`irohpy.protocols.pipe.forward`, written by a daemon thread.

    A blocking write on a full pipe must stall only this direction of the
    pipe, never the event loop that runs QUIC.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._jobs: queue.Queue[tuple[bytes, asyncio.Future[None]]] = queue.Queue()
        threading.Thread(target=self._run, name="irohpy-stdout", daemon=True).start()

    def _run(self) -> None:
        out = sys.stdout.buffer
        while True:
            data, done = self._jobs.get()
            error: BaseException | None = None
            try:
                out.write(data)
                out.flush()
            except OSError as exc:
                error = exc
            try:
                self._loop.call_soon_threadsafe(self._settle, done, error)
            except RuntimeError:
                return

    @staticmethod
    def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def write(self, data: bytes) -> None:
        self._pending.append(data)

    async def drain(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        done: asyncio.Future[None] = self._loop.create_future()
        self._jobs.put((data, done))
        await done

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        """stdout stays open: the process exit closes it."""
