"""The NAT lab itself: router behaviours checked with raw UDP sockets, network changes, cleanup."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irohpy.errors import LabError
from irohpy.lab import HOST_IP, RELAY_IP, Lab, NatMode, Network, Router, conntrack, nat, netns, pairs, topology

WAN_A = topology.WAN_IP["ra"]
WAN_B = topology.WAN_IP["rb"]
REASON = topology.unavailable_reason()
needs_lab = pytest.mark.skipif(REASON is not None, reason=REASON or "")


class Sockets:
    """UDP sockets created inside lab namespaces; all closed at the end of the test."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.socks: list[socket.socket] = []

    def udp(self, role: str, port: int = 0) -> socket.socket:
        with self.lab.enter(role):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(sock)
        sock.bind(("0.0.0.0", port))
        sock.settimeout(1.0)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@pytest.fixture
def sockets() -> Iterator[list[Sockets]]:
    made: list[Sockets] = []
    yield made
    for s in made:
        s.close()


def _recv(sock: socket.socket, timeout: float = 1.0) -> tuple[bytes, tuple[str, int]] | None:
    sock.settimeout(timeout)
    try:
        return sock.recvfrom(2048)
    except TimeoutError:
        return None


async def _observed(sock: socket.socket, relay: socket.socket, payload: bytes = b"x") -> tuple[str, int]:
    sock.sendto(payload, (RELAY_IP, relay.getsockname()[1]))
    got = await asyncio.to_thread(_recv, relay)
    assert got is not None, "the relay namespace got nothing"
    return got[1]


# -- pure parts ---------------------------------------------------------------


def test_rulesets_per_mode() -> None:
    assert 'oifname "wan" masquerade\n' in nat.ruleset(NatMode.CONE, "198.51.100.2")
    assert "masquerade random" in nat.ruleset(NatMode.SYMMETRIC, "198.51.100.2")
    assert "meta l4proto udp drop" in nat.ruleset(NatMode.UDP_BLOCKED, "198.51.100.2")
    full = nat.ruleset(NatMode.FULL_CONE_PORT, "198.51.100.2")
    assert f"udp dport {nat.FULL_CONE_PORT} dnat to 198.51.100.2" in full
    lossy = nat.ruleset(NatMode.CONE, "198.51.100.2", loss_pct=5)
    # Loss hits established flows too, so it must come before the established accept.
    forward = lossy[lossy.index("chain forward"):]
    assert forward.index("numgen random mod 10000 < 500") < forward.index("ct state established,related accept")


def test_conntrack_flush_request_layout() -> None:
    request = conntrack.flush_request(7)
    assert len(request) == 20
    assert request[4:6] == ((1 << 8) | 2).to_bytes(2, "little")


@given(st.binary(max_size=64))
def test_conntrack_ack_parser_rejects_garbage(data: bytes) -> None:
    try:
        conntrack.parse_ack(data, 1)
    except LabError:
        pass


def test_public_mapping_is_the_reply_tuples_destination() -> None:
    lines = [
        "ipv4     2 udp      17 29 src=198.51.100.130 dst=203.0.113.21 sport=34136 dport=58559 "
        "src=203.0.113.21 dst=203.0.113.22 sport=58559 dport=34136 mark=0 zone=0 use=2",
        "ipv4     2 udp      17 29 src=198.51.100.140 dst=203.0.113.21 sport=34136 dport=58559 "
        "src=203.0.113.21 dst=203.0.113.22 sport=58559 dport=13563 mark=0 zone=0 use=2",
    ]
    assert conntrack.public_mapping(lines, "198.51.100.140", "203.0.113.21") == ("203.0.113.22", 13563)
    assert conntrack.public_mapping(lines, "198.51.100.140", "203.0.113.10") is None


@given(st.lists(st.text(max_size=120), max_size=4), st.text(max_size=16), st.text(max_size=16))
def test_public_mapping_never_raises(lines: list[str], host: str, remote: str) -> None:
    found = conntrack.public_mapping(lines, host, remote)
    assert found is None or isinstance(found[1], int)


@given(st.text(max_size=40))
def test_peer_pairs_parse_or_raise_lab_error(text: str) -> None:
    try:
        parsed = pairs.parse_pairs(text)
    except LabError:
        return
    assert parsed and all(str(p) in pairs.PAIRS for p in parsed)


def test_peer_pairs() -> None:
    assert [str(p) for p in pairs.parse_pairs("all")] == list(pairs.PAIRS)
    assert pairs.parse_pairs(" rust-irohpy,irohpy-rust ") == [pairs.Pair("rust", "irohpy"), pairs.Pair("irohpy", "rust")]


def test_stale_names_are_recognised() -> None:
    assert topology._NAME.match("irohlab123x0a1b-relay")
    assert not topology._NAME.match("irohlab123x0a1b-other")
    assert not topology._NAME.match("mdns123x0a1b-a")


# -- the lab on this machine ---------------------------------------------------------


def _lab_names(tag: str) -> set[str]:
    """This lab's namespaces only: other test runs may build labs at the same time."""
    return {n for n in topology.lab_namespaces() if n.startswith(tag)}


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


def _ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


@needs_lab
async def test_cone_keeps_one_mapping_and_the_port(sockets: list[Sockets]) -> None:
    async with Lab(Network(services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay1, relay2 = s.udp("relay"), s.udp("relay")
        a1 = s.udp("a1", 4444)
        first = await _observed(a1, relay1)
        second = await _observed(a1, relay2)
        assert first == second == (WAN_A, 4444)
        assert any("src=198.51.100.2" in line and "dport=4444" in line for line in lab.conntrack("ra"))
        assert conntrack.public_mapping(lab.conntrack("ra"), "198.51.100.2", RELAY_IP) == (WAN_A, 4444)


@needs_lab
async def test_symmetric_maps_each_destination_to_its_own_port(sockets: list[Sockets]) -> None:
    async with Lab(Network(a=Router(NatMode.SYMMETRIC), services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay1, relay2 = s.udp("relay"), s.udp("relay")
        a1 = s.udp("a1", 4444)
        first = await _observed(a1, relay1)
        second = await _observed(a1, relay2)
        assert first[0] == second[0] == WAN_A
        assert first[1] != second[1]


@needs_lab
async def test_cone_drops_unsolicited_packets_and_cone_cone_punching_works(sockets: list[Sockets]) -> None:
    async with Lab(Network(services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay = s.udp("relay")
        a1, b1 = s.udp("a1"), s.udp("b1")
        map_a = await _observed(a1, relay)
        map_b = await _observed(b1, relay)
        b1.sendto(b"unsolicited", map_a)
        assert await asyncio.to_thread(_recv, a1, 0.5) is None
        # Simultaneous open: each side sends to the other's mapping, then both directions flow.
        a1.sendto(b"punch a", map_b)
        b1.sendto(b"punch b", map_a)
        a1.sendto(b"punch a", map_b)
        got_b = await asyncio.to_thread(_recv, b1)
        got_a = await asyncio.to_thread(_recv, a1)
        assert got_b is not None and got_b[1] == map_a
        assert got_a is not None and got_a[1] == map_b
        assert any(f"dst={WAN_B}" in line for line in lab.conntrack("ra"))


@needs_lab
async def test_symmetric_symmetric_punching_fails(sockets: list[Sockets]) -> None:
    async with Lab(Network(Router(NatMode.SYMMETRIC), Router(NatMode.SYMMETRIC), services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay = s.udp("relay")
        a1, b1 = s.udp("a1"), s.udp("b1")
        map_a = await _observed(a1, relay)
        map_b = await _observed(b1, relay)
        for _ in range(3):
            a1.sendto(b"punch a", map_b)
            b1.sendto(b"punch b", map_a)
        assert await asyncio.to_thread(_recv, a1, 0.5) is None
        assert await asyncio.to_thread(_recv, b1, 0.5) is None


@needs_lab
async def test_full_cone_port_is_reachable_unsolicited(sockets: list[Sockets]) -> None:
    async with Lab(Network(a=Router(NatMode.FULL_CONE_PORT), services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        a1 = s.udp("a1", nat.FULL_CONE_PORT)
        b1 = s.udp("b1")
        b1.sendto(b"hello", (WAN_A, nat.FULL_CONE_PORT))
        got = await asyncio.to_thread(_recv, a1)
        assert got is not None and got[0] == b"hello" and got[1][0] == WAN_B


@needs_lab
async def test_udp_blocked_lets_only_tcp_out(sockets: list[Sockets]) -> None:
    async with Lab(Network(a=Router(NatMode.UDP_BLOCKED), services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay = s.udp("relay")
        a1 = s.udp("a1")
        a1.sendto(b"x", (RELAY_IP, relay.getsockname()[1]))
        assert await asyncio.to_thread(_recv, relay, 0.5) is None
        with lab.enter("relay"):
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with lab.enter("a1"):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with server, client:
            server.bind((RELAY_IP, 0))
            server.listen()
            client.settimeout(2)
            client.connect(server.getsockname())
            conn, peer = server.accept()
            conn.close()
            assert peer[0] == WAN_A


@needs_lab
async def test_loss_drops_about_the_configured_share(sockets: list[Sockets]) -> None:
    async with Lab(Network(a=Router(loss_pct=50), services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay = s.udp("relay")
        a1 = s.udp("a1")
        for i in range(200):
            a1.sendto(i.to_bytes(2, "big"), (RELAY_IP, relay.getsockname()[1]))
        received = 0
        while await asyncio.to_thread(_recv, relay, 0.3) is not None:
            received += 1
        assert 60 < received < 140


@needs_lab
async def test_uplink_delay(sockets: list[Sockets]) -> None:
    async with Lab(Network(a=Router(delay_ms=25), services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay = s.udp("relay")
        a1 = s.udp("a1")
        await _observed(a1, relay, b"warm up")  # ARP on the way
        start = time.perf_counter()
        got = await _observed(a1, relay)
        relay.sendto(b"back", got)
        assert await asyncio.to_thread(_recv, a1) is not None
        assert time.perf_counter() - start >= 0.045


@needs_lab
async def test_network_changes(sockets: list[Sockets]) -> None:
    async with Lab(Network(services=False)) as lab:
        s = Sockets(lab)
        sockets.append(s)
        relay = s.udp("relay")
        a1 = s.udp("a1", 5555)
        before = await _observed(a1, relay)
        # A new address on the same socket: the old mapping still holds the port, so the NAT picks another.
        await lab.readdress("a1", "198.51.100.20")
        assert lab.ip("a1") == "198.51.100.20"
        after = await _observed(a1, relay)
        assert after[0] == WAN_A and after != before
        await lab.flush_conntrack("ra")
        assert lab.conntrack("ra") == []
        assert await _observed(a1, relay) == (WAN_A, 5555)
        await lab.block_udp("ra")
        a1.sendto(b"blocked", (RELAY_IP, relay.getsockname()[1]))
        assert await asyncio.to_thread(_recv, relay, 0.5) is None
        await lab.unblock_udp("ra")
        assert (await _observed(a1, relay))[0] == WAN_A
        await lab.set_default_route("a1", None)
        with pytest.raises(OSError):
            a1.sendto(b"no route", (RELAY_IP, relay.getsockname()[1]))
        await lab.restore_default_route("a1")
        assert (await _observed(a1, relay))[0] == WAN_A


@needs_lab
async def test_enter_switches_only_the_block() -> None:
    own = os.stat("/proc/thread-self/ns/net").st_ino
    async with Lab(Network(services=False)) as lab:
        with lab.enter("b1"):
            inside = os.stat("/proc/thread-self/ns/net").st_ino
            names = [name for _, name in socket.if_nameindex()]
        assert os.stat("/proc/thread-self/ns/net").st_ino == own != inside
        assert sorted(names) == ["eth0", "lo"]
        with pytest.raises(LabError):
            lab.ns("nowhere")
    with pytest.raises(LabError):
        with netns.enter(lab.ns("b1")):
            pass


@needs_lab
async def test_teardown_leaves_nothing() -> None:
    links, rules = _links(), _ruleset()
    lab = Lab(Network(a=Router(delay_ms=5), b=Router(NatMode.SYMMETRIC)))
    async with lab:
        assert len(_lab_names(lab.topology.tag)) == len(topology.ROLES)
        assert len(lab.processes) >= 2  # relay and DNS server (and the delay line without netem)
        pids = [p.pid for p in lab.processes]
    assert not _lab_names(lab.topology.tag)
    assert _links() == links
    assert _ruleset() == rules
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert lab.timings["setup_s"] > 0 and lab.timings["teardown_s"] > 0


_OWNER = """
import asyncio
from irohpy.lab import Lab, Network, Router

async def main():
    async with Lab(Network(a=Router(delay_ms=5), services=False)) as lab:
        await lab.spawn("a1", ["sleep", "60"])
        print(lab.topology.tag, *(p.pid for p in lab.processes), flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


@needs_lab
async def test_children_die_with_a_killed_owner_and_its_lab_is_removed_later() -> None:
    owner = await asyncio.create_subprocess_exec(sys.executable, "-c", _OWNER, stdout=asyncio.subprocess.PIPE)
    try:
        assert owner.stdout is not None
        tag, *pids = (await asyncio.wait_for(owner.stdout.readline(), 60)).decode().split()
    finally:
        owner.kill()
        await owner.communicate()
    assert len(pids) == 2  # the delay line (in this namespace) and sleep (in a1, through ip netns exec)
    for pid in pids:
        assert await _gone(int(pid)), f"child {pid} outlived its killed owner"
    left = _lab_names(tag)
    # All of its namespaces stay for remove_stale(), or none when another lab, started meanwhile
    # (a concurrent run), has already removed them: never some.
    assert len(left) in (0, len(topology.ROLES))
    assert left <= set(topology.remove_stale())
    assert not _lab_names(tag)


@needs_lab
def test_failed_setup_removes_what_it_created() -> None:
    topo = topology.Topology(Network(services=False))
    clash = topo.names["rb"]
    topology.ip_batch(f"netns add {clash}\n")
    try:
        with pytest.raises(LabError):
            topo.build()
    finally:
        topology.delete_namespaces([clash])
    assert not _lab_names(topo.tag)


@needs_lab
def test_stale_labs_of_dead_owners_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{topology.PREFIX}{dead.pid}xdead-inet"
    live = f"{topology.PREFIX}{os.getpid()}xbeef-inet"
    topology.ip_batch(f"netns add {stale}\nnetns add {live}\n")
    try:
        removed = topology.remove_stale()
        assert stale in removed
        assert live in topology.lab_namespaces() and stale not in topology.lab_namespaces()
    finally:
        topology.delete_namespaces([stale, live])


def test_lab_refuses_clearly_without_root() -> None:
    if REASON is None:
        pytest.skip("the lab is available here")
    with pytest.raises(LabError, match="NAT lab needs"):
        asyncio.run(Lab().__aenter__())
