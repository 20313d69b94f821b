"""The lab's namespaces, links, addresses and router rules: built fast, always removed.

```
relay ns  eth0 203.0.113.10/24  ─┐
ra ns     wan  203.0.113.21/24  ─┼── br0 in the "inet" ns (a bridge, nothing else)
rb ns     wan  203.0.113.22/24  ─┘
ra ns     lan 198.51.100.1/25    ── a1 198.51.100.2, a2 198.51.100.3
rb ns     lan 198.51.100.129/25  ── b1 198.51.100.130, b2 198.51.100.131
```

Only documentation ranges (RFC 5737) are used, the root namespace gets nothing and
``inet`` has no uplink, so no lab packet can leave the machine. Namespaces are named
``irohlab<owner pid>x<hex>-<role>``: runs whose owner died are recognisable and removed
by :func:`remove_stale`. Everything here is blocking (``ip``/``nft`` subprocesses).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from irohpy.errors import LabError
from irohpy.lab import nat, netns, upnpd

PREFIX = "irohlab"
ROLES = ("inet", "relay", "ra", "rb", "a1", "a2", "b1", "b2")
ROUTERS = ("ra", "rb")
HOSTS = ("a1", "a2", "b1", "b2")
RELAY_IP = "203.0.113.10"
WAN_IP = {"ra": "203.0.113.21", "rb": "203.0.113.22"}
LAN_IP = {"ra": "198.51.100.1", "rb": "198.51.100.129"}
HOST_IP = {"a1": "198.51.100.2", "a2": "198.51.100.3", "b1": "198.51.100.130", "b2": "198.51.100.131"}
ROUTER_OF = {"a1": "ra", "a2": "ra", "b1": "rb", "b2": "rb"}
LAN_PREFIX = 25
WAN_PREFIX = 24
TIMEOUT = 20.0
_NAME = re.compile(rf"^{PREFIX}(\d+)x[0-9a-f]{{4}}-({'|'.join(ROLES)})$")
_SYSCTLS_ZERO = (
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/bridge/bridge-nf-call-arptables",
)


@dataclass(frozen=True)
class Router:
    """One home router: its NAT, and the delay, jitter and loss on its uplink (each way)."""

    nat: nat.NatMode = nat.NatMode.CONE
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    upnp: bool = False
    """Run the real miniupnpd on this router (UPnP IGD, NAT-PMP and PCP for its LAN)."""


@dataclass(frozen=True)
class Network:
    """The lab's shape: the two home routers, and whether the relay and DNS server run."""

    a: Router = field(default_factory=Router)
    b: Router = field(default_factory=Router)
    services: bool = True

    def router(self, name: str) -> Router:
        return self.a if name == "ra" else self.b


def run(argv: list[str], stdin: str = "") -> str:
    """Run one command; a failure raises :class:`LabError` with its stderr."""
    try:
        result = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv[:4])} failed: {exc}") from exc
    if result.returncode:
        raise LabError(f"{' '.join(argv[:4])} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def ip_batch(script: str, ns: str | None = None) -> None:
    run(["ip", *(["-n", ns] if ns else []), "-b", "-"], script)


def missing_tools() -> list[str]:
    return [tool for tool in ("ip", "nft") if shutil.which(tool) is None]


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here, or None."""
    if not os.uname().sysname == "Linux":
        return "the NAT lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces and nftables)"
    if missing := missing_tools():
        return f"the NAT lab needs {' and '.join(missing)} (apt-get install iproute2 nftables)"
    return None


_netem: bool | None = None
_netem_lock = threading.Lock()


def netem_available() -> bool:
    """Probe once per process: ``tc netem`` is missing on some kernels (no CONFIG_NET_SCH_NETEM)."""
    global _netem
    with _netem_lock:
        if _netem is None:
            name = f"{PREFIX}{os.getpid()}x{secrets.token_hex(2)}-inet"
            try:
                ip_batch(f"netns add {name}\n")
                ip_batch("link add p0 type veth peer name p1\n", name)
                _netem = shutil.which("tc") is not None and subprocess.run(
                    ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"],
                    capture_output=True, timeout=TIMEOUT).returncode == 0
            finally:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)
        return _netem


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir(netns.NETNS_DIR) if _NAME.match(n))
    except FileNotFoundError:
        return []


def kill_namespace_pids(names: list[str]) -> None:
    """SIGKILL whatever still runs in these namespaces (``ip netns del`` only removes the name)."""
    for name in names:
        result = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=TIMEOUT)
        for pid in result.stdout.split():
            if int(pid) != os.getpid():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def delete_namespaces(names: list[str]) -> None:
    if names:
        subprocess.run(["ip", "-force", "-b", "-"], input="".join(f"netns del {n}\n" for n in names),
                       text=True, capture_output=True, timeout=TIMEOUT)


def remove_stale() -> list[str]:
    """Delete lab namespaces whose owner process is gone; safe while other labs run."""
    stale = [n for n in lab_namespaces() if not _alive(int(_NAME.match(n).group(1)))]  # type: ignore[union-attr]
    kill_namespace_pids(stale)
    delete_namespaces(stale)
    return stale


class Topology:
    """The namespaces of one lab, by role; :meth:`build` then always :meth:`destroy`."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(2)}"
        self.names = {role: f"{self.tag}-{role}" for role in ROLES}
        self.created: list[str] = []
        self.use_netem = False

    def tapped(self, router: str) -> bool:
        """Whether this router's uplink is a TAP pair driven by the userspace delay process."""
        return self.network.router(router).delay_ms > 0 and not self.use_netem

    def build(self) -> None:
        """Create everything; on failure, remove what exists and re-raise."""
        if any(self.network.router(r).delay_ms > 0 for r in ROUTERS):
            self.use_netem = netem_available()
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    def _build(self) -> None:
        n = self.names
        links = [f"link add name eth0 netns {n['relay']} type veth peer name relay netns {n['inet']}\n"]
        for router in ROUTERS:
            if not self.tapped(router):
                links.append(f"link add name wan netns {n[router]} type veth peer name {router} netns {n['inet']}\n")
        links += [f"link add name eth0 netns {n[h]} type veth peer name {h} netns {n[ROUTER_OF[h]]}\n" for h in HOSTS]
        self.created = list(n.values())  # before the batch: a failure halfway leaves some names behind
        ip_batch("".join(f"netns add {name}\n" for name in n.values()))
        self._sysctls()
        ip_batch("".join(links))
        inet = ["link set lo up\n"]
        inet += [f"tuntap add dev {r} mode tap\n" for r in ROUTERS if self.tapped(r)]
        inet.append("link add br0 type bridge\nlink set br0 up\n")
        inet += [f"link set {p} master br0\nlink set {p} up\n" for p in ("relay", *ROUTERS)]
        ip_batch("".join(inet), n["inet"])
        ip_batch(f"link set lo up\naddr add {RELAY_IP}/{WAN_PREFIX} dev eth0\nlink set eth0 up\n", n["relay"])
        for router in ROUTERS:
            script = ["link set lo up\n"]
            if self.tapped(router):
                script.append("tuntap add dev wan mode tap\n")
            script.append(f"addr add {WAN_IP[router]}/{WAN_PREFIX} dev wan\nlink set wan up\n"
                          f"link add lan type bridge\naddr add {LAN_IP[router]}/{LAN_PREFIX} dev lan\nlink set lan up\n")
            script += [f"link set {h} master lan\nlink set {h} up\n" for h in HOSTS if ROUTER_OF[h] == router]
            ip_batch("".join(script), n[router])
        for host in HOSTS:
            ip_batch(f"link set lo up\naddr add {HOST_IP[host]}/{LAN_PREFIX} dev eth0\nlink set eth0 up\n"
                     f"route add default via {LAN_IP[ROUTER_OF[host]]}\n", n[host])
        for router in ROUTERS:
            spec = self.network.router(router)
            first_host = next(h for h in HOSTS if ROUTER_OF[h] == router)
            run(["ip", "netns", "exec", n[router], "nft", "-f", "-"],
                nat.ruleset(spec.nat, HOST_IP[first_host], spec.loss_pct, upnpd.nft_table() if spec.upnp else ""))
            if spec.delay_ms > 0 and self.use_netem:
                self._netem(router, spec)

    def _netem(self, router: str, spec: Router) -> None:
        delay = [f"{spec.delay_ms}ms"] + ([f"{spec.jitter_ms}ms"] if spec.jitter_ms else [])
        for ns, dev in ((self.names[router], "wan"), (self.names["inet"], router)):
            run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", *delay])

    def _sysctls(self) -> None:
        """rp_filter is copied from the root namespace and bridge-nf may be on: zero both everywhere."""
        for role, name in self.names.items():
            values = {key: "0" for key in _SYSCTLS_ZERO}
            if role in ROUTERS:
                values["net/ipv4/ip_forward"] = "1"
            netns.call_in(name, lambda values=values: _write_sysctls(values))

    def destroy(self) -> None:
        """Kill what runs inside, then delete every name this topology created."""
        kill_namespace_pids(self.created)
        delete_namespaces(self.created)
        self.created = []


def _write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = f"/proc/sys/{key}"
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write(value)
