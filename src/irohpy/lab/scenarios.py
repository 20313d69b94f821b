"""The lab's scenarios: two irohpy endpoints in separate processes, through real NATs.

Each scenario builds a fresh lab, starts a listening endpoint (``irohpy.lab.peer
listen``) and a dialing one that knows only the listener's EndpointId (its relay URL
comes from the lab's DNS server, so every connection starts on the relay), pings,
transfers data, optionally changes the network mid-transfer, and reports what
happened as a :class:`ScenarioResult`. ``format_table`` prints results as text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from irohpy.errors import LabError
from irohpy.lab.lab import Lab
from irohpy.lab.nat import FULL_CONE_PORT, NatMode
from irohpy.lab.process import LabProcess, python
from irohpy.lab.topology import ROUTERS, Network, Router

Change = Callable[[Lab], Awaitable[None]]
TRANSFER_BYTES = 4 << 20
PACED_RATE = 1 << 20
RUN_TIMEOUT = 120.0
CONNECT_ALLOWANCE = 1.0
"""Seconds allowed on top of 2 RTT between the connection being up and the path being direct."""
FALLBACK_LIMIT = 5.0
"""A dead direct path must hand over to the relay within this many seconds."""
RECOVERY_LIMIT = 10.0
"""Seconds from a network change to a direct path again: the dead-path limit plus punching, with
margin, and well inside QUIC's 30 s idle timeout, so a transfer never depends on luck to survive."""


async def _readdress_dialer(lab: Lab) -> None:
    await lab.readdress("b1", "198.51.100.140")


async def _block_dialer_udp(lab: Lab) -> None:
    await lab.block_udp("rb")


@dataclass(frozen=True)
class Scenario:
    """One lab run: the network, who listens and dials, and an optional mid-transfer change."""

    name: str
    description: str
    network: Network
    expect_direct: bool
    dialer: str = "b1"
    listener: str = "a1"
    change: Change | None = None
    change_name: str = ""
    change_after: float = 1.0
    """Seconds after the transfer starts at which ``change`` runs."""
    rate: float = 0.0
    """Pace the transfer to this many bytes/s (0: as fast as possible)."""
    listener_port: int = 0
    """UDP port the listener binds (0: any)."""
    portmap: bool = False
    """Both endpoints ask their router for a port mapping (iroh's default)."""


CONE = Router(NatMode.CONE)
SYMMETRIC = Router(NatMode.SYMMETRIC)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("same_lan", "both hosts on one LAN behind the same router", Network(), True, dialer="a2"),
    Scenario("cone_cone", "both behind endpoint-independent (cone) NAT", Network(CONE, CONE), True),
    Scenario("cone_symmetric", "listener behind cone NAT, dialer behind symmetric NAT",
             Network(CONE, SYMMETRIC), False),
    Scenario("symmetric_symmetric", "both behind symmetric NAT", Network(SYMMETRIC, SYMMETRIC), False),
    Scenario("fullcone_symmetric", "listener behind a router forwarding its port (full cone), dialer behind "
             "symmetric NAT", Network(Router(NatMode.FULL_CONE_PORT), SYMMETRIC), True,
             listener_port=FULL_CONE_PORT),
    Scenario("symmetric_upnp_cone", "listener behind symmetric NAT on a router running miniupnpd (UPnP IGD, "
             "NAT-PMP, PCP), dialer behind cone NAT; both ask for port mappings",
             Network(Router(NatMode.SYMMETRIC, upnp=True), CONE), True, portmap=True),
    Scenario("udp_blocked", "the dialer's router lets only TCP out", Network(CONE, Router(NatMode.UDP_BLOCKED)),
             False),
    Scenario("wan_50ms", "cone/cone, 25 ms each way on each uplink (50 ms RTT to the relay, 100 ms between hosts)",
             Network(Router(delay_ms=25), Router(delay_ms=25)), True),
    Scenario("loss_5pct", "cone/cone, 5% loss each way on the listener's uplink",
             Network(Router(loss_pct=5), CONE), True),
    Scenario("network_change", "cone/cone, the dialer's host gets a new LAN address mid-transfer",
             Network(CONE, CONE), True, change=_readdress_dialer, change_name="readdress", rate=PACED_RATE),
    Scenario("direct_path_loss", "cone/cone, the dialer's router starts dropping all UDP mid-transfer",
             Network(CONE, CONE), False, change=_block_dialer_udp, change_name="block UDP", rate=PACED_RATE),
)}


@dataclass
class ScenarioResult:
    """What one run showed; times in seconds, ``None`` where it does not apply."""

    scenario: str
    connected: bool
    final_path: str | None = None
    time_to_direct: float | None = None
    """Seconds from the dialer's connect call returning to its first direct path."""
    dial_to_direct: float | None = None
    """Seconds from the dialer's connect call to its first direct path, the handshake included
    (the Rust binding hands a connection over late, so its time to direct may start late)."""
    relay_bytes: float = 0.0
    transfer_ok: bool = False
    rtt_ms: float | None = None
    direct_to_relay: int = 0
    """How often the path fell from direct back to the relay (before any network change)."""
    change_to_relay: float | None = None
    """Seconds from the network change to the first switch to the relay."""
    change_to_direct: float | None = None
    """Seconds from the network change to being direct again."""
    setup_s: float = 0.0
    teardown_s: float = 0.0
    error: str | None = None
    path_changes: list[list[Any]] = field(default_factory=list)
    listener_sockets: list[list[Any]] = field(default_factory=list)
    """The listener's bound ``[host, port]`` sockets."""
    router_traffic: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """Per router, nftables' ``{counter: [packets, bytes]}`` of relay (TCP) and direct (UDP) traffic."""
    dialer_metrics: dict[str, Any] = field(default_factory=dict)
    """The dialing endpoint's ``Endpoint.metrics().values()`` at the end (hole-punch attempts, bytes per path)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def analyse(result: ScenarioResult, report: dict[str, Any], change_at: float | None) -> None:
    """Fill ``result`` from a dialer's ``result`` event: path, time to direct, flaps, recovery."""
    changes = report.get("path_changes", [])
    result.path_changes = changes
    result.final_path = report.get("final_path")
    result.transfer_ok = bool(report.get("transfer_ok"))
    result.rtt_ms = report.get("rtt_ms")
    result.dialer_metrics = report.get("metrics", {})
    if report.get("errors"):
        result.error = "; ".join(report["errors"])
    connected_at = report["connected_at"]
    first_direct = next((t for t, kind, _ in changes if kind == "direct"), None)
    if first_direct is not None:
        result.time_to_direct = max(0.0, first_direct - connected_at)
        result.dial_to_direct = max(0.0, first_direct - report.get("started", connected_at))
    previous = None
    for t, kind, _ in changes:
        before_change = change_at is None or t < change_at
        if previous == "direct" and kind == "relay" and before_change:
            result.direct_to_relay += 1
        if change_at is not None and t >= change_at:
            if kind == "relay" and result.change_to_relay is None:
                result.change_to_relay = t - change_at
            if kind == "direct" and result.change_to_direct is None:
                result.change_to_direct = t - change_at
        previous = kind
    if change_at is not None and result.change_to_direct is None and result.change_to_relay is None \
            and result.final_path == "direct":
        result.change_to_direct = 0.0  # never left the direct path as far as the dialer could see


async def run_dial(lab: Lab, scenario: Scenario, result: ScenarioResult, *, listen: list[str],
                   dial: Callable[[dict[str, Any]], list[str]], names: tuple[str, str] = ("listener", "dialer"),
                   transfer_bytes: int = TRANSFER_BYTES, settle: float = 10.0, timeout: float = RUN_TIMEOUT,
                   after_change: Callable[[LabProcess], Awaitable[None]] | None = None) -> None:
    """One run inside an entered ``lab``: start the listener (``listen``: its command up to its
    port), then the dialer (``dial``: its command up to its transfer flags, from the listener's
    ``ready`` event), change the network mid-transfer where the scenario says (then run
    ``after_change`` on the dialer, whose stdin it may write), and fill ``result`` from the
    dialer's report, our relay's counter and the routers' counters."""
    for router in ROUTERS:
        await lab.count_traffic(router)
    listener = await lab.spawn(scenario.listener, [*listen, "--port", str(scenario.listener_port)], names[0])
    ready = await listener.expect("ready", timeout)
    result.listener_sockets = ready.get("sockets", [])
    before = await lab.relay_forwarded_bytes()
    settle_s = settle if scenario.expect_direct else min(settle, 2.0)
    dialer = await lab.spawn(scenario.dialer, [
        *dial(ready), "--bytes", str(transfer_bytes), "--rate", str(scenario.rate), "--settle", str(settle_s),
        "--timeout", str(timeout / 2),
    ], names[1], stdin=after_change is not None)
    change_at = None
    try:
        report = await dialer.expect(("transfer_start", "result"), timeout)
        if report["event"] == "transfer_start" and scenario.change is not None:
            await asyncio.sleep(scenario.change_after)
            change_at = time.time()
            await scenario.change(lab)
            if after_change is not None:
                await after_change(dialer)
        if report["event"] != "result":
            report = await dialer.expect("result", timeout)
    except LabError as exc:
        report = {"connected": False, "error": str(exc)}
    result.connected = bool(report.get("connected"))
    if result.connected:
        analyse(result, report, change_at)
    else:
        result.error = report.get("error")
    result.relay_bytes = await lab.relay_forwarded_bytes() - before
    for router in ROUTERS:
        result.router_traffic[router] = {k: list(v) for k, v in (await lab.traffic(router)).items()}


async def run_scenario(scenario: Scenario, *, transfer_bytes: int = TRANSFER_BYTES, settle: float = 10.0,
                       timeout: float = RUN_TIMEOUT) -> ScenarioResult:
    """Run one scenario in a fresh lab; never raises for a failed connection, only for a broken lab."""
    lab = Lab(scenario.network)
    result = ScenarioResult(scenario.name, connected=False)
    async with lab:
        peer = [*python("-m", "irohpy.lab.peer")]
        flags = [*lab.peer_args(), *(["--portmap"] if scenario.portmap else [])]
        await run_dial(lab, scenario, result, listen=[*peer, "listen", *flags],
                       dial=lambda ready: [*peer, "dial", ready["id"], *flags],
                       transfer_bytes=transfer_bytes, settle=settle, timeout=timeout)
    result.setup_s = lab.timings.get("setup_s", 0.0)
    result.teardown_s = lab.timings.get("teardown_s", 0.0)
    return result


async def run_scenarios(names: Sequence[str], **kwargs: Any) -> list[ScenarioResult]:
    """Run scenarios one after another (each in its own lab)."""
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise LabError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [await run_scenario(SCENARIOS[name], **kwargs) for name in names]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _bytes(value: float) -> str:
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


COLUMNS = ("scenario", "connected", "final path", "to direct", "relay bytes", "transfer", "rtt", "flaps", "after change")


def row(result: ScenarioResult) -> tuple[str, ...]:
    change = ""
    if result.change_to_relay is not None or result.change_to_direct is not None:
        change = f"relay {_seconds(result.change_to_relay)}, direct {_seconds(result.change_to_direct)}"
    return (
        result.scenario, "yes" if result.connected else "no", result.final_path or "-",
        _seconds(result.time_to_direct), _bytes(result.relay_bytes),
        "intact" if result.transfer_ok else ("failed" if result.connected else "-"),
        "n/a" if result.rtt_ms is None else f"{result.rtt_ms:.1f} ms", str(result.direct_to_relay), change,
    )


def format_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    """Plain-text table with aligned columns."""
    widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def median_row(name: str, results: Sequence[ScenarioResult]) -> tuple[str, ...]:
    """One row summarising several runs of a scenario: counts, and medians of the times and bytes."""
    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None
    connected = sum(r.connected for r in results)
    direct = sum(r.final_path == "direct" for r in results)
    ttd = med([r.time_to_direct for r in results if r.time_to_direct is not None])
    rtt = med([r.rtt_ms for r in results if r.rtt_ms is not None])
    n = len(results)
    changed = [r for r in results if r.change_to_relay is not None or r.change_to_direct is not None]
    change = ""
    if changed:
        change = (f"relay {_seconds(med([r.change_to_relay for r in changed if r.change_to_relay is not None]))}, "
                  f"direct {_seconds(med([r.change_to_direct for r in changed if r.change_to_direct is not None]))}")
    return (
        name, f"{connected}/{n}", f"direct {direct}/{n}", _seconds(ttd),
        _bytes(med([r.relay_bytes for r in results]) or 0.0),
        f"intact {sum(r.transfer_ok for r in results)}/{n}", "n/a" if rtt is None else f"{rtt:.1f} ms",
        str(sum(r.direct_to_relay for r in results)), change,
    )
