"""Home-router behaviours as nftables rulesets (pure text, loaded by the topology).

Every router filters like a real one: input and forward policy drop, with
established flows and LAN → WAN allowed. The input filter matters: without it an
early punch from the peer creates a confirmed conntrack entry that makes
masquerade move our own mapping to another port, and cone/cone punching fails.
"""

from __future__ import annotations

import enum

FULL_CONE_PORT = 40000
"""The UDP port a ``full_cone_port`` router forwards from its WAN address to the first host."""


class NatMode(enum.StrEnum):
    """How a router maps and filters; see docs/concepts/nat-traversal.md."""

    CONE = "cone"
    """Endpoint-independent mapping (masquerade keeps the port), port-restricted filtering."""
    FULL_CONE_PORT = "full_cone_port"
    """Cone, plus UDP port 40000 on the WAN address forwarded to the first host: one-sided reachability."""
    SYMMETRIC = "symmetric"
    """A new random source port per destination (``masquerade random``)."""
    UDP_BLOCKED = "udp_blocked"
    """Cone, but no UDP leaves the home except DNS (port 53): only TCP (the relay over HTTP) works."""


def loss_rules(loss_pct: float) -> str:
    """Drop ``loss_pct`` percent of forwarded packets in each direction, established flows too."""
    if loss_pct <= 0:
        return ""
    cutoff = round(loss_pct * 100)
    return (f'iifname "wan" numgen random mod 10000 < {cutoff} counter drop\n'
            f'oifname "wan" numgen random mod 10000 < {cutoff} counter drop\n')


def ruleset(mode: NatMode, host_ip: str, loss_pct: float = 0.0, upnp_table: str = "") -> str:
    """The whole ruleset for one router; ``host_ip`` is the full-cone forward target.

    ``upnp_table`` (miniupnpd's own table, see :mod:`irohpy.lab.upnpd`) is appended, and the
    forward filter then accepts what it port-forwards (``ct status dnat``), as home routers do.
    Only LAN traffic is then masqueraded: the router's own packets keep their ports, which
    miniupnpd's STUN check of the WAN side requires.
    """
    forward_extra = 'iifname "wan" ct status dnat accept\n' if upnp_table else ""
    lan_only = 'iifname "lan" ' if upnp_table else ""
    prerouting = ""
    masquerade = "masquerade"
    if mode is NatMode.SYMMETRIC:
        masquerade = "masquerade random"
    elif mode is NatMode.UDP_BLOCKED:
        forward_extra += 'iifname "lan" udp dport 53 accept\n  iifname "lan" meta l4proto udp drop\n'
    elif mode is NatMode.FULL_CONE_PORT:
        forward_extra = 'iifname "wan" ct status dnat accept\n'
        prerouting = (
            "chain prerouting { type nat hook prerouting priority dstnat; policy accept;\n"
            f'  iifname "wan" udp dport {FULL_CONE_PORT} dnat to {host_ip}\n}}\n'
        )
    return (
        "table inet fw {\n"
        "chain input { type filter hook input priority filter; policy drop;\n"
        '  ct state established,related accept\n  iif "lo" accept\n  iifname "lan" accept\n'
        "  meta l4proto icmp accept\n}\n"
        "chain forward { type filter hook forward priority filter; policy drop;\n"
        f"{loss_rules(loss_pct)}"
        "  ct state established,related accept\n"
        f"{forward_extra}"
        '  iifname "lan" oifname "wan" accept\n}\n'
        "}\n"
        "table ip nat {\n"
        f"{prerouting}"
        "chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n"
        f'  oifname "wan" {lan_only}{masquerade}\n}}\n'
        "}\n"
        f"{upnp_table}"
    )


BLOCK_UDP_TABLE = "labblock"


def block_udp_rules(peer_ip: str | None = None) -> str:
    """A separate table that drops UDP between LAN and WAN (only to and from ``peer_ip`` if
    given); deleting the table unblocks it."""
    match = f"ip daddr {peer_ip} " if peer_ip else ""
    back = f"ip saddr {peer_ip} " if peer_ip else ""
    return (
        f"table inet {BLOCK_UDP_TABLE} {{\n"
        "chain forward { type filter hook forward priority filter - 10; policy accept;\n"
        f'  iifname "lan" {match}meta l4proto udp drop\n  iifname "wan" {back}meta l4proto udp drop\n}}\n}}\n'
    )


COUNT_TABLE = "labcount"
COUNTERS = ("relay_up", "relay_down", "direct_up", "direct_down", "outside")
LAB_V4 = "198.51.100.0/24, 203.0.113.0/24, 224.0.0.0/4, 255.255.255.255"
"""Where lab hosts may send IPv4: the two LANs, the lab's internet, multicast and broadcast."""
LAB_V6 = "fe80::/10, ff00::/8"
"""Where lab hosts may send IPv6: they have link-local addresses only."""


def count_rules(relay_ip: str, relay_port: int) -> str:
    """Named counters of a router's forwarded traffic: TCP to and from the relay, and all other UDP.

    Upstream is counted before any filter (what the hosts sent), downstream after the
    firewall (what reached the hosts); DNS to the relay is not counted. ``outside`` counts
    packets from the LAN addressed anywhere but the lab, as they arrive (the router has no
    route for them, so they never leave): a peer that tries to reach the real internet
    shows up there.
    """
    return (
        f"table inet {COUNT_TABLE} {{\n"
        + "".join(f"counter {name} {{}}\n" for name in COUNTERS)
        + "chain outside { type filter hook prerouting priority raw; policy accept;\n"
        f'  iifname "lan" ip daddr != {{ {LAB_V4} }} counter name "outside"\n'
        f'  iifname "lan" ip6 daddr != {{ {LAB_V6} }} counter name "outside"\n}}\n'
        + "chain up { type filter hook forward priority filter - 20; policy accept;\n"
        f'  iifname "lan" oifname "wan" ip daddr {relay_ip} tcp dport {relay_port} counter name "relay_up"\n'
        f'  iifname "lan" oifname "wan" ip daddr != {relay_ip} meta l4proto udp counter name "direct_up"\n}}\n'
        "chain down { type filter hook forward priority filter + 20; policy accept;\n"
        f'  iifname "wan" oifname "lan" ip saddr {relay_ip} tcp sport {relay_port} counter name "relay_down"\n'
        f'  iifname "wan" oifname "lan" ip saddr != {relay_ip} meta l4proto udp counter name "direct_down"\n}}\n'
        "}\n"
    )
