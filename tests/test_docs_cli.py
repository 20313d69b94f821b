"""``irohpy doc`` as users run it: real processes, one data directory each, loopback only."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.test_cli import LOCAL
from tests.test_cli_network import read_until


def doc(*args: str, data: Path, timeout: float = 60) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-m", "irohpy", "doc", *args[:1], "--data", str(data), *args[1:]],
                          capture_output=True, timeout=timeout)


def test_local_commands(tmp_path: Path) -> None:
    data = tmp_path / "a"
    created = doc("create", data=data)
    assert created.returncode == 0 and len(created.stdout.strip()) == 64
    assert doc("set", "greeting", "hello", data=data).returncode == 0
    assert doc("set", "greeting/2", "again", data=data).returncode == 0
    assert doc("get", "greeting", data=data).stdout == b"hello\n"
    assert doc("get", "greeting", "--prefix", data=data).stdout == b"again\nhello\n"
    ls = doc("ls", data=data).stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in ls] == ["greeting", "greeting/2"]
    missing = doc("get", "nope", data=data)
    assert missing.returncode == 1 and missing.stderr.decode().startswith("error: ")
    assert b"Traceback" not in missing.stderr
    fresh = doc("ls", data=tmp_path / "empty")
    assert fresh.returncode == 1 and b"no current document" in fresh.stderr


def _share(data: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen([sys.executable, "-m", "irohpy", "doc", "share", "--data", str(data), "write", *LOCAL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _interrupt(proc: subprocess.Popen) -> bytes:  # type: ignore[type-arg]
    """Ctrl-C: the command exits as interrupted, with no traceback; returns its stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert b"Traceback" not in err
    return err


def test_share_join_watch(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    doc("create", data=a)
    doc("set", "k", "from a", data=a)
    share = _share(a)
    try:
        ticket = read_until(share.stdout, lambda line: line.startswith("doc"))[-1].strip()
        joined = doc("join", ticket, *LOCAL, data=b, timeout=120)
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.decode().endswith("\t1 entry\n")
        assert doc("get", "k", data=b).stdout == b"from a\n"
        assert doc("set", "k2", "from b", data=b).returncode == 0
        # b goes live again from its store (peers remembered), and a receives b's entry
        watch = subprocess.Popen([sys.executable, "-m", "irohpy", "doc", "watch", "--data", str(b), *LOCAL],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            read_until(share.stdout, lambda line: line.startswith("insert k2 "), 120)
            read_until(share.stdout, lambda line: line.startswith("content ready"), 120)
            # a writes while it is down, then serves again: its store remembers the watching b, and
            # the watch prints a's entry as it arrives (a's id was printed by share as "from ...").
            _interrupt(share)
            assert doc("set", "k3", "from a again", data=a).returncode == 0
            share = _share(a)
            (line,) = read_until(watch.stdout, lambda line: line.startswith("insert k3 "), 120)[-1:]
            assert line.endswith(")") and "(from " in line and "(local)" not in line
            read_until(watch.stdout, lambda line: line.startswith("content ready"), 120)
        finally:
            _interrupt(watch)
    finally:
        _interrupt(share)
    assert doc("get", "k2", data=a).stdout == b"from b\n"
    assert doc("get", "k3", data=b).stdout == b"from a again\n"
