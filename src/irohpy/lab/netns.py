"""Switching the calling thread into a named network namespace, and back.

Python 3.11 has no ``os.setns``, so libc's ``setns`` is called through ctypes.
Only the calling thread switches: a socket created while switched lives in that
namespace for good, so one process can hold sockets in every namespace of a lab.
Never await while switched (other tasks on the loop would run in the wrong one).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from irohpy.errors import LabError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
T = TypeVar("T")

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``name`` (a ``/run/netns`` name)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        except OSError as exc:
            raise LabError(f"no network namespace {name!r}: {exc.strerror}") from exc
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                _setns(own)
            except LabError as exc:  # pragma: no cover - the kernel refused to switch back
                # A thread stranded in a lab namespace would leak traffic into it: stop here.
                print(f"irohpy.lab: cannot leave namespace {name}: {exc}", file=sys.stderr, flush=True)
                os.abort()
    finally:
        os.close(own)


def call_in(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a fresh thread inside namespace ``name``, for blocking work such as HTTP.

    The thread exists only for this call, so a pooled thread is never left switched.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            with enter(name):
                result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def read_file(name: str, path: str) -> str:
    """A per-namespace file such as ``/proc/thread-self/net/nf_conntrack``, read inside ``name``."""
    def read() -> str:
        with open(path) as f:
            return f.read()
    return call_in(name, read)
