"""QUIC address discovery through a real NAT: the netns lab, our relay, our endpoint (and Rust's).

Our relay runs in the lab's relay namespace with a certificate from a lab CA and QAD on UDP
7842; an endpoint on host a1 behind router ra (nftables masquerade) must learn the router's
WAN address and the port the NAT mapped its socket to. The official ``iroh`` package cannot do
the same: it trusts only the roots compiled into it (``iroh-wire.md`` §4.8), which the last test
shows on the wire.
"""

from __future__ import annotations

import importlib.util
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
