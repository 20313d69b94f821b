"""Port mapping against the real miniupnpd on a lab router running symmetric NAT.

For each protocol the host maps its socket's port, a packet from the public side
(the relay namespace) to the mapped WAN address reaches that socket, the echo comes
back from the mapped address, and closing the Portmapper deletes miniupnpd's forward.
"""

from __future__ import annotations

import socket

import pytest

from irohpy.lab import Lab, NatMode, Network, Router, topology, upnpd
from irohpy.lab.process import python

REASON = topology.unavailable_reason() or upnpd.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(120)]
WAIT = 20.0


@pytest.mark.parametrize("protocol", ["pcp", "nat_pmp", "upnp"])
async def test_symmetric_router_maps_a_port_that_reaches_the_host(protocol: str) -> None:
    async with Lab(Network(a=Router(NatMode.SYMMETRIC, upnp=True))) as lab:
        host = await lab.spawn("a1", python("-m", "tests.portmap_host", protocol, str(WAIT)), "host")
        mapped = await host.expect("mapped", WAIT)
        probe = await host.expect("probe", WAIT)
        assert mapped["protocol"] == protocol
        assert probe[protocol], probe
        external = (mapped["external"][0], int(mapped["external"][1]))
        assert external[0] == lab.ip("ra")
        assert f"dport {external[1]} dnat ip to {lab.ip('a1')}:{mapped['local_port']}" in lab.upnp_forwards("ra")
        with lab.enter("relay"):
            outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with outside:
            outside.settimeout(WAIT)
            outside.sendto(b"from the internet", external)
            received = await host.expect("received", WAIT)
            assert received["data"] == "from the internet"
            assert received["sender"][0] == lab.ip("relay")
            echo, source = outside.recvfrom(100)
            assert echo == b"echo:from the internet" and source == external
            outside.sendto(b"close", external)
            await host.expect("released", WAIT)
        assert "dnat" not in lab.upnp_forwards("ra"), "closing must delete the mapping"


async def test_without_a_mapping_the_symmetric_router_drops_unsolicited_packets() -> None:
    """The control: the same packet to the host's port without a mapping never arrives."""
    async with Lab(Network(a=Router(NatMode.SYMMETRIC, upnp=True))) as lab:
        with lab.enter("a1"):
            inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with lab.enter("relay"):
            outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with inside, outside:
            inside.bind(("0.0.0.0", 0))
            inside.settimeout(1.0)
            outside.sendto(b"unsolicited", (lab.ip("ra"), inside.getsockname()[1]))
            with pytest.raises(TimeoutError):
                inside.recvfrom(100)


async def test_new_address_means_a_new_mapping() -> None:
    """The host is renumbered (as by DHCP): within the route-table poll it maps again, to its new
    address, and the new external address reaches it."""
    async with Lab(Network(a=Router(NatMode.SYMMETRIC, upnp=True))) as lab:
        host = await lab.spawn("a1", python("-m", "tests.portmap_host", "pcp", str(WAIT)), "host")
        first = await host.expect("mapped", WAIT)
        await lab.readdress("a1", "198.51.100.40")
        second = await host.expect("mapped", WAIT)
        assert f"dnat ip to 198.51.100.40:{second['local_port']}" in lab.upnp_forwards("ra")
        external = (second["external"][0], int(second["external"][1]))
        with lab.enter("relay"):
            outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with outside:
            outside.sendto(b"after the change", external)
            assert (await host.expect("received", WAIT))["data"] == "after the change"
            outside.sendto(b"close", external)
            await host.expect("released", WAIT)
        assert first["local_port"] == second["local_port"]
