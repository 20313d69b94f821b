"""``doctor report``'s QUIC Address Discovery against our relay on loopback: a relay with TLS
and QAD (a lab CA's certificate), a plain http one, and a QAD service whose certificate the
report does not trust."""

from __future__ import annotations

import json
from pathlib import Path

from irohpy.base.relay_url import RelayUrl
from irohpy.doctor.qad import QadResult
from irohpy.doctor.report import (NAT_CONE, NAT_NONE, NAT_SYMMETRIC, NAT_UNKNOWN, RelayReport, classify,
                                  format_report, run_report)
from irohpy.relay.map import RelayConfig
from irohpy.relay.server.server import RelayServer
from irohpy.tls.webpki import CaTlsConfig
from tests.lab_ca import LabCa
from tests.relay_fixture import relay_server
from tests.test_qad import CA, qad_relay, until

TRUST_CA = CaTlsConfig.custom_roots([CA.root_pem])


def _config(server: RelayServer, qad: RelayServer | None = None) -> RelayConfig:
    quic = (qad or server).quic_addr
    assert quic is not None
    return RelayConfig(RelayUrl.parse(server.relay_url), quic_port=quic[1])


async def test_report_shows_qad_latency_and_the_address_the_relay_saw(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with qad_relay(tmp_path / "a") as server, qad_relay(tmp_path / "b") as other:
        report = await run_report([_config(server), _config(other)], ca=TRUST_CA, portmap_timeout=0.2)
        for relay in (server, other):
            assert relay.metrics.qad_connections.get() == 1
            await until(lambda: relay.metrics.qad_connections_closed.get() == 1)
            assert relay.metrics.qad_connections_errored.get() == 0  # closed with 1 "finished"
    r, r2 = report.relays
    assert r.latency_ms is not None and r.latency_ms > 0  # HTTPS /ping, trusting the same CA
    assert r.qad_port == _config(server).quic_port
    assert set(r.qad) == {"ipv4"}  # 127.0.0.1 has no IPv6 address
    q = r.qad["ipv4"]
    assert q.error is None and q.latency_ms is not None and q.latency_ms > 0
    assert q.reflexive == f"127.0.0.1:{q.local_port}"
    assert r2.qad["ipv4"].reflexive == q.reflexive  # one socket per family for every relay
    assert report.udp
    text = format_report(report)
    assert f"qad :{r.qad_port}  ipv4 {q.latency_ms:.1f} ms 127.0.0.1:{q.local_port}" in text, text
    j, _ = report.to_json()["relays"]
    assert j["qad"]["ipv4"]["reflexive"] == q.reflexive and j["qad"]["ipv4"]["latency_ms"] == q.latency_ms
    json.dumps(report.to_json())


async def test_qad_over_ipv6(tmp_path: Path) -> None:
    async with qad_relay(tmp_path, host="::1") as server:
        report = await run_report([_config(server)], ca=TRUST_CA, portmap_timeout=0.2)
    [r] = report.relays
    assert set(r.qad) == {"ipv6"}  # ::1 has no IPv4 address
    q = r.qad["ipv6"]
    assert q.error is None and q.latency_ms is not None and q.latency_ms > 0
    assert q.reflexive == f"[::1]:{q.local_port}"
    assert f"ipv6 {q.latency_ms:.1f} ms [::1]:{q.local_port}" in format_report(report)


async def test_an_http_relay_has_no_qad() -> None:
    async with relay_server() as relay:
        report = await run_report([RelayUrl.parse(relay.url)], portmap_timeout=0.2)
    [r] = report.relays
    assert r.latency_ms is not None
    assert r.qad_port is None and r.qad == {}
    assert "qad not available (plain http relay)" in format_report(report)
    [j] = report.to_json()["relays"]
    assert j["qad_port"] is None and j["qad"] == {}


async def test_a_qad_certificate_that_does_not_verify_gives_no_address(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with qad_relay(tmp_path / "a") as home, qad_relay(tmp_path / "b", LabCa("another CA")) as impostor:
        # /ping goes to the trusted relay; QAD on the same host answers with another CA's certificate.
        report = await run_report([_config(home, impostor)], ca=TRUST_CA, portmap_timeout=0.2)
        assert impostor.metrics.qad_connections.get() == 0
    [r] = report.relays
    assert r.latency_ms is not None
    q = r.qad["ipv4"]
    assert q.reflexive is None and q.latency_ms is None
    assert q.error is not None and "handshake failed" in q.error, q.error
    assert "ipv4 failed (handshake failed" in format_report(report)


def test_the_nat_type_from_qad_judges_each_socket_on_its_own() -> None:
    def relay(stun: str | None = None, qad: str | None = None, error: str | None = None) -> RelayReport:
        return RelayReport("https://r/", latency_ms=1.0, stun_port=3478 if stun else None,
                           reflexive={"ipv4": stun} if stun else {},
                           qad={"ipv4": QadResult(1.0 if qad else None, qad, 4000, error)})
    # number 0's relays serve QAD and no STUN
    assert classify([relay(qad="203.0.113.21:4000"), relay(qad="203.0.113.21:4000")], []) == (False, NAT_CONE)
    assert classify([relay(qad="203.0.113.21:4000"), relay(qad="203.0.113.21:5000")], []) == (True, NAT_SYMMETRIC)
    assert classify([relay(qad="198.51.100.2:4000")], ["198.51.100.2"]) == (False, NAT_NONE)
    # STUN's socket and QAD's are different sockets: their ports are never compared
    assert classify([relay(stun="203.0.113.21:4000"), relay(qad="203.0.113.21:5000")], []) == (None, NAT_UNKNOWN)
    # a failed QAD handshake is not evidence that UDP is blocked
    assert classify([relay(error="handshake failed"), relay(error="handshake failed")], []) == (None, NAT_UNKNOWN)
