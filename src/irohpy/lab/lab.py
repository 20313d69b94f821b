"""The NAT lab as an async context manager: namespaces, routers, relay and DNS server.

::

    async with Lab(Network(a=Router(NatMode.CONE), b=Router(NatMode.SYMMETRIC))) as lab:
        server = await lab.spawn("a1", [sys.executable, "-m", "myapp", "serve"])
        await server.expect("ready", 10)
        with lab.enter("b1"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # lives in b1

Entering builds the topology (removing labs left behind by dead processes first)
and starts our relay and DNS server in the ``relay`` namespace; leaving stops every
process the lab started and deletes every namespace, also when entering failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from irohpy.errors import LabError
from irohpy.lab import conntrack, nat, netns, topology, upnpd
from irohpy.lab.process import LabProcess, python
from irohpy.lab.topology import HOST_IP, LAN_IP, LAN_PREFIX, RELAY_IP, ROUTER_OF, ROUTERS, Network

RELAY_PORT = 3340
RELAY_METRICS_PORT = 9090
PKARR_PORT = 8080
DNS_PORT = 53
DNS_ORIGIN = "lab.irohpy.test."
START_TIMEOUT = 30.0


class Lab:
    """One lab; see the module docstring. ``timings`` holds setup and teardown seconds."""

    def __init__(self, network: Network | None = None) -> None:
        self.network = network or Network()
        self.topology = topology.Topology(self.network)
        self.processes: list[LabProcess] = []
        self.timings: dict[str, float] = {}
        self._addrs = dict(HOST_IP)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifetime -------------------------------------------------------------

    async def __aenter__(self) -> Lab:
        if reason := topology.unavailable_reason():
            raise LabError(reason)
        if any(self.network.router(r).upnp for r in ROUTERS):
            if reason := upnpd.unavailable_reason():
                raise LabError(reason)
            if not self.network.services:
                raise LabError("miniupnpd needs the lab's services: it checks its WAN side with the relay's STUN")
        start = time.perf_counter()
        try:
            await asyncio.to_thread(topology.remove_stale)
            await asyncio.to_thread(self.topology.build)
            self.timings["topology_s"] = time.perf_counter() - start
            await self._start_delay_lines()
            if self.network.services:
                await self._start_services()
            await self._start_upnpd()
        except BaseException:
            await self.close()
            raise
        self.timings["setup_s"] = time.perf_counter() - start
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), then delete the namespaces."""
        start = time.perf_counter()
        try:
            for proc in reversed(self.processes):
                await proc.stop()
        finally:
            self.processes = []
            await asyncio.to_thread(self.topology.destroy)
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            self.timings["teardown_s"] = time.perf_counter() - start

    # -- namespaces and processes ------------------------------------------------

    def ns(self, role: str) -> str:
        """The namespace name of a role (``inet``, ``relay``, ``ra``, ``rb``, ``a1`` ... ``b2``)."""
        try:
            return self.topology.names[role]
        except KeyError:
            raise LabError(f"no lab role {role!r}; roles: {', '.join(self.topology.names)}") from None

    def enter(self, role: str) -> contextlib.AbstractContextManager[None]:
        """Switch this thread into ``role``'s namespace for the block; do not await inside."""
        return netns.enter(self.ns(role))

    def ip(self, role: str) -> str:
        """A host's current LAN address, a router's WAN address, or the relay's."""
        if role in self._addrs:
            return self._addrs[role]
        if role in ROUTERS:
            return topology.WAN_IP[role]
        if role == "relay":
            return RELAY_IP
        raise LabError(f"role {role!r} has no address")

    async def spawn(self, role: str, argv: Sequence[str], name: str | None = None, *,
                    stdin: bool = False) -> LabProcess:
        """Start ``argv`` in ``role``'s namespace (``stdin``: see ``LabProcess.start``); the lab
        stops it on exit."""
        proc = await LabProcess.start(name or f"{role}:{argv[-1] if argv else ''}", argv, self.ns(role),
                                      stdin=stdin)
        self.processes.append(proc)
        return proc

    async def _start_delay_lines(self) -> None:
        for router in ROUTERS:
            spec = self.network.router(router)
            if self.topology.tapped(router):
                argv = python("-m", "irohpy.lab.delay", self.ns(router), "wan", self.ns("inet"), router,
                              str(spec.delay_ms), str(spec.jitter_ms))
                proc = await LabProcess.start(f"delay-{router}", argv)
                self.processes.append(proc)
                await proc.expect("ready", START_TIMEOUT)
                await self._until_up(router, "wan")
                await self._until_up("inet", router)

    async def _until_up(self, role: str, dev: str) -> None:
        """Wait for a TAP's carrier: the kernel applies it up to a second late and drops packets until then."""
        async with asyncio.timeout(START_TIMEOUT):
            while "state UP" not in await asyncio.to_thread(topology.run, ["ip", "-n", self.ns(role), "-o", "link",
                                                                           "show", "dev", dev]):
                await asyncio.sleep(0.02)

    def _state_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="irohpy-lab-")
        return self._tmp.name

    async def _start_upnpd(self) -> None:
        """miniupnpd on every router that asks for it; ready once it listens for NAT-PMP/PCP."""
        for router in ROUTERS:
            if not self.network.router(router).upnp:
                continue
            state = f"{self._state_dir()}/{router}"
            os.mkdir(state)
            conf = f"{state}/miniupnpd.conf"
            with open(conf, "w") as f:
                f.write(upnpd.config((RELAY_IP, RELAY_PORT), f"{LAN_IP[router]}/{LAN_PREFIX}", state))
            proc = await self.spawn(router, upnpd.argv(conf, f"{state}/miniupnpd.pid"), f"miniupnpd-{router}")
            async with asyncio.timeout(START_TIMEOUT):
                while upnpd.READY not in proc.stderr_text():
                    if proc.proc.returncode is not None:
                        raise LabError(f"miniupnpd on {router} exited: {proc.stderr_text()[-2000:]}")
                    await asyncio.sleep(0.02)

    def upnp_forwards(self, router: str) -> str:
        """miniupnpd's current port forwards on ``router`` (its prerouting chain, as nft text)."""
        return topology.run(["ip", "netns", "exec", self.ns(router), "nft", "list", "chain", "inet", upnpd.TABLE,
                             "prerouting_miniupnpd"])

    # -- the relay and the DNS server ---------------------------------------------

    @property
    def relay_url(self) -> str:
        return f"http://{RELAY_IP}:{RELAY_PORT}/"

    @property
    def pkarr_url(self) -> str:
        return f"http://{RELAY_IP}:{PKARR_PORT}/pkarr"

    @property
    def dns_addr(self) -> tuple[str, int]:
        return (RELAY_IP, DNS_PORT)

    @property
    def dns_origin(self) -> str:
        return DNS_ORIGIN

    def peer_args(self) -> list[str]:
        """Flags for ``python -m irohpy.lab.peer``: where the relay and DNS server are."""
        return ["--relay", self.relay_url, "--pkarr", self.pkarr_url, "--dns", f"{RELAY_IP}:{DNS_PORT}",
                "--origin", DNS_ORIGIN]

    async def _start_services(self) -> None:
        relay = await self.spawn("relay", python(
            "-m", "irohpy", "relay", "--dev", "--http-bind", f"{RELAY_IP}:{RELAY_PORT}",
            "--metrics-bind", f"{RELAY_IP}:{RELAY_METRICS_PORT}", "--stun-port", "0"), "relay")
        dns = await self.spawn("relay", python(
            "-m", "irohpy", "dns-server", "--dev", "--http-bind", f"{RELAY_IP}:{PKARR_PORT}",
            "--dns-bind", f"{RELAY_IP}:{DNS_PORT}", "--origin", DNS_ORIGIN, "--db", f"{self._state_dir()}/dns.sqlite",
            "--metrics-bind", "none"), "dns-server")
        await asyncio.gather(relay.expect_line("relay listening on", START_TIMEOUT),
                             dns.expect_line("dns on udp+tcp", START_TIMEOUT))

    def relay_metrics(self) -> dict[str, float]:
        """The relay's Prometheus metrics, fetched from inside the relay namespace (blocking)."""
        def fetch() -> str:
            with urllib.request.urlopen(f"http://{RELAY_IP}:{RELAY_METRICS_PORT}/metrics", timeout=5) as resp:
                return resp.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(netns.call_in(self.ns("relay"), fetch)):
            for sample in family.samples:
                if not sample.labels:
                    out[sample.name] = sample.value
        return out

    async def relay_forwarded_bytes(self) -> float:
        """Bytes the relay forwarded between clients so far."""
        metrics = await asyncio.to_thread(self.relay_metrics)
        return metrics.get("iroh_relay_bytes_forwarded_total", 0.0)

    # -- network changes ------------------------------------------------------------

    async def readdress(self, host: str, new_ip: str) -> None:
        """Move ``host`` to another address on its LAN, keeping its default route (a DHCP renumbering)."""
        old = self.ip(host)
        gateway = LAN_IP[ROUTER_OF[host]]
        await asyncio.to_thread(topology.ip_batch,
                                f"addr del {old}/{LAN_PREFIX} dev eth0\naddr add {new_ip}/{LAN_PREFIX} dev eth0\n"
                                f"route replace default via {gateway}\n", self.ns(host))
        self._addrs[host] = new_ip

    async def set_default_route(self, host: str, via: str | None) -> None:
        """Point ``host``'s default route at ``via``, or remove it (None): the uplink is gone."""
        script = f"route replace default via {via}\n" if via else "route del default\n"
        await asyncio.to_thread(topology.ip_batch, script, self.ns(host))

    async def restore_default_route(self, host: str) -> None:
        await self.set_default_route(host, LAN_IP[ROUTER_OF[host]])

    async def flush_conntrack(self, router: str) -> None:
        """Forget every NAT mapping on ``router``, as a router reboot would."""
        await asyncio.to_thread(conntrack.flush, self.ns(router))

    def conntrack(self, router: str, proto: str = "udp") -> list[str]:
        """``router``'s conntrack entries as text lines."""
        return conntrack.entries(self.ns(router), proto)

    async def block_udp(self, router: str, peer: str | None = None) -> None:
        """Drop all UDP through ``router`` from now on, established flows too (with ``peer``, a
        role: only UDP to and from its address, as a firewall between two sites would)."""
        await asyncio.to_thread(topology.run, ["ip", "netns", "exec", self.ns(router), "nft", "-f", "-"],
                                nat.block_udp_rules(self.ip(peer) if peer else None))

    async def count_traffic(self, router: str) -> None:
        """Start counting ``router``'s relay (TCP) and direct (UDP) traffic; see :meth:`traffic`."""
        await asyncio.to_thread(topology.run, ["ip", "netns", "exec", self.ns(router), "nft", "-f", "-"],
                                nat.count_rules(RELAY_IP, RELAY_PORT))

    async def traffic(self, router: str) -> dict[str, tuple[int, int]]:
        """``{counter: (packets, bytes)}`` since :meth:`count_traffic` (bytes are whole IP packets)."""
        text = await asyncio.to_thread(topology.run, ["ip", "netns", "exec", self.ns(router), "nft", "-j", "list",
                                                      "counters", "table", "inet", nat.COUNT_TABLE])
        out: dict[str, tuple[int, int]] = {}
        for item in json.loads(text).get("nftables", []):
            counter = item.get("counter")
            if counter is not None:
                out[counter["name"]] = (int(counter["packets"]), int(counter["bytes"]))
        return out

    async def unblock_udp(self, router: str) -> None:
        await asyncio.to_thread(topology.run, ["ip", "netns", "exec", self.ns(router), "nft", "delete", "table",
                                               "inet", nat.BLOCK_UDP_TABLE])

