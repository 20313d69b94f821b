"""The real ``miniupnpd`` (Debian's nftables build) on a lab router: UPnP IGD, NAT-PMP and PCP.

It runs in the router's namespace, answers on the LAN side only, and writes its
port forwards into the router's ``inet miniupnpd`` table (chains laid out as its
``nft_init.sh`` does); the router's forward filter accepts what it DNATs.
miniupnpd refuses to forward from a reserved WAN address (the lab's are RFC 5737
documentation addresses), even one given as ``ext_ip``, unless a STUN check shows
the WAN side unfiltered: so it asks the lab relay's STUN service, which it passes.
"""

from __future__ import annotations

import os
import shutil
import uuid

BINARY = "/usr/sbin/miniupnpd"
HTTP_PORT = 5000
TABLE = "miniupnpd"
READY = "Listening for NAT-PMP/PCP traffic"
MIN_LIFETIME = 120
MAX_LIFETIME = 86400


def available() -> bool:
    return os.access(BINARY, os.X_OK) and shutil.which("nft") is not None


def unavailable_reason() -> str | None:
    if available():
        return None
    return "miniupnpd is not installed (apt-get install miniupnpd-nftables)"


def nft_table() -> str:
    """The chains miniupnpd fills: a filter chain and the two NAT chains, reached from base chains."""
    return (
        f"table inet {TABLE} {{\n"
        "chain forward { type filter hook forward priority filter - 5; policy accept; jump miniupnpd; }\n"
        "chain miniupnpd { }\n"
        "chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd; }\n"
        "chain postrouting { type nat hook postrouting priority srcnat - 5; policy accept; "
        "jump postrouting_miniupnpd; }\n"
        "chain prerouting_miniupnpd { }\n"
        "chain postrouting_miniupnpd { }\n"
        "}\n"
    )


def config(stun: tuple[str, int], lan_prefix: str, state_dir: str) -> str:
    """miniupnpd.conf: LAN ``lan`` listens, WAN ``wan`` forwards; only the LAN may map, only to itself."""
    return (
        "ext_ifname=wan\n"
        "ext_perform_stun=yes\n"
        f"ext_stun_host={stun[0]}\n"
        f"ext_stun_port={stun[1]}\n"
        "listening_ip=lan\n"
        f"http_port={HTTP_PORT}\n"
        "enable_natpmp=yes\n"
        "enable_upnp=yes\n"
        "ipv6_disable=yes\n"
        "secure_mode=yes\n"
        "system_uptime=no\n"
        "notify_interval=60\n"
        f"min_lifetime={MIN_LIFETIME}\n"
        f"max_lifetime={MAX_LIFETIME}\n"
        f"upnp_table_name={TABLE}\n"
        f"upnp_nat_table_name={TABLE}\n"
        f"lease_file={state_dir}/leases\n"
        f"minissdpdsocket={state_dir}/minissdpd.sock\n"
        f"uuid={uuid.uuid4()}\n"
        f"allow 1024-65535 {lan_prefix} 1024-65535\n"
        "deny 0-65535 0.0.0.0/0 0-65535\n"
    )


def argv(config_path: str, pid_path: str) -> list[str]:
    return [BINARY, "-d", "-f", config_path, "-P", pid_path]
