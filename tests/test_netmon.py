"""Network changes as the kernel reports them, and the local address of a path.

The monitor and the route lookups run inside a fresh network namespace (root only), so adding
and removing addresses touches nothing of the host's.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from irohpy.lab import netns
from irohpy.socket import netmon
from irohpy.socket.interfaces import route_source
from irohpy.socket.transport import Transport

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"netmon{os.getpid()}x{secrets.token_hex(2)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "eth1", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10, capture_output=True)


@needs_root
async def test_an_address_change_wakes_the_monitor_at_once(namespace: str) -> None:
    with netns.enter(namespace):
        monitor = netmon.NetworkMonitor()
    try:
        assert monitor.uses_netlink
        started = time.monotonic()
        await asyncio.to_thread(_ip, "-n", namespace, "addr", "add", "10.77.0.1/24", "dev", "eth0")
        # Woken by the kernel's message, long before the safety poll would have.
        await asyncio.wait_for(monitor.changed(), netmon.SAFETY_POLL / 3)
        assert time.monotonic() - started < netmon.SAFETY_POLL / 3
    finally:
        monitor.close()


@needs_root
async def test_a_burst_of_changes_makes_one_wake_up(namespace: str) -> None:
    with netns.enter(namespace):
        monitor = netmon.NetworkMonitor()
    try:
        script = "addr add 10.77.0.1/24 dev eth0\naddr del 10.77.0.1/24 dev eth0\naddr add 10.77.0.2/24 dev eth0\n"
        await asyncio.to_thread(
            subprocess.run, ["ip", "-n", namespace, "-b", "-"], input=script, text=True, check=True, timeout=10
        )
        await asyncio.wait_for(monitor.changed(), netmon.SAFETY_POLL / 3)
        # Everything the burst said (all queued before we waited) was taken in that one wake-up.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(monitor.changed(), 5 * netmon.DEBOUNCE)
    finally:
        monitor.close()


@needs_root
async def test_a_paths_local_address_is_the_one_its_route_picks(namespace: str) -> None:
    _ip("-n", namespace, "addr", "add", "10.77.0.1/24", "dev", "eth0")
    with netns.enter(namespace):
        assert route_source("10.77.0.9") == "10.77.0.1"
        assert route_source("192.0.2.1") is None  # no route there
        assert route_source("127.0.0.1") == "127.0.0.1"
        transport = Transport(lambda batch: None)
    try:
        with netns.enter(namespace):
            transport.bind([("0.0.0.0", 0)])
        bound = Transport(lambda batch: None)
        with netns.enter(namespace):
            bound.bind([("10.77.0.1", 0)])
        try:
            # A socket on every address sends from what the route picks when asked, one bound
            # to an address always from that one; no socket of the family, no answer.
            with netns.enter(namespace):
                assert transport.source_ip("10.77.0.9") == "10.77.0.1"
            assert bound.source_ip("127.0.0.1") == "10.77.0.1"
            assert transport.source_ip("fd00::1") is None
        finally:
            bound.close()
    finally:
        transport.close()
