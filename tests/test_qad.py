"""QUIC Address Discovery end to end on loopback: our relay's QAD service and our Endpoint.

A real relay (TLS with a lab CA's certificate, QAD on UDP) and a real Endpoint that trusts only
that CA: the endpoint learns, from its own UDP socket, the address the relay sees it at.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from irohpy.base.addr import IpAddr
from irohpy.base.relay_url import RelayUrl
from irohpy.endpoint.qad import ALPN, client_config
from irohpy.errors import ConfigError
from irohpy.quic import connection as qc
from irohpy.quic.address_discovery import ObservedAddressReceived
from irohpy.relay.map import RelayConfig, RelayMode
from irohpy.relay.server.config import ServerConfig, Tls, load_config
from irohpy.relay.server.server import RelayServer
from irohpy.tls.webpki import CaTlsConfig, WebPkiClientHandshake
from tests.helpers import bind
from tests.lab_ca import LabCa

CA = LabCa()
WAIT = 20.0


@contextlib.asynccontextmanager
async def qad_relay(tmp_path: Path, ca: LabCa = CA, host: str = "127.0.0.1", **limits: int) -> AsyncIterator[RelayServer]:
    cert, key = ca.issue("127.0.0.1", "::1", "localhost").write(tmp_path)
    bind = f"[{host}]:0" if ":" in host else f"{host}:0"
    config = load_config(None, https_bind=bind, http_bind="none", tls_cert=str(cert), tls_key=str(key),
                         metrics_bind="none", enable_quic_addr_discovery=True, quic_bind=bind)
    if limits:
        config = replace(config, limits=replace(config.limits, **limits))  # type: ignore[arg-type]
    async with RelayServer(config) as server:
        yield server


def relay_mode(server: RelayServer, qad: RelayServer | None = None) -> RelayMode:
    """The relay, with QAD at its own QAD port or at ``qad``'s (on the same host)."""
    quic = (qad or server).quic_addr
    assert quic is not None
    return RelayMode.custom([RelayConfig(RelayUrl.parse(server.relay_url), quic_port=quic[1])])


async def until(check: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_an_endpoint_learns_its_address_from_the_relay_over_its_own_socket(tmp_path: Path) -> None:
    async with qad_relay(tmp_path) as server:
        ep = await bind(relay_mode=relay_mode(server), ca_tls_config=CaTlsConfig.custom_roots([CA.root_pem]))
        try:
            await ep.online()
            own = ep.bound_sockets()[0]
            direct = ep._direct
            assert direct is not None
            await until(lambda: bool(direct.qad))
            assert direct.qad == {("127.0.0.1", own[1])}
            assert server.metrics.qad_connections.get() == 1
            assert server.metrics.qad_incoming.get() == 1
        finally:
            await ep.close()
        await until(lambda: server.metrics.qad_connections_closed.get() == 1)
        assert server.metrics.qad_connections_errored.get() == 0  # closed with 1 "finished"
        qad = server._qad
        assert qad is not None
        await until(lambda: qad.connections == 0)  # drained, and its per-IP slot freed


async def test_ipv6_reports_over_ipv6(tmp_path: Path) -> None:
    async with qad_relay(tmp_path, host="::1") as server:
        assert server.relay_url.startswith("https://[::1]:")
        ep = await bind(addrs=["[::1]:0"], relay_mode=relay_mode(server),
                        ca_tls_config=CaTlsConfig.custom_roots([CA.root_pem]))
        try:
            direct = ep._direct
            assert direct is not None
            await until(lambda: bool(direct.qad))
            assert direct.qad == {("::1", ep.bound_sockets()[0][1])}
        finally:
            await ep.close()


async def test_a_qad_certificate_the_endpoint_does_not_trust_teaches_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with qad_relay(tmp_path / "a") as home, qad_relay(tmp_path / "b", LabCa("another CA")) as impostor:
        # The home relay's websocket is trusted; QAD is answered by a server on the same host
        # whose certificate chains to a CA the endpoint does not trust.
        ep = await bind(relay_mode=relay_mode(home, impostor), ca_tls_config=CaTlsConfig.custom_roots([CA.root_pem]))
        try:
            await ep.online()
            await until(lambda: impostor.metrics.qad_incoming_error.get() >= 1)
            assert ep._direct is not None and ep._direct.qad == set()
            assert impostor.metrics.qad_connections.get() == 0
        finally:
            await ep.close()


async def test_qad_needs_tls_and_the_cli_names_the_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs TLS"):
        load_config(None, dev=True, enable_quic_addr_discovery=True)
    cert, key = CA.issue("127.0.0.1").write(tmp_path)
    config = load_config(None, https_bind="127.0.0.1:443", tls_cert=str(cert), tls_key=str(key),
                         enable_quic_addr_discovery=True)
    assert config.quic_bind == IpAddr.parse("127.0.0.1:7842")
    (tmp_path / "relay.toml").write_text(
        f'enable_quic_addr_discovery = true\n[tls]\ncert_path = "{cert}"\nkey_path = "{key}"\n'
        'quic_bind_addr = "127.0.0.1:9999"\n')
    assert load_config(tmp_path / "relay.toml").quic_bind == IpAddr.parse("127.0.0.1:9999")
    assert load_config(tmp_path / "relay.toml", enable_quic_addr_discovery=False).quic_bind is not None
    assert ServerConfig(tls=Tls(cert, key)).quic_bind is None


async def test_the_cli_serves_qad_and_refuses_it_without_tls(tmp_path: Path) -> None:
    cert, key = CA.issue("127.0.0.1").write(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", "relay", "--tls-cert", str(cert), "--tls-key", str(key),
        "--https-bind", "127.0.0.1:0", "--http-bind", "none", "--metrics-bind", "none",
        "--enable-quic-addr-discovery", "--quic-bind", "127.0.0.1:0",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(WAIT):
            lines = [(await proc.stdout.readline()).decode().strip() for _ in range(3)]
        assert lines[0].startswith("relay listening on https://127.0.0.1:")
        assert lines[2].startswith("quic address discovery on udp 127.0.0.1:"), lines
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), WAIT) == 143
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.read()
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "irohpy", "relay", "--dev", "--http-bind", "127.0.0.1:0",
        "--enable-quic-addr-discovery"], capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: QUIC address discovery needs TLS (--tls-cert and --tls-key, not --dev)"]


class _Rebinding(asyncio.DatagramProtocol):
    def __init__(self, inbox: asyncio.Queue[tuple[bytes, object]]) -> None:
        self.inbox = inbox

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait((data, addr))


async def test_the_relay_reports_again_when_the_nat_rebinds_the_client(tmp_path: Path) -> None:
    """A client whose packets start coming from another port (a NAT rebinding) is told its new
    address, at the new address, with a new sequence number."""
    async with qad_relay(tmp_path) as server:
        assert server.quic_addr is not None
        target = ("127.0.0.1", server.quic_addr[1])
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[bytes, object]] = asyncio.Queue()
        transports = [(await loop.create_datagram_endpoint(lambda: _Rebinding(inbox), local_addr=("127.0.0.1", 0)))[0]
                      for _ in range(2)]
        ports = [t.get_extra_info("sockname")[1] for t in transports]
        hs = WebPkiClientHandshake(server_name="127.0.0.1", alpns=[ALPN], ca=CaTlsConfig.custom_roots([CA.root_pem]))
        conn = qc.QuicConnection(client_config(8), hs)
        conn.connect(target, loop.time())
        seen: list[ObservedAddressReceived] = []
        current = 0

        async def pump(done: Callable[[], bool]) -> None:
            async with asyncio.timeout(WAIT):
                while not done():
                    for data in conn.datagrams_to_send(loop.time()):
                        transports[current].sendto(data, target)
                    timer = conn.get_timer()
                    wait = 0.05 if timer is None else max(0.0, min(0.05, timer - loop.time()))
                    try:
                        data, addr = await asyncio.wait_for(inbox.get(), wait)
                        conn.receive_datagram(data, addr, loop.time())
                    except TimeoutError:
                        conn.handle_timer(loop.time())
                    while (ev := conn.next_event()) is not None:
                        if isinstance(ev, ObservedAddressReceived):
                            seen.append(ev)

        try:
            await pump(lambda: len(seen) == 1)
            assert (seen[0].host, seen[0].port, seen[0].sequence) == ("127.0.0.1", ports[0], 0)
            current = 1  # the NAT gives us another port, and the old mapping is gone
            transports[0].close()
            conn.ping()
            await pump(lambda: len(seen) == 2)
            assert (seen[1].host, seen[1].port, seen[1].sequence) == ("127.0.0.1", ports[1], 1)
        finally:
            conn.close(1, b"finished")
            for data in conn.datagrams_to_send(loop.time()):
                transports[current].sendto(data, target)
            for t in transports:
                t.close()
