"""QUIC address discovery through a real NAT: the netns lab, our relay, our endpoint (and Rust's).

Our relay runs in the lab's relay namespace with a certificate from a lab CA and QAD on UDP
7842; an endpoint on host a1 behind router ra (nftables masquerade) must learn the router's
WAN address and the port the NAT mapped its socket to. The official ``iroh`` package cannot do
the same: it trusts only the roots compiled into it (``iroh-wire.md`` §4.8), which the last test
shows on the wire.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from irohpy.lab import topology
from irohpy.lab.lab import Lab
from irohpy.lab.nat import NatMode
from irohpy.lab.process import LabProcess, python
from irohpy.lab.topology import RELAY_IP, WAN_IP, Network, Router
from tests.lab_ca import LabCa

REASON = topology.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(120)]
START = 30.0
QAD_PORT = 7842


async def _relay(lab: Lab, tmp_path: Path, *flags: str) -> tuple[Path, LabProcess]:
    """Our relay with QAD in the relay namespace, and the lab CA's root file."""
    ca = LabCa()
    cert, key = ca.issue(RELAY_IP).write(tmp_path)
    root = tmp_path / "ca.pem"
    root.write_bytes(ca.root_pem)
    relay = await lab.spawn("relay", python(
        "-m", "irohpy", *flags, "relay", "--tls-cert", str(cert), "--tls-key", str(key), "--https-bind", f"{RELAY_IP}:443",
        "--http-bind", "none", "--metrics-bind", f"{RELAY_IP}:9090", "--enable-quic-addr-discovery"), "relay")
    await relay.expect_line("quic address discovery on udp", START)
    return root, relay


@pytest.mark.parametrize("mode", [NatMode.CONE, NatMode.SYMMETRIC])
async def test_an_endpoint_behind_a_nat_learns_the_routers_mapping(tmp_path: Path, mode: NatMode) -> None:
    async with Lab(Network(a=Router(mode), services=False)) as lab:
        root, _ = await _relay(lab, tmp_path)
        node = await lab.spawn("a1", python("-m", "tests.qad_node", "irohpy", "--relay", f"https://{RELAY_IP}/",
                                            "--quic-port", str(QAD_PORT), "--ca", str(root), "--seconds", "60"))
        bound = await node.expect("bound", START)
        learned = await node.expect("qad", START)
        [addr] = learned["addrs"]
        print(f"{mode}: learned {addr} {learned['seconds']} s after bind")
        assert any(addr in a for a in learned["advertised"]), learned  # what peers are told
        host, port = addr.rsplit(":", 1)
        assert host == WAN_IP["ra"]
        if mode is NatMode.CONE:
            assert int(port) == bound["port"]  # masquerade keeps the port when it is free
        # The mapping the relay reports is the one on the router (conntrack), not our socket's.
        assert any(f"dport={QAD_PORT}" in e and f"dport={port}" in e for e in lab.conntrack("ra")), lab.conntrack("ra")
        metrics = lab.relay_metrics()
        assert metrics["iroh_relay_qad_connections_total"] == 1.0


@pytest.mark.skipif(importlib.util.find_spec("iroh") is None, reason="the iroh package is not installed")
async def test_a_rust_endpoint_rejects_a_lab_certificate(tmp_path: Path) -> None:
    """Evidence for iroh-wire.md §4.8: Rust iroh checks the QAD certificate against its
    compiled-in webpki roots only, so it closes the handshake with unknown_ca (0x130)."""
    async with Lab(Network(services=False)) as lab:
        root, relay = await _relay(lab, tmp_path, "-vv")
        # Even told about the lab CA the way OpenSSL-based clients are, it does not use it.
        node = await lab.spawn("a1", ["env", f"SSL_CERT_FILE={root}", f"SSL_CERT_DIR={root.parent}", *python(
            "-m", "tests.qad_node", "rust", "--relay", f"http://{RELAY_IP}:3340/", "--quic-port", str(QAD_PORT),
            "--seconds", "6")])
        await node.expect("done", START)
        metrics = lab.relay_metrics()
        assert metrics["iroh_relay_qad_connections_total"] == 0.0
        assert metrics["iroh_relay_qad_incoming_error_total"] >= 1.0
        log = relay.stderr_text()
        assert f"QAD handshake from {WAN_IP['ra']} failed (peer): code 0x130" in log, log[-3000:]
        assert "UnknownIssuer" in log


async def test_doctor_report_measures_qad_behind_a_nat(tmp_path: Path) -> None:
    """``irohpy doctor report`` on a1 (cone NAT, 50 ms each way on the router's uplink) against
    our relay's HTTPS and QAD, trusting the lab CA through ``SSL_CERT_FILE`` (the system roots):
    QAD sees the router's WAN address, and its latency is one round trip, not a handshake's."""
    delay_ms = 50.0
    async with Lab(Network(a=Router(NatMode.CONE, delay_ms=delay_ms), services=False)) as lab:
        root, _ = await _relay(lab, tmp_path)
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", lab.ns("a1"), "env", f"SSL_CERT_FILE={root}", *python(
                "-m", "irohpy", "doctor", "report", "--relay", f"https://{RELAY_IP}/", "--json",
                "--portmap-timeout", "0.5"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert lab.relay_metrics()["iroh_relay_qad_connections_total"] == 1.0
    [relay] = json.loads(out)["relays"]
    print(json.dumps(relay, indent=1))
    rtt_ms = 2 * delay_ms
    assert relay["qad_port"] == QAD_PORT and set(relay["qad"]) == {"ipv4"}
    qad = relay["qad"]["ipv4"]
    assert qad["error"] is None
    assert qad["reflexive"] == f"{WAN_IP['ra']}:{qad['local_port']}"  # masquerade keeps a free port
    # A handshake takes three round trips (the relay's Retry, then TLS) before the first report.
    assert rtt_ms <= qad["latency_ms"] < 2 * rtt_ms, qad
    assert relay["latency_ms"] >= rtt_ms  # HTTPS /ping, trusting the lab CA the same way
