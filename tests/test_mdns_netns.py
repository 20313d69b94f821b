"""Real multicast between two namespaces on one bridge: B discovers A through iroh-format mDNS."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from irohpy.base.keys import SecretKey
from irohpy.lab.process import die_with_parent
from tests.netns_lab import HOSTS, HOSTS_V6, lan

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent


async def _spawn(ns: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-m", "tests.netns_lab", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent(),
    )


async def _events(proc: asyncio.subprocess.Process, until: str, timeout: float) -> list[dict[str, object]]:
    """JSON events from the node until one named ``until`` (or the node ends)."""
    assert proc.stdout is not None
    events: list[dict[str, object]] = []
    async with asyncio.timeout(timeout):
        while line := await proc.stdout.readline():
            events.append(json.loads(line))
            if events[-1]["event"] == until:
                break
    return events


async def _stop(proc: asyncio.subprocess.Process) -> bytes:
    if proc.returncode is None:
        proc.kill()
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    return err


@pytest.mark.parametrize(
    ("iface_a", "iface_b", "addr_a"),
    [
        (HOSTS["a"], HOSTS["b"], f"{HOSTS['a']}:4433"),
        (f"{HOSTS_V6['a']}%eth0", f"{HOSTS_V6['b']}%eth0", f"[{HOSTS_V6['a']}]:4433"),
    ],
    ids=["ipv4", "ipv6"],
)
async def test_browser_in_b_discovers_announcer_in_a(iface_a: str, iface_b: str, addr_a: str) -> None:
    announcer_id = SecretKey(bytes([1]) * 32).public()
    with lan() as ns:
        procs: list[asyncio.subprocess.Process] = []
        try:
            procs.append(await _spawn(ns["a"], "announce", iface_a, "1", "15"))
            assert (await _events(procs[0], "ready", 10))[-1]["id"] == str(announcer_id)
            procs.append(await _spawn(ns["b"], "browse", iface_b, "2", "8", str(announcer_id)))
            events = await _events(procs[1], "done", 15)
        finally:
            errors = [await _stop(p) for p in procs]
        found = [e for e in events if e["event"] == "found"]
        assert found, f"B never saw A: {events} {errors}"
        assert found[0] == {
            "event": "found",
            "id": str(announcer_id),
            "provenance": "mdns",
            "addrs": [addr_a],
            "relays": ["https://relay-announce.example/"],
        }


async def _netns_list() -> bytes:
    proc = await asyncio.create_subprocess_exec("ip", "netns", "list", stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    return out


async def test_lab_is_removed_afterwards() -> None:
    with lan() as ns:
        listed = await _netns_list()
        assert all(name.encode() in listed for name in ns.values())
    listed = await _netns_list()
    assert not any(name.encode() in listed for name in ns.values())


async def test_two_lookups_in_one_process_find_each_other_over_loopback() -> None:
    """IP_MULTICAST_LOOP lets two instances on one host see each other (lo is ours: unshared netns)."""
    from irohpy.base.addr import IpAddr  # noqa: PLC0415
    from irohpy.base.relay_url import RelayUrl  # noqa: PLC0415
    from irohpy.lookup.base import EndpointData, EndpointInfo  # noqa: PLC0415
    from irohpy.lookup.mdns import MdnsLookup  # noqa: PLC0415

    proc = await asyncio.create_subprocess_exec("ip", "link", "set", "lo", "multicast", "on")
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    one, two = (SecretKey(bytes([n]) * 32).public() for n in (7, 8))
    data_one = EndpointData(frozenset({RelayUrl("https://one.example/")}), frozenset({IpAddr("127.0.0.1", 1111)}), "one")
    async with MdnsLookup(one, interfaces=["127.0.0.1"], resolve_timeout=5) as a, MdnsLookup(
        two, interfaces=["127.0.0.1"], resolve_timeout=5
    ) as b:
        a.publish(data_one)
        b.publish(EndpointData(ip_addrs=frozenset({IpAddr("127.0.0.1", 2222)})))
        subscription = b.subscribe()
        try:
            seen = await asyncio.wait_for(anext(subscription), 5)
        finally:
            await subscription.aclose()
        assert seen == EndpointInfo(one, data_one)
        items = [item async for item in a.resolve(two)]
        assert [i.info.endpoint_id for i in items] == [two]


async def test_endpoint_dials_by_id_alone_over_mdns_between_namespaces() -> None:
    """Two irohpy endpoints on one LAN, each in its own namespace, with mDNS as the only lookup."""
    server_id = SecretKey(bytes([5]) * 32).public()
    with lan("mdnsep") as ns:
        procs: list[asyncio.subprocess.Process] = []
        try:
            procs.append(await _spawn(ns["a"], "serve", HOSTS["a"], "5", "20"))
            assert (await _events(procs[0], "ready", 10))[-1]["id"] == str(server_id)
            procs.append(await _spawn(ns["b"], "dial", HOSTS["b"], "6", "15", str(server_id)))
            events = await _events(procs[1], "done", 20)
        finally:
            errors = [await _stop(p) for p in procs]
        echo = [e for e in events if e["event"] == "echo"]
        assert echo, f"no connection by id over mDNS: {events} {errors}"
        assert echo[0]["reply"] == "found you by id" and echo[0]["remote"] == str(server_id)
        assert echo[0]["path"][0] == HOSTS["a"]
