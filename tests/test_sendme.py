"""`irohpy send` / `irohpy receive` as users run them: real processes, real QUIC, loopback only."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import blake3
import pytest

from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket

LOCAL = ["--relay", "disabled", "--ipv4-addr", "127.0.0.1:0", "--ipv6-addr", "none"]
BIG = 1_000_000_000


def irohpy(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-m", "irohpy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen([sys.executable, "-m", "irohpy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


@contextmanager
def sending(path: Path, cwd: Path, timeout: float = 600) -> Iterator[tuple[str, list[str]]]:
    """Run `irohpy send` until the ticket is printed; Ctrl-C it afterwards (exit 130, store removed)."""
    proc = spawn("send", str(path), "--no-progress", *LOCAL, cwd=cwd)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"send exited: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
            lines.append(line.rstrip("\n"))
            if line.startswith("irohpy receive "):
                break
        yield lines[-1].split()[-1], lines
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert code == 130
    assert not list(cwd.glob(".sendme-send-*")), "send must remove its temporary store"


def make_tree(root: Path, files: int) -> dict[str, bytes]:
    rng = random.Random(7)
    contents = {}
    for i in range(files):
        name = f"tree/d{i % 10}/sub{i % 3}/f{i:04}.bin"
        data = rng.randbytes(rng.randrange(0, 3000))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        contents[name] = data
    return contents


def file_hash(path: Path) -> bytes:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with path.open("rb") as f:
        while chunk := f.read(16 << 20):
            hasher.update(chunk)
    return hasher.digest()


def done_event(stdout: str) -> dict:  # type: ignore[type-arg]
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "done", stdout
    return events[-1]


@pytest.mark.timeout(1800)
def test_directory_with_1000_files_and_a_1gb_file(tmp_path: Path) -> None:
    """The must-show transfer; about 2 minutes on an idle 2-core machine (QUIC-bound)."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    contents = make_tree(src, 1000)
    big = src / "tree" / "big.bin"
    with big.open("wb") as f:
        for _ in range(BIG // (50 << 20)):
            f.write(os.urandom(50 << 20))
        f.write(os.urandom(BIG % (50 << 20)))
    started = time.monotonic()
    with sending(src / "tree", src) as (ticket, lines):
        assert lines[0].startswith("imported directory ") and ", hash " in lines[0]
        assert lines[1] == "to get this data, use"
        result = irohpy("receive", ticket, "--out", str(out), "--json", *LOCAL, timeout=900)
        assert result.returncode == 0, result.stderr
    done = done_event(result.stdout)
    assert len(done["files"]) == 1001 and done["bytes"] == BIG + sum(map(len, contents.values()))
    for name, data in contents.items():
        assert (out / name).read_bytes() == data
    assert file_hash(out / "tree" / "big.bin") == file_hash(big)
    assert not list(out.glob(".sendme-recv-*"))
    print(f"\n1000 files + 1 GB: {time.monotonic() - started:.1f} s end to end, "
          f"receive {done['elapsed']:.1f} s ({BIG / done['elapsed'] / 1e6:.1f} MB/s)")


def test_killed_receive_resumes_without_refetching(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    size = 48 << 20
    (src / "blob.bin").write_bytes(os.urandom(size))
    with sending(src / "blob.bin", src) as (ticket, _):
        first = spawn("receive", ticket, "--out", str(out), "--json", *LOCAL)
        assert first.stdout is not None
        reached = 0
        for line in first.stdout:
            event = json.loads(line)
            if event["event"] == "progress" and event["bytes"] >= size // 2:
                reached = event["bytes"]
                break
        first.kill()
        first.wait(10)
        first.stdout.close()
        assert first.stderr is not None
        first.stderr.close()
        assert reached, "the first receive never got to 50%"
        second = irohpy("receive", ticket, "--out", str(out), "--json", *LOCAL)
        assert second.returncode == 0, second.stderr
    done = done_event(second.stdout)
    sizes = next(json.loads(line) for line in second.stdout.splitlines() if '"sizes"' in line)
    # The resumed bar runs over the whole size and starts at what the store already had.
    assert size <= sizes["total_bytes"] < size + 4096  # the file plus the collection's small blobs
    assert 0 < sizes["missing_bytes"] < size
    # The store persists progress every 16 MiB (and every second), so everything verified
    # before the kill stays but for at most the last 16 MiB.
    assert done["bytes_fetched"] <= size - reached + (16 << 20)
    assert done["bytes_fetched"] < size
    assert file_hash(out / "blob.bin") == file_hash(src / "blob.bin")


def test_receive_refuses_to_overwrite(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("new text")
    (out / "docs").mkdir(parents=True)
    (out / "docs" / "a.txt").write_text("precious")
    (src / "docs" / "big.bin").write_bytes(os.urandom(8 << 20))
    with sending(src / "docs", src) as (ticket, _):
        refused = irohpy("receive", ticket, "--out", str(out), "--no-progress", *LOCAL)
        assert refused.returncode == 1
        assert refused.stderr.strip().startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1
        assert "a.txt exists; pass --overwrite" in refused.stderr
        assert (out / "docs" / "a.txt").read_text() == "precious"
        # Refused before the data came: no 8 MiB store left behind, no file written.
        assert not list(out.glob(".sendme-recv-*")) and not (out / "docs" / "big.bin").exists()
        again = irohpy("receive", ticket, "--out", str(out), "--no-progress", "--overwrite", *LOCAL)
        assert again.returncode == 0, again.stderr
    assert "downloaded 2 files, 8.00 MiB" in again.stdout
    assert (out / "docs" / "a.txt").read_text() == "new text"


def test_single_file_and_progress_stages(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "one.txt").write_text("hello sendme\n")
    with sending(src / "one.txt", src) as (ticket, lines):
        assert lines[0].startswith("imported file ")
        result = irohpy("receive", ticket, "--out", str(out), *LOCAL)
    assert result.returncode == 0, result.stderr
    for stage in ("[1/4] Connecting", "[2/4] Getting sizes", "[3/4] Downloading", "[4/4] Exporting"):
        assert stage in result.stderr
    assert (out / "one.txt").read_text() == "hello sendme\n"
    assert result.stdout.startswith(f"downloaded 1 file, 13 B to {out}. took ")


@pytest.mark.parametrize("ticket", ["blobnotbase32!", "endpointaaaa", "blob" + "a" * 20])
def test_bad_ticket_is_one_line(ticket: str, tmp_path: Path) -> None:
    result = irohpy("receive", ticket, "--out", str(tmp_path), *LOCAL)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_provider_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.txt").write_text("x")
    with sending(src / "x.txt", src) as (ticket, _):
        pass
    result = irohpy("receive", ticket, "--out", str(tmp_path / "out"), "--no-progress", *LOCAL)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_send_refuses_current_directory_and_missing_path(tmp_path: Path) -> None:
    for path in (".", "does-not-exist"):
        result = irohpy("send", path, *LOCAL, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.startswith("error: ")


def test_receive_ctrl_c_exits_130(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "blob.bin").write_bytes(os.urandom(64 << 20))
    with sending(src / "blob.bin", src) as (ticket, _):
        proc = spawn("receive", ticket, "--out", str(out), "--json", *LOCAL)
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["event"] == "progress":
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
    assert not (out / "blob.bin").exists()


def test_three_senders_one_killed_mid_transfer(tmp_path: Path) -> None:
    """Several tickets for the same data: fetch from all; a sender SIGKILLed mid-way (no goodbye) is dropped."""
    out = tmp_path / "out"
    size = 32 << 20
    data = os.urandom(size)
    dirs = []
    for i in range(3):
        (tmp_path / f"s{i}").mkdir()
        (tmp_path / f"s{i}" / "blob.bin").write_bytes(data)
        dirs.append(tmp_path / f"s{i}")
    senders = [spawn("send", "blob.bin", "--no-progress", *LOCAL, cwd=d) for d in dirs]
    try:
        tickets = []
        for proc in senders:
            assert proc.stdout is not None
            tickets.append(next(line.split()[-1] for line in proc.stdout if line.startswith("irohpy receive ")))
        receiver = spawn("receive", *tickets, "--out", str(out), "--json", *LOCAL)
        assert receiver.stdout is not None
        for line in receiver.stdout:
            event = json.loads(line)
            if event["event"] == "progress" and event["bytes"] >= size // 4:
                senders[1].kill()
                break
        rest = receiver.stdout.read()
        assert receiver.wait(300) == 0, receiver.stderr.read() if receiver.stderr else ""
    finally:
        for proc in senders:
            proc.kill()
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        if receiver.stdout:
            receiver.stdout.close()
        if receiver.stderr:
            receiver.stderr.close()
    done = done_event(rest)
    assert (out / "blob.bin").read_bytes() == data
    # The killed sender sends nothing more: its unfinished units are re-requested from the others
    # once it stalls, so the download ends without waiting for its connection to time out.
    assert sum(p["bytes"] for p in done["providers"]) == done["bytes_fetched"] >= size


def test_slow_sender_gets_less_work(tmp_path: Path) -> None:
    """A sender that runs only a fifth of the time (SIGSTOP/SIGCONT) ends up with less of the work."""
    out = tmp_path / "out"
    size = 32 << 20
    data = os.urandom(size)
    senders = []
    for i in range(2):
        (tmp_path / f"s{i}").mkdir()
        (tmp_path / f"s{i}" / "blob.bin").write_bytes(data)
        senders.append(spawn("send", "blob.bin", "--no-progress", *LOCAL, cwd=tmp_path / f"s{i}"))
    stop = threading.Event()

    def throttle(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
        while not stop.is_set():
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.08)
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.02)

    thread = threading.Thread(target=throttle, args=(senders[0],), daemon=True)
    try:
        tickets = []
        for proc in senders:
            assert proc.stdout is not None
            tickets.append(next(line.split()[-1] for line in proc.stdout if line.startswith("irohpy receive ")))
        thread.start()
        result = irohpy("receive", *tickets, "--out", str(out), "--json", *LOCAL, timeout=300)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(5)
        for proc in senders:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
    assert result.returncode == 0, result.stderr
    slow, fast = done_event(result.stdout)["providers"]
    assert (out / "blob.bin").read_bytes() == data
    assert slow["bytes"] < fast["bytes"], (slow, fast)


def test_receive_a_raw_blob_ticket(tmp_path: Path) -> None:
    """A `blob` ticket with format Raw names one blob; it is written as <out>/<hash>."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    data = os.urandom(100_000)
    (src / "one.bin").write_bytes(data)
    digest = blake3.blake3(data).digest()
    with sending(src / "one.bin", src) as (ticket, _):
        raw = BlobTicket(BlobTicket.parse(ticket).addr, digest, BlobFormat.RAW)
        result = irohpy("receive", str(raw), "--out", str(out), "--json", *LOCAL)
    assert result.returncode == 0, result.stderr
    assert (out / digest.hex()).read_bytes() == data
    assert done_event(result.stdout)["files"] == [{"name": digest.hex(), "size": len(data)}]


def test_resumed_progress_bar_counts_the_whole_size() -> None:
    from irohpy.cli.receive import StageDisplay

    with StageDisplay(True) as display:
        display.downloading(1000, have=400)  # a resumed run: 400 of 1000 bytes already stored
        display.advance_to(100)  # 100 fetched by this run
        assert display._progress is not None
        task = display._progress.tasks[0]
        assert (task.total, task.completed) == (1000, 500)


async def test_sendme_bench_runs() -> None:
    """``python -m bench sendme`` (the 1 GiB figure of issue 19) on 3 MiB, so that it keeps running."""
    from bench import sendme

    result = await sendme.measure(3, 1, quiet=True)
    [run] = result["runs"]
    assert run["bytes"] == 3 << 20 and run["mb_s"] > 0
    assert run["receiver_cpu_s"] > 0 and run["sender_cpu_s"] > 0
    assert "| throughput" in sendme.table(result)
