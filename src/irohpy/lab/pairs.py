"""The lab's scenarios with a choice of peers: irohpy, or Rust iroh 1.x (the official package).

A :class:`Pair` names who dials whom, ``DIALER-LISTENER``: ``rust-irohpy`` is a Rust peer
(``irohpy.lab.rust_peer``) dialing an irohpy one (``irohpy.lab.peer``). :func:`run_pair`
runs one scenario of ``irohpy.lab.scenarios`` with that pair in a fresh lab. The dialer gets
a ticket holding only the listener's EndpointId and the lab relay's URL, so every connection
starts on our relay whatever the peers' address lookup. Bytes over the relay and direct are
counted by nftables on the dialer's router, not by either peer, and so is anything a peer
sends outside the lab (``outside``, which must stay 0). Rust peers are told their router's
WAN address as QAD would have told them (see ``irohpy.lab.rust_peer``), except behind a
router that blocks UDP, where QAD gets no answer.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from irohpy.base.addr import EndpointAddr, RelayAddr
from irohpy.base.keys import PublicKey
from irohpy.base.relay_url import RelayUrl
from irohpy.base.ticket import EndpointTicket
from irohpy.errors import LabError
from irohpy.lab import conntrack, rust_peer
from irohpy.lab.lab import Lab
from irohpy.lab.nat import NatMode
from irohpy.lab.process import LabProcess, python
from irohpy.lab.scenarios import RUN_TIMEOUT, TRANSFER_BYTES, Scenario, ScenarioResult, format_table, run_dial
from irohpy.lab.topology import ROUTER_OF, WAN_IP

KINDS = ("rust", "irohpy")
PAIRS = ("rust-rust", "rust-irohpy", "irohpy-rust", "irohpy-irohpy")
BASELINE = "rust-rust"
"""The pair every other pair's time to direct is compared with (issue 14: within 1.5x)."""
MIXED = ("cone_cone", "fullcone_symmetric", "symmetric_symmetric", "udp_blocked", "loss_5pct", "wan_50ms",
         "network_change")
"""The scenarios ``irohpy lab run --peers`` runs when none are named."""


@dataclass(frozen=True)
class Pair:
    """Who dials (``dialer``) whom (``listener``); each ``rust`` or ``irohpy``."""

    dialer: str
    listener: str

    def __post_init__(self) -> None:
        for kind in (self.dialer, self.listener):
            if kind not in KINDS:
                raise LabError(f"unknown peer kind {kind!r}; known: {', '.join(KINDS)}")

    @classmethod
    def parse(cls, text: str) -> Pair:
        dialer, sep, listener = text.partition("-")
        if not sep:
            raise LabError(f"peer pair {text!r} is not DIALER-LISTENER; known: {', '.join(PAIRS)}")
        return cls(dialer, listener)

    def __str__(self) -> str:
        return f"{self.dialer}-{self.listener}"

    @property
    def needs_rust(self) -> bool:
        return "rust" in (self.dialer, self.listener)


def parse_pairs(text: str) -> list[Pair]:
    """``all`` or a comma-separated list such as ``rust-rust,irohpy-rust``."""
    names = PAIRS if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise LabError(f"no peer pairs given; known: {', '.join(PAIRS)} or all")
    return [Pair.parse(name) for name in names]


@dataclass
class PairResult(ScenarioResult):
    """A scenario's result for one pair, with the routers' byte counts.

    ``relay_bytes`` stays what our relay says it forwarded; ``router_relay_bytes`` and
    ``router_direct_bytes`` are whole IP packets both ways through the dialer's router
    (relay: TCP to and from the relay; direct: all other UDP).
    """

    pair: str = ""
    router_relay_bytes: int = 0
    router_direct_bytes: int = 0
    outside_packets: int = 0
    """Packets any lab host addressed outside the lab, summed over both routers."""


#: How long after a network change a Rust dialer's new mapping is looked for, and how often.
TELL_WITHIN = 5.0
TELL_POLL = 0.05


def _program(kind: str) -> list[str]:
    return python("-m", "irohpy.lab.peer" if kind == "irohpy" else "irohpy.lab.rust_peer")


def _flags(lab: Lab, kind: str, host: str, scenario: Scenario) -> list[str]:
    """Where a peer of ``kind`` on ``host`` finds the lab's services (and, for Rust, its WAN address).

    Rust iroh runs its own port-mapping client (the package has no switch for it; the lab's
    miniupnpd grants it a mapping); irohpy asks where the scenario says so.
    """
    if kind == "irohpy":
        return [*lab.peer_args(), *(["--portmap"] if scenario.portmap else [])]
    router = ROUTER_OF[host]
    external = [] if scenario.network.router(router).nat is NatMode.UDP_BLOCKED else ["--external-ip", WAN_IP[router]]
    return ["--relay", lab.relay_url, *external]


async def tell_new_mapping(lab: Lab, scenario: Scenario, dialer: LabProcess) -> None:
    """After a network change, what QAD would tell a Rust dialer (which cannot use our relay's
    QAD): once it sends toward the listener's router again, the public address its own router
    now maps it to, written to its stdin. Nothing within :data:`TELL_WITHIN` seconds, nothing told."""
    router = ROUTER_OF[scenario.dialer]
    listener_wan = WAN_IP[ROUTER_OF[scenario.listener]]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TELL_WITHIN
    while loop.time() < deadline:
        lines = await asyncio.to_thread(lab.conntrack, router)
        mapped = conntrack.public_mapping(lines, lab.ip(scenario.dialer), listener_wan)
        if mapped is not None:
            await dialer.send_line(f"external {mapped[0]}:{mapped[1]}")
            return
        await asyncio.sleep(TELL_POLL)


def ticket(endpoint_id: str, relay_url: str) -> str:
    """A ticket with the id and relay URL only, as the issue's measurements used."""
    addr = EndpointAddr(PublicKey.parse(endpoint_id), frozenset({RelayAddr(RelayUrl.parse(relay_url))}))
    return str(EndpointTicket(addr))


async def run_pair(scenario: Scenario, pair: Pair, *, transfer_bytes: int = TRANSFER_BYTES, settle: float = 10.0,
                   timeout: float = RUN_TIMEOUT) -> PairResult:
    """Run ``scenario`` with ``pair`` in a fresh lab; never raises for a failed connection, only
    for a broken lab or a missing Rust package."""
    if pair.needs_rust and (reason := rust_peer.unavailable_reason()):
        raise LabError(reason)
    lab = Lab(scenario.network)
    result = PairResult(scenario.name, connected=False, pair=str(pair))
    async with lab:
        dial_flags = _flags(lab, pair.dialer, scenario.dialer, scenario)
        await run_dial(
            lab, scenario, result,
            listen=[*_program(pair.listener), "listen", *_flags(lab, pair.listener, scenario.listener, scenario)],
            dial=lambda ready: [*_program(pair.dialer), "dial", ticket(ready["id"], lab.relay_url), *dial_flags],
            names=(f"{pair.listener} listener", f"{pair.dialer} dialer"),
            transfer_bytes=transfer_bytes, settle=settle, timeout=timeout,
            after_change=(lambda dialer: tell_new_mapping(lab, scenario, dialer))
            if pair.dialer == "rust" and scenario.change is not None and "--external-ip" in dial_flags else None)
    counted = result.router_traffic[ROUTER_OF[scenario.dialer]]
    result.router_relay_bytes = counted["relay_up"][1] + counted["relay_down"][1]
    result.router_direct_bytes = counted["direct_up"][1] + counted["direct_down"][1]
    result.outside_packets = sum(t["outside"][0] for t in result.router_traffic.values())
    result.setup_s = lab.timings.get("setup_s", 0.0)
    result.teardown_s = lab.timings.get("teardown_s", 0.0)
    return result


# -- tables ----------------------------------------------------------------------------


COLUMNS = ("scenario", "peers", "connected", "final path", "to direct", f"vs {BASELINE}", "dial to direct",
           f"vs {BASELINE}", "relay (nft)",
           "direct (nft)", "transfer", "rtt", "flaps", "after change", "outside")


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(ttd: float | None, baseline: float | None) -> str:
    if ttd is None or baseline is None or baseline <= 0:
        return "n/a"
    return f"{ttd / baseline:.1f}x"


def rows(results: Sequence[PairResult]) -> list[tuple[str, ...]]:
    """One row per (scenario, pair), medians over its runs; time to direct also as a multiple of
    the baseline pair's median in the same scenario."""
    groups: dict[tuple[str, str], list[PairResult]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.pair), []).append(r)
    out: list[tuple[str, ...]] = []
    for (scenario, pair), runs in groups.items():
        n = len(runs)
        ttd = _median([r.time_to_direct for r in runs])
        baseline = _median([r.time_to_direct for r in groups.get((scenario, BASELINE), [])])
        dtd = _median([r.dial_to_direct for r in runs])
        dial_baseline = _median([r.dial_to_direct for r in groups.get((scenario, BASELINE), [])])
        changed = [r for r in runs if r.change_to_relay is not None or r.change_to_direct is not None]
        change = ""
        if changed:
            change = (f"relay {_seconds(_median([r.change_to_relay for r in changed]))}, "
                      f"direct {_seconds(_median([r.change_to_direct for r in changed]))}")
        rtt = _median([r.rtt_ms for r in runs])
        out.append((
            scenario, pair, f"{sum(r.connected for r in runs)}/{n}",
            f"direct {sum(r.final_path == 'direct' for r in runs)}/{n}", _seconds(ttd), _ratio(ttd, baseline),
            _seconds(dtd), _ratio(dtd, dial_baseline),
            _bytes(_median([r.router_relay_bytes for r in runs])), _bytes(_median([r.router_direct_bytes for r in runs])),
            f"intact {sum(r.transfer_ok for r in runs)}/{n}", "n/a" if rtt is None else f"{rtt:.1f} ms",
            str(sum(r.direct_to_relay for r in runs)), change, str(sum(r.outside_packets for r in runs)),
        ))
    return out


def table(results: Sequence[PairResult]) -> str:
    return format_table(rows(results), COLUMNS)
