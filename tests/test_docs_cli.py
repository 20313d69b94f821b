"""``irohpy doc`` as users run it: real processes, one data directory each, loopback only."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.test_cli import LOCAL


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


def test_share_join_watch(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    doc("create", data=a)
    doc("set", "k", "from a", data=a)
    share = subprocess.Popen([sys.executable, "-m", "irohpy", "doc", "share", "--data", str(a), "write", *LOCAL],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert share.stdout is not None
        ticket = share.stdout.readline().decode().strip()
        assert ticket.startswith("doc")
        joined = doc("join", ticket, *LOCAL, data=b, timeout=120)
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.decode().endswith("\t1 entry\n")
        assert doc("get", "k", data=b).stdout == b"from a\n"
        assert doc("set", "k2", "from b", data=b).returncode == 0
        # b goes live again from its store (peers remembered), and a receives b's entry
        watch = subprocess.Popen([sys.executable, "-m", "irohpy", "doc", "watch", "--data", str(b), *LOCAL],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert share.stdout is not None
            seen_entry = False
            for _ in range(100):
                line = share.stdout.readline().decode()
                seen_entry = seen_entry or line.startswith("insert k2")
                if seen_entry and line.startswith("content ready"):
                    break
            else:
                raise AssertionError("a never got b's entry and its content")
        finally:
            watch.send_signal(signal.SIGINT)
            watch.communicate(timeout=30)
    finally:
        share.send_signal(signal.SIGINT)
        _, err = share.communicate(timeout=30)
    assert share.returncode == 128 + signal.SIGINT
    assert b"Traceback" not in err
    assert doc("get", "k2", data=a).stdout == b"from b\n"
