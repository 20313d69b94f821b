"""Metrics and doctor in the NAT lab (Linux, root): the endpoint's bytes per path kind against
the router's nftables counters, and ``doctor report``'s NAT type for each router behaviour."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from irohpy.lab import Lab, NatMode, Network, Router, topology
from irohpy.lab.lab import RELAY_PORT
from irohpy.lab.process import python
from irohpy.lab.topology import LAN_IP, RELAY_IP

REASON = topology.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(240)]

TRANSFER = 10 << 20
RATE = 1 << 20
IP_UDP = 20 + 8
IP_TCP = 20 + 32  # IPv4 + TCP with timestamps, as Linux sends by default
TOLERANCE = 0.05
SECOND_RELAY_PORT = RELAY_PORT + 1


def _payload(counter: tuple[int, int], header: int) -> int:
    packets, nbytes = counter
    return nbytes - packets * header


def _close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= TOLERANCE * max(theirs, 1.0)


async def test_relay_then_direct_transfer_bytes_match_router_counters() -> None:
    """10 MB: UDP between the two sites is blocked at the dialer's router for the first part (so
    the data goes over the relay), then unblocked (so it goes direct). The dialer's ``magicsock`` bytes per path kind
    match what the router forwarded, counted by nftables, within 5%."""
    async with Lab(Network(Router(NatMode.CONE), Router(NatMode.CONE))) as lab:
        await lab.count_traffic("rb")
        await lab.block_udp("rb", peer="ra")
        peer = python("-m", "irohpy.lab.peer")
        listener = await lab.spawn("a1", [*peer, "listen", *lab.peer_args()], "listener")
        ready = await listener.expect("ready", 60)
        dialer = await lab.spawn("b1", [*peer, "dial", ready["id"], *lab.peer_args(), "--bytes", str(TRANSFER),
                                        "--rate", str(RATE), "--settle", "10", "--pings", "3"], "dialer")
        await dialer.expect("transfer_start", 60)
        await asyncio.sleep(TRANSFER / RATE * 0.3)
        await lab.unblock_udp("rb")
        report = await dialer.expect("result", 120)
        counted = await lab.traffic("rb")
    assert report["connected"] and report["transfer_ok"], report
    m: dict[str, float] = report["metrics"]
    ours = {
        "relay_up": m["magicsock_send_relay_total"], "relay_down": m["magicsock_recv_data_relay_total"],
        "direct_up": m["magicsock_send_ipv4_total"], "direct_down": m["magicsock_recv_data_ipv4_total"],
    }
    theirs = {
        "relay_up": _payload(counted["relay_up"], IP_TCP), "relay_down": _payload(counted["relay_down"], IP_TCP),
        "direct_up": _payload(counted["direct_up"], IP_UDP), "direct_down": _payload(counted["direct_down"], IP_UDP),
    }
    print(json.dumps({"metrics": ours, "nftables_payload": theirs, "nftables": counted}, indent=1))
    assert ours["relay_up"] > TRANSFER / 4 and ours["direct_up"] > TRANSFER / 4, "both path kinds carried data"
    for name in ("relay_up", "direct_up", "direct_down"):
        assert _close(ours[name], theirs[name]), (name, ours[name], theirs[name])
    # Downstream over the relay is mostly ACKs: frame headers weigh more there, so only the sum is held to 5%.
    assert _close(ours["relay_up"] + ours["relay_down"], theirs["relay_up"] + theirs["relay_down"])


async def _report(lab: Lab, host: str) -> dict[str, Any]:
    relays = ["--relay", lab.relay_url, "--relay", f"http://{RELAY_IP}:{SECOND_RELAY_PORT}/"]
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", lab.ns(host), sys.executable, "-m", "irohpy", "doctor", "report", *relays,
        "--json", "--portmap-timeout", "0.5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("mode", "expected"), [(NatMode.CONE, "cone"), (NatMode.SYMMETRIC, "symmetric"),
                                                (NatMode.UDP_BLOCKED, "udp_blocked")])
async def test_doctor_report_reads_the_nat_type(mode: NatMode, expected: str) -> None:
    async with Lab(Network(Router(mode), Router(NatMode.CONE))) as lab:
        second = await lab.spawn("relay", python(
            "-m", "irohpy", "relay", "--dev", "--http-bind", f"{RELAY_IP}:{SECOND_RELAY_PORT}",
            "--metrics-bind", "none", "--stun-port", "0"), "relay2")
        await second.expect_line("relay listening on", 30)
        report = await _report(lab, "a1")
    print(json.dumps(report, indent=1))
    assert report["nat_type"] == expected
    assert all(r["latency_ms"] is not None for r in report["relays"])  # TCP works everywhere
    assert report["portmap"]["gateway"] == LAN_IP["ra"] and not report["portmap"]["available"]
    assert report["captive_portal"] is False
    if expected == "udp_blocked":
        assert not report["udp"] and report["mapping_varies_by_dest"] is None
    else:
        seen = {r["reflexive"]["ipv4"].rpartition(":")[0] for r in report["relays"]}
        assert seen == {topology.WAN_IP["ra"]}
        assert report["mapping_varies_by_dest"] is (expected == "symmetric")
