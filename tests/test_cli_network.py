"""The networked commands against OUR relay and dns-server processes on loopback, as users run them.

Tickets that work through the relay alone, nothing public contacted with local infrastructure,
relay tokens, relay trouble reported once, and one exit convention with the same cleanup for
SIGINT, SIGTERM and SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from irohpy import EndpointAddr, EndpointTicket, SecretKey
from irohpy.base.addr import RelayAddr
from irohpy.cli import common
from irohpy.relay.map import RelayKind
from tests.dns_fixture import DnsServerProcess
from tests.relay_fixture import RelayProcess, relay_process

LOOPBACK = ["--ipv4-addr", "127.0.0.1:0", "--ipv6-addr", "none"]
LOCAL = ["--relay", "disabled", *LOOPBACK]
ISSUER = SecretKey.generate()
TOKENS = f'[access]\nmode = "tokens"\ntrusted_issuers = ["{ISSUER.public()}"]\n'
PUBLIC = ("iroh.link", "n0.")


def irohpy(*args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None,
           input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "irohpy", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd, input=input.decode() if input is not None else None)


@contextlib.contextmanager
def running(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            stdin: int = subprocess.DEVNULL) -> Iterator[subprocess.Popen[str]]:
    """A command that runs until signalled; killed for sure at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "irohpy", *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                _PENDING.pop(stream, None)
                stream.close()


_PENDING: dict[object, bytes] = {}  # by stream; dropped when its process ends


def read_until(stream, predicate, timeout: float = 60) -> list[str]:  # type: ignore[no-untyped-def]
    """Lines of ``stream`` up to and including the first that satisfies ``predicate``.

    Reads the file descriptor itself (select() knows nothing of a TextIOWrapper's buffer);
    what comes after that line is kept for :func:`rest`.
    """
    fd = stream.fileno()
    lines: list[str] = []
    buffer = _PENDING.pop(stream, b"")
    deadline = time.monotonic() + timeout
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode(errors="replace"))
            if predicate(lines[-1]):
                _PENDING[stream] = buffer
                return lines
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
    raise AssertionError(f"not found within {timeout} s; got {lines} {buffer!r}")


def rest(stream) -> str:  # type: ignore[no-untyped-def]
    """Everything left on ``stream`` (the process has exited)."""
    return (_PENDING.pop(stream, b"") + stream.buffer.read()).decode(errors="replace")


def ticket_word(lines: list[str], prefix: str) -> str:
    return next(w for line in lines for w in line.split() if w.startswith(prefix))


def interrupt(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    code = proc.wait(30)
    return code, rest(proc.stderr) if proc.stderr else ""


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with relay_process(metrics=False) as r:
        yield r


@pytest.fixture(scope="module")
def token_relay() -> Iterator[RelayProcess]:
    with relay_process(TOKENS, metrics=False) as r:
        yield r


@pytest.fixture
def dns() -> Iterator[DnsServerProcess]:
    server = DnsServerProcess("irohpy.test.")
    try:
        server._start_blocking(20)
        yield server
        server._stop_blocking(10)
    finally:
        server.close()


def relay_only(ticket: str) -> str:
    """The ticket with its IP addresses removed: a peer that can reach only the relay."""
    addr = EndpointTicket.parse(ticket).addr
    return str(EndpointTicket(EndpointAddr(addr.id, frozenset(a for a in addr.addrs if isinstance(a, RelayAddr)))))


# -- 1. tickets carry the home relay ---------------------------------------------------------------

LISTENERS = {
    "ping receiver": (["ping", "receiver"], "stdout"),
    "pipe listen": (["pipe", "listen"], "stderr"),
    "pipe listen-tcp": (["pipe", "listen-tcp", "--host", "127.0.0.1:9"], "stderr"),
    "pipe listen-unix": (["pipe", "listen-unix", "--socket-path", "/nonexistent/backend.sock"], "stderr"),
}


@pytest.mark.parametrize("name", LISTENERS)
def test_listener_ticket_names_the_relay_and_works_through_it_alone(name: str, relay: RelayProcess) -> None:
    args, stream = LISTENERS[name]
    with running(*args, "--relay", relay.url, *LOOPBACK) as proc:
        lines = read_until(getattr(proc, stream), lambda line: "endpoint" in line)
        ticket = EndpointTicket.parse(ticket_word(lines, "endpoint"))
        assert [str(u) for u in ticket.addr.relay_urls()] == [relay.url]
        if name == "ping receiver":
            out = irohpy("ping", "sender", relay_only(str(ticket)), "--relay", relay.url, *LOOPBACK)
            assert out.returncode == 0 and "rtt" in out.stdout, out.stderr
        code, err = interrupt(proc)
    assert code == 130 and "Traceback" not in err


def test_chat_open_ticket_names_the_relay(relay: RelayProcess) -> None:
    from irohpy.protocols.gossip.ticket import GossipTicket

    with running("chat", "open", "alice", "--relay", relay.url, *LOOPBACK, stdin=subprocess.PIPE) as proc:
        lines = read_until(proc.stdout, lambda line: line.startswith("gossip"))
        ticket = GossipTicket.parse(ticket_word(lines, "gossip"))
        assert [str(u) for u in ticket.bootstrap[0].relay_urls()] == [relay.url]
        code, err = interrupt(proc)
    assert code == 130 and "Traceback" not in err


def test_pipe_through_the_relay_alone(relay: RelayProcess) -> None:
    with running("pipe", "listen", "--relay", relay.url, *LOOPBACK, stdin=subprocess.PIPE) as listener:
        ticket = ticket_word(read_until(listener.stderr, lambda line: "endpoint" in line), "endpoint")
        assert listener.stdin is not None
        listener.stdin.write("from the listener")
        listener.stdin.close()
        out = irohpy("pipe", "connect", relay_only(ticket), "--relay", relay.url, *LOOPBACK, input=b"to the listener")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "from the listener"
        assert listener.wait(30) == 0
        assert listener.stdout is not None and rest(listener.stdout) == "to the listener"


# -- 2. local infrastructure stays local -----------------------------------------------------------


def _parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    common.add_endpoint_args(parser)
    return parser.parse_args(list(argv))


def test_nothing_public_unless_asked_for() -> None:
    secret = SecretKey.generate()
    for argv in (["--relay", "http://127.0.0.1:3340"], ["--relay", "disabled"]):
        args = _parsed(*argv)
        assert common.lookups_from_args(args, secret) == []
        assert all("iroh.link" not in str(u) for u in common.relay_mode(args.relay).relay_map.urls())
    asked = common.lookups_from_args(_parsed("--relay", "disabled", "--lookup", "n0"), secret)
    assert any("dns.iroh.link" in repr(vars(lookup)) for lookup in asked)
    assert common.relay_mode("default").kind is RelayKind.DEFAULT


def test_local_relay_run_logs_no_public_host(relay: RelayProcess) -> None:
    with running("-vv", "ping", "receiver", "--relay", relay.url, *LOOPBACK) as proc:
        read_until(proc.stdout, lambda line: line.startswith("endpoint"))
        time.sleep(1.0)  # time for a publisher to try, if one had started
        code, err = interrupt(proc)
    assert code == 130
    assert "home relay is now" in err  # the debug log is really on
    assert not [host for host in PUBLIC if host in err], err[-2000:]


@pytest.mark.parametrize("lookup", ["pkarr", "dns"])
def test_dial_by_id_through_a_local_dns_server(lookup: str, relay: RelayProcess, dns: DnsServerProcess,
                                               tmp_path: Path) -> None:
    key = tmp_path / "receiver.key"
    assert irohpy("key", "generate", "--out", str(key)).returncode == 0
    id_ticket = irohpy("pipe", "generate-ticket", "--key", str(key)).stdout.strip()
    pkarr = dns.pkarr_url
    resolve = pkarr if lookup == "pkarr" else f"dns:{dns.origin}@{dns.dns_addr[0]}:{dns.dns_addr[1]}"
    with running("ping", "receiver", "--key", str(key), "--relay", relay.url, "--lookup", pkarr, *LOOPBACK) as proc:
        read_until(proc.stdout, lambda line: line.startswith("endpoint"))
        deadline = time.monotonic() + 30
        while dns.metric("irohpy_dns_pkarr_puts_total", result="stored") < 1:
            assert time.monotonic() < deadline, "the receiver never published"
            time.sleep(0.1)
        out = irohpy("ping", "sender", id_ticket, "--relay", relay.url, "--lookup", resolve, *LOOPBACK)
        assert out.returncode == 0 and "rtt" in out.stdout, out.stderr
        interrupt(proc)


def _readme_local_setup() -> list[list[str]]:
    """The README's "fully local setup" commands, without the leading ``irohpy``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    paragraph = text.split("A fully local setup:", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(command)[1:] for command in re.findall(r"`(irohpy [^`]+)`", paragraph)]


def _port_free(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> bool:
    """Whether a server could bind there now (TCP servers reuse ports with connections in TIME_WAIT)."""
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _found(url: str) -> bool:
    """Whether the pkarr relay at ``url`` has a packet (404 until the endpoint publishes)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status == 200
    except urllib.error.HTTPError:
        return False


def test_readme_fully_local_setup(tmp_path: Path) -> None:
    """The README's commands as written, on their default ports: the receiver publishes to the local
    dns-server, and a sender that knows only its EndpointId finds it there and pings it."""
    relay_cmd, dns_cmd, receiver_cmd = _readme_local_setup()
    assert relay_cmd == ["relay", "--dev"] and dns_cmd == ["dns-server", "--dev"], (relay_cmd, dns_cmd)
    if not (_port_free(socket.AF_INET6, socket.SOCK_STREAM, "::", 3340)
            and _port_free(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", 8080)
            and _port_free(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 5300)):
        pytest.skip("the --dev ports (3340, 8080, 5300) are taken here")
    # The one addition: the dev database goes to this test's directory, not the shared temp dir.
    with running(*relay_cmd) as relay, running(*dns_cmd, "--db", str(tmp_path / "dns.sqlite")) as dns:
        read_until(relay.stdout, lambda line: line == "relay listening on http://127.0.0.1:3340/")
        read_until(dns.stdout, lambda line: line == "pkarr http on http://127.0.0.1:8080/pkarr")
        with running(*receiver_cmd) as receiver:
            ticket = EndpointTicket.parse(ticket_word(read_until(receiver.stdout, lambda line: "endpoint" in line),
                                                      "endpoint"))
            assert [str(u) for u in ticket.addr.relay_urls()] == ["http://127.0.0.1:3340/"]
            published = f"http://127.0.0.1:8080/pkarr/{ticket.addr.id.to_z32()}"
            deadline = time.monotonic() + 30
            while not _found(published):
                assert time.monotonic() < deadline, "the receiver never published to the local dns-server"
                time.sleep(0.1)
            by_id = str(EndpointTicket(EndpointAddr.from_id(ticket.addr.id)))
            out = irohpy("ping", "sender", by_id, *receiver_cmd[2:])
            assert out.returncode == 0 and "rtt" in out.stdout, out.stderr
            assert interrupt(receiver)[0] == 130
        assert interrupt(relay)[0] == 130 and interrupt(dns)[0] == 130


def test_bad_lookup_is_one_line() -> None:
    out = irohpy("ping", "receiver", "--lookup", "dns:nozone", *LOCAL)
    assert out.returncode == 1 and out.stderr.startswith("error: --lookup") and "Traceback" not in out.stderr


# -- 6. relay tokens, 7. relay trouble ---------------------------------------------------------------


def _token(tmp_path: Path) -> str:
    issuer = tmp_path / "issuer.key"
    ISSUER.save(str(issuer))
    out = irohpy("relay", "token", "issue", "--issuer-key", str(issuer), "--any-endpoint")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_token_relay_refusal_is_one_clear_error(token_relay: RelayProcess) -> None:
    env = {k: v for k, v in os.environ.items() if k != common.RELAY_TOKEN_ENV}
    out = irohpy("ping", "receiver", "--relay", token_relay.url, *LOOPBACK, env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: relay {token_relay.url} refused us"), out.stderr
    assert "--relay-token" in lines[0] and out.stdout == ""


@pytest.mark.parametrize("how", ["flag", "env"])
def test_relay_token_is_presented(how: str, token_relay: RelayProcess, tmp_path: Path) -> None:
    token = _token(tmp_path)
    env = dict(os.environ)
    extra = ["--relay-token", token]
    if how == "env":
        env[common.RELAY_TOKEN_ENV] = token
        extra = []
    with running("ping", "receiver", "--relay", token_relay.url, *extra, *LOOPBACK, env=env) as proc:
        ticket = ticket_word(read_until(proc.stdout, lambda line: line.startswith("endpoint")), "endpoint")
        assert [str(u) for u in EndpointTicket.parse(ticket).addr.relay_urls()] == [token_relay.url]
        out = irohpy("ping", "sender", relay_only(ticket), "--relay", token_relay.url, *extra, *LOOPBACK, env=env)
        assert out.returncode == 0 and "rtt" in out.stdout, out.stderr
        assert interrupt(proc)[0] == 130


def test_doctor_connect_presents_the_relay_token_from_the_environment(token_relay: RelayProcess,
                                                                      tmp_path: Path) -> None:
    env = dict(os.environ, **{common.RELAY_TOKEN_ENV: _token(tmp_path)})
    with running("doctor", "accept", "--relay", token_relay.url, *LOOPBACK, env=env) as accept:
        ticket = ticket_word(read_until(accept.stdout, lambda line: line.startswith("endpoint")), "endpoint")
        out = irohpy("doctor", "connect", ticket, "--size", "64K", "--pings", "2", *LOOPBACK, "--json", env=env)
        assert interrupt(accept)[0] == 130
    assert out.returncode == 0, out.stderr
    relay_phase = next(p for p in json.loads(out.stdout)["phases"] if p["name"] == "relay")
    assert relay_phase["path"] == "relay" and relay_phase["bytes"] == 64 << 10, relay_phase


def test_doctor_connect_takes_a_key_that_an_allowlist_relay_admits(tmp_path: Path) -> None:
    """Both phases run as the --key identity, so a relay that admits by EndpointId lets them in."""
    keys = {name: SecretKey.generate() for name in ("accept", "connect")}
    for name, key in keys.items():
        key.save(str(tmp_path / f"{name}.key"))
    allowlist = ", ".join(f'"{key.public()}"' for key in keys.values())
    with relay_process(f'[access]\nmode = "allowlist"\nallowlist = [{allowlist}]\n', metrics=False) as relay:
        with running("doctor", "accept", "--relay", relay.url, "--key", str(tmp_path / "accept.key"),
                     *LOOPBACK) as accept:
            ticket = ticket_word(read_until(accept.stdout, lambda line: line.startswith("endpoint")), "endpoint")
            out = irohpy("doctor", "connect", ticket, "--key", str(tmp_path / "connect.key"), "--lookup", "none",
                         "--size", "64K", "--pings", "2", *LOOPBACK, "--json")
            code, seen = interrupt(accept)
    assert out.returncode == 0, out.stderr
    assert code == 130
    phases = {p["name"]: p for p in json.loads(out.stdout)["phases"]}
    assert phases["relay"]["path"] == "relay" and phases["relay"]["bytes"] == 64 << 10, phases
    assert phases["direct"]["bytes"] == 64 << 10, phases
    assert seen.count(keys["connect"].public().fmt_short()) >= 2, seen  # the accept side saw our id twice


def test_unreachable_relay_is_reported_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    with running("ping", "receiver", "--relay", dead, *LOOPBACK) as proc:
        lines = read_until(proc.stdout, lambda line: line.startswith("endpoint"), timeout=common.ONLINE_TIMEOUT * 6)
        assert not EndpointTicket.parse(ticket_word(lines, "endpoint")).addr.relay_urls()
        code, err = interrupt(proc)
    assert code == 130
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no home relay" in warnings[0] and "unreachable" in warnings[0], err
    assert err.index("warning:") < err.index("waiting for pings")


def test_unreachable_lookup_is_reported_once(relay: RelayProcess) -> None:
    """A --lookup pkarr URL nobody answers: one warning naming it (retries log at info), and the command runs on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/pkarr"
    with running("ping", "receiver", "--relay", relay.url, "--lookup", dead, *LOOPBACK) as proc:
        read_until(proc.stdout, lambda line: line.startswith("endpoint"))
        warning = read_until(proc.stderr, lambda line: line.startswith("warning:"))[-1]
        assert warning.startswith(f"warning: publishing through the pkarr relay {dead} failed: "), warning
        assert interrupt(proc)[0] == 130
    with running("-v", "ping", "receiver", "--relay", relay.url, "--lookup", dead, *LOOPBACK) as proc:
        failures = [line for line in read_until(proc.stderr, lambda line: " INFO " in line and "publishing" in line)
                    if "publishing" in line]
        assert [" WARNING " in line for line in failures] == [True, False], failures
        assert interrupt(proc)[0] == 130


# -- 3. and 10.: one exit convention, the same cleanup for every signal -------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_send_cleans_up_on_every_signal(sig: int, code: int, tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(os.urandom(1 << 20))
    with running("send", "data.bin", *LOCAL, cwd=tmp_path) as proc:
        read_until(proc.stdout, lambda line: line.startswith("irohpy receive "))
        assert list(tmp_path.glob(".sendme-send-*"))
        exit_code, err = interrupt(proc, sig)
    assert exit_code == code and "Traceback" not in err
    assert not list(tmp_path.glob(".sendme-send-*"))


@pytest.mark.parametrize("command", [["ping", "receiver"], ["chat", "open", "bob"], ["pipe", "listen"]])
def test_sigterm_exits_143(command: list[str]) -> None:
    with running(*command, *LOCAL, stdin=subprocess.PIPE) as proc:
        read_until(proc.stdout if command[0] != "pipe" else proc.stderr, lambda line: "endpoint" in line
                   or line.startswith("gossip"))
        code, err = interrupt(proc, signal.SIGTERM)
    assert code == 143 and "Traceback" not in err


def test_ctrl_c_while_the_command_loads() -> None:
    """Ctrl-C before the command has its own handlers, while its modules load: 130, no traceback."""
    # 'loading' is printed as the import of the command's module starts, so the signal lands in it or later.
    script = ("import sys\nfrom irohpy.cli.main import main\n"
              "class Announce:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'irohpy.cli.ping':\n"
              "            print('loading', flush=True)\n"
              "sys.meta_path.insert(0, Announce())\n"
              "sys.exit(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "ping", "receiver", *LOCAL], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc.stdout, lambda line: line == "loading")
        code, err = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            _PENDING.pop(stream, None)
            stream.close()  # type: ignore[union-attr]
    assert code == 130 and "Traceback" not in err, err


def test_relay_and_dns_server_exit_conventions() -> None:
    for command in (["relay", "--dev", "--http-bind", "127.0.0.1:0", "--metrics-bind", "none"],
                    ["dns-server", "--dev", "--http-bind", "127.0.0.1:0", "--dns-bind", "127.0.0.1:0",
                     "--metrics-bind", "none", "--db", ":memory:"]):
        for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            with running(*command) as proc:
                read_until(proc.stdout, lambda line: " on " in line)
                assert (command[0], *interrupt(proc, sig)) == (command[0], code, "")


# -- 5. no traceback from the stdin thread ----------------------------------------------------------


def test_pipe_connect_ctrl_c_with_stdin_from_a_pipe() -> None:
    """Ctrl-C while the stdin thread is feeding an active pipe: exit 130, no thread traceback."""
    for _ in range(4):
        with running("pipe", "listen", *LOCAL, stdin=subprocess.PIPE) as listener:
            ticket = ticket_word(read_until(listener.stderr, lambda line: "endpoint" in line), "endpoint")
            with running("pipe", "connect", ticket, *LOCAL, stdin=subprocess.PIPE) as connector:
                assert connector.stdin is not None and listener.stdout is not None
                connector.stdin.write("line\n" * 50_000)
                connector.stdin.flush()
                read_until(listener.stdout, lambda line: line == "line")  # the pipe is flowing
                code, err = interrupt(connector)
            assert code == 130 and "Traceback" not in err and "Exception" not in err, err


# -- 8. the sender's progress -------------------------------------------------------------------------


def _receive_twice(ticket: str, tmp_path: Path) -> None:
    for i in range(2):
        out = irohpy("receive", ticket, "--out", str(tmp_path / f"out{i}"), "--no-progress", *LOCAL)
        assert out.returncode == 0, out.stderr


def test_send_progress_piped_is_a_line_per_connection(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(24 << 20))  # six 4 MiB requests per download
    with running("send", "big.bin", *LOCAL, cwd=tmp_path) as proc:
        ticket = read_until(proc.stdout, lambda line: line.startswith("irohpy receive "))[-1].split()[-1]
        _receive_twice(ticket, tmp_path)
        code, err = interrupt(proc)
    assert code == 130
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    assert sum(": connected" in line for line in lines) == 2
    done = [line for line in lines if ": done, sent " in line]
    assert len(done) == 2 and all(" MiB in " in line for line in done), err


def test_send_progress_on_a_terminal_is_live(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(8 << 20))
    controller, terminal = pty.openpty()
    screen = bytearray()

    def drain() -> None:  # a terminal is always read; a full pty would stall the sender
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 65536):
                screen.extend(chunk)

    proc = subprocess.Popen([sys.executable, "-m", "irohpy", "send", "big.bin", *LOCAL], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal,
                            env=dict(os.environ, COLUMNS="160", TERM="xterm"))
    os.close(terminal)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        ticket = read_until(proc.stdout, lambda line: line.startswith("irohpy receive "))[-1].split()[-1]
        _receive_twice(ticket, tmp_path)
        deadline = time.monotonic() + 10
        while bytes(screen).count(b"done, sent 8.") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        os.close(controller)
        assert proc.stdout is not None
        _PENDING.pop(proc.stdout, None)
        proc.stdout.close()
    text = bytes(screen).decode(errors="replace")
    assert "\x1b[" in text and "━" in text  # a redrawn live display with bars, not plain lines
    assert ": connected" not in text


def test_pipe_unix_socket_forwarding(tmp_path: Path) -> None:
    backend_path, front_path = tmp_path / "backend.sock", tmp_path / "front.sock"
    backend = socket.socket(socket.AF_UNIX)
    backend.bind(str(backend_path))
    backend.listen()

    def echo_upper() -> None:
        conn, _ = backend.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    threading.Thread(target=echo_upper, daemon=True).start()
    try:
        with running("pipe", "listen-unix", "--socket-path", str(backend_path), *LOCAL) as listener:
            ticket = ticket_word(read_until(listener.stderr, lambda line: "endpoint" in line), "endpoint")
            with running("pipe", "connect-unix", "--socket-path", str(front_path), ticket, *LOCAL) as connector:
                deadline = time.monotonic() + 30
                while not front_path.exists():
                    assert time.monotonic() < deadline and connector.poll() is None
                    time.sleep(0.05)
                with socket.socket(socket.AF_UNIX) as client:
                    client.settimeout(30)
                    client.connect(str(front_path))
                    client.sendall(b"over a unix socket")
                    client.shutdown(socket.SHUT_WR)
                    reply = b""
                    while chunk := client.recv(65536):
                        reply += chunk
                assert reply == b"OVER A UNIX SOCKET"
                assert interrupt(connector)[0] == 130
            assert not front_path.exists()  # connect-unix removes its socket file
            assert interrupt(listener)[0] == 130
    finally:
        backend.close()
