"""The irohpy command line, run as users run it: real processes, loopback only."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from irohpy import EndpointTicket, SecretKey

LOCAL = ["--relay", "disabled", "--ipv4-addr", "127.0.0.1:0", "--ipv6-addr", "none"]
VECTOR = "endpointabtd4lgmcfk2ilomzei2ommees2d3hi72lsnybzaozymw4naoqutiaibab7qaaabywjqe"


def irohpy(*args: str, input: bytes | None = None, timeout: float = 30, env=None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "irohpy", *args], input=input, capture_output=True,
                          timeout=timeout, env=env)


def spawn(*args: str, env=None) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "irohpy", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def read_ticket_from(stream, timeout: float = 20) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline().decode()
        if not line:
            break
        for word in line.split():
            if word.startswith("endpoint"):
                return word
    raise AssertionError("no ticket printed")


def test_key_generate_show_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    out = irohpy("key", "generate", "--out", str(path))
    assert out.returncode == 0, out.stderr
    endpoint_id = out.stdout.decode().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretKey.load(str(path)).public() == SecretKey.load(str(path)).public()
    shown = irohpy("key", "show", str(path))
    assert shown.stdout.decode().strip() == endpoint_id
    again = irohpy("key", "generate", "--out", str(path))
    assert again.returncode == 1 and b"exists" in again.stderr


def test_key_generate_prints_the_secret_only_when_asked() -> None:
    out = irohpy("key", "generate")
    assert out.returncode == 1 and out.stdout == b"" and b"--out FILE" in out.stderr
    out = irohpy("key", "generate", "--print-secret")
    secret = SecretKey.parse(out.stdout.decode().strip())
    assert str(secret.public()) in out.stderr.decode()


@pytest.mark.parametrize("content", [b"", b"zz" * 32, b"00" * 31, b"\xff" * 5])
def test_key_show_bad_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    out = irohpy("key", "show", str(path))
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_key_show_missing_file() -> None:
    out = irohpy("key", "show", "/nonexistent/irohpy.key")
    assert out.returncode == 1 and out.stderr.decode().startswith("error: ")


def test_ticket_inspect_text_and_json() -> None:
    out = irohpy("ticket", "inspect", VECTOR)
    text = out.stdout.decode()
    assert "663e2ccc1155a42dccc911a7318424b43d9d1fd2e4dc07207670cb71a0742934" in text
    assert "127.0.0.1:35269" in text
    info = json.loads(irohpy("ticket", "inspect", "--json", VECTOR).stdout)
    assert info == {
        "kind": "endpoint",
        "endpoint_id": "663e2ccc1155a42dccc911a7318424b43d9d1fd2e4dc07207670cb71a0742934",
        "relay_urls": [],
        "ip_addrs": ["127.0.0.1:35269"],
    }


BLOB = ("blobaalqa7ei6mdzymfchte667kyzynzgyuf3lc6powsiafzq2ialzrmsaaaaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqc"
        "aibaeaqc")
GOSSIP = "gossipfvyrmqvxe2yeialcpsu7xlbs6xefgd5rsa6mjwycewdrpeq2jcaqcfyapsepgb44gcrdzspppvmm4g4tmkc5vrphxljeac4yneaf4ywjaa"
NODE = "17007c88f3079c30a23cc9ef7d58ce1b936285dac5e7bad2400b9869005e62c9"


def test_ticket_inspect_knows_blob_and_gossip_tickets() -> None:
    blob = json.loads(irohpy("ticket", "inspect", "--json", BLOB).stdout)
    assert blob == {"kind": "blob", "hash": "01" * 32, "format": "hash_seq", "endpoint_id": NODE,
                    "relay_urls": [], "ip_addrs": []}
    gossip = json.loads(irohpy("ticket", "inspect", "--json", GOSSIP).stdout)
    assert gossip["kind"] == "gossip" and gossip["endpoint_id"] == NODE
    assert gossip["topic"] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # sha256("x")


@pytest.mark.parametrize("bad", ["endpointzzz", "nonsense", VECTOR[:-3], "endpoint"])
def test_ticket_inspect_garbage(bad: str) -> None:
    out = irohpy("ticket", "inspect", bad)
    assert out.returncode == 1
    assert out.stderr.decode().startswith("error: ") and b"Traceback" not in out.stderr


def test_ping_receiver_and_sender() -> None:
    with spawn("ping", "receiver", *LOCAL) as receiver:
        try:
            ticket = read_ticket_from(receiver.stdout)
            out = irohpy("ping", "sender", ticket, "--count", "3", *LOCAL)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.decode().strip().splitlines()
            assert len(lines) == 3 and all("rtt" in line and " ms" in line for line in lines)
        finally:
            receiver.send_signal(signal.SIGINT)
            assert receiver.wait(10) == 130


def test_pipe_listen_connect_stdio_both_ways() -> None:
    with spawn("pipe", "listen", *LOCAL) as listener:
        ticket = read_ticket_from(listener.stderr)
        assert listener.stdin is not None
        to_connector = os.urandom(300_000)
        stdin = listener.stdin

        def feed() -> None:
            stdin.write(to_connector)
            stdin.close()

        # The listener reads stdin only once a peer is connected.
        threading.Thread(target=feed, daemon=True).start()
        received: list[bytes] = []
        stdout = listener.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: received.append(stdout.read()), daemon=True)
        reader.start()
        to_listener = os.urandom(200_000)
        out = irohpy("pipe", "connect", ticket, *LOCAL, input=to_listener)
        assert out.returncode == 0, out.stderr
        assert out.stdout == to_connector
        assert listener.wait(10) == 0
        reader.join(10)
        assert received == [to_listener]


def test_pipe_ctrl_c_exits_130() -> None:
    with spawn("pipe", "listen", *LOCAL) as listener:
        read_ticket_from(listener.stderr)
        listener.send_signal(signal.SIGINT)
        assert listener.wait(10) == 130


def test_pipe_tcp_forwarding() -> None:
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen()
    backend_port = backend.getsockname()[1]

    def echo_backend() -> None:
        for _ in range(2):
            conn, _ = backend.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    threading.Thread(target=echo_backend, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]

    with contextlib.ExitStack() as stack:
        stack.callback(backend.close)
        listener = stack.enter_context(spawn("pipe", "listen-tcp", "--host", f"127.0.0.1:{backend_port}", *LOCAL))
        stack.callback(stop, listener)
        ticket = read_ticket_from(listener.stderr)
        connector = stack.enter_context(
            spawn("pipe", "connect-tcp", "--addr", f"127.0.0.1:{local_port}", ticket, *LOCAL)
        )
        stack.callback(stop, connector)
        deadline = time.monotonic() + 15
        for message in (b"hello through iroh", b"second connection"):
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", local_port), timeout=5)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            with client:
                client.sendall(message)
                client.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := client.recv(65536):
                    reply += chunk
            assert reply == message.upper()


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Ctrl-C, as a user would: 128 + SIGINT."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130


def test_pipe_generate_ticket_from_env() -> None:
    secret = SecretKey.generate()
    env = dict(os.environ, IROH_SECRET=secret.to_bytes().hex())
    out = irohpy("pipe", "generate-ticket", env=env)
    ticket = EndpointTicket.parse(out.stdout.decode().strip())
    assert ticket.addr.id == secret.public() and not ticket.addr.addrs


def test_pipe_generate_ticket_needs_a_persistent_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IROH_SECRET"}
    out = irohpy("pipe", "generate-ticket", env=env)
    assert out.returncode == 1 and out.stdout == b"" and b"--key FILE" in out.stderr
    key = tmp_path / "id.key"
    SecretKey.generate().save(str(key))
    out = irohpy("pipe", "generate-ticket", "--key", str(key), env=env)
    assert EndpointTicket.parse(out.stdout.decode().strip()).addr.id == SecretKey.load(str(key)).public()


def test_version() -> None:
    import irohpy as package

    out = irohpy("--version")
    assert out.returncode == 0
    assert out.stdout.decode().strip() in (f"irohpy {package.__version__} (compiled)", f"irohpy {package.__version__} (pure)")


@pytest.mark.parametrize("argv", [["--help"], ["key", "show", "KEY"]], ids=["help", "key-show"])
def test_startup_imports_only_what_the_command_needs(argv: list[str], tmp_path: Path) -> None:
    """`irohpy --help` and `irohpy key show` start in < 0.3 s: measured as CPU time (the
    machine's load does not count) and by what they import."""
    key = tmp_path / "id.key"
    SecretKey.generate().save(str(key))
    argv = [str(key) if a == "KEY" else a for a in argv]
    code = ("import resource, runpy, sys; sys.argv = ['irohpy', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('irohpy', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'aiohttp', 'aioquic', 'numpy', 'rich'}"
            " or m.startswith(('irohpy.endpoint', 'irohpy.protocols')))\n"
            "u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "print('HEAVY', heavy, 'CPU', u.ru_utime + u.ru_stime, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=30)
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("HEAVY []"), line
    assert float(line.split()[-1]) < 0.3, line


def test_relay_dev_prints_a_client_url_and_two_run_side_by_side() -> None:
    """README's `irohpy relay --dev`: binds [::]:3340, prints a loopback URL clients can use;
    a second --dev relay on another port does not clash on the metrics port."""
    import urllib.request

    with socket.socket(socket.AF_INET6) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the relay does: TIME_WAIT is no clash
        try:
            probe.bind(("::", 3340))
        except OSError:
            pytest.skip("port 3340 is taken here")
    first = spawn("relay", "--dev")
    second = spawn("relay", "--dev", "--http-bind", "127.0.0.1:0")
    try:
        assert first.stdout is not None and second.stdout is not None
        assert first.stdout.readline().decode().strip() == "relay listening on http://127.0.0.1:3340/"
        assert second.stdout.readline().decode().startswith("relay listening on http://127.0.0.1:")
        with urllib.request.urlopen("http://127.0.0.1:3340/ping", timeout=10) as reply:
            assert reply.status == 200
        assert second.poll() is None, second.stderr.read() if second.stderr else ""
    finally:
        for proc in (first, second):
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(10) for proc in (first, second)]
        for proc in (first, second):
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    assert codes == [130, 130]


def test_two_dev_dns_servers_run_side_by_side() -> None:
    """Like --dev relays, --dev DNS servers on other ports do not clash on the metrics port."""
    command = ["dns-server", "--dev", "--http-bind", "127.0.0.1:0", "--dns-bind", "127.0.0.1:0", "--db", ":memory:"]
    procs = [spawn(*command) for _ in range(2)]
    try:
        announced = []
        for proc in procs:
            assert proc.stdout is not None and proc.stderr is not None
            lines = [proc.stdout.readline().decode().strip() for _ in range(3)]
            assert lines[2].startswith("metrics on http://127.0.0.1:"), lines[2] or proc.communicate(timeout=10)[1]
            announced.append(lines[2])
        assert announced[0] != announced[1] and all(proc.poll() is None for proc in procs)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(10) for proc in procs]
        for proc in procs:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    assert codes == [130, 130]


@pytest.mark.parametrize("argv", [["ping", "sender", VECTOR, "-c", "0"], ["ping", "sender", VECTOR, "-c", "x"],
                                  ["doctor", "connect", VECTOR, "--pings", "-1"], ["demo", "--megabytes", "-3"]],
                         ids=["ping-count-0", "ping-count-x", "doctor-pings", "demo-megabytes"])
def test_counts_must_be_positive(argv: list[str]) -> None:
    out = irohpy(*argv, *(LOCAL if argv[0] == "ping" else []))
    assert out.returncode == 2 and b"must be a positive integer" in out.stderr and b"Traceback" not in out.stderr


def test_wrong_ticket_kind_reads_well() -> None:
    out = irohpy("ping", "sender", BLOB, *LOCAL)
    assert out.returncode == 1 and b"not an 'endpoint' ticket" in out.stderr


def test_lab_list() -> None:
    out = irohpy("lab", "list")
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.decode().splitlines()]
    assert {"same_lan", "cone_cone", "loss_5pct"} <= set(names)
