"""Which router to ask: the IPv4 default gateway from the kernel, and our address towards it."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

ROUTE_TABLE = Path("/proc/net/route")


@dataclass(frozen=True)
class Home:
    """The default gateway and the local address the kernel uses to reach it."""

    gateway: str
    local_ip: str


def parse_route_table(text: str) -> str | None:
    """The default route's gateway in ``/proc/net/route`` text (lowest metric wins), or None."""
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 7 or fields[1] != "00000000" or fields[2] == "00000000":
            continue
        try:
            gateway = ipaddress.IPv4Address(struct.pack("<I", int(fields[2], 16)))
            metric = int(fields[6])
        except (ValueError, struct.error):
            continue
        if best is None or metric < best[0]:
            best = (metric, str(gateway))
    return best[1] if best else None


def default_gateway(route_table: Path = ROUTE_TABLE) -> str | None:
    try:
        return parse_route_table(route_table.read_text())
    except OSError:
        return None


def local_ip_towards(gateway: str) -> str | None:
    """Our source address towards ``gateway`` (a UDP connect picks it; it sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((gateway, 9))
            return str(s.getsockname()[0])
    except OSError:
        return None


def find_home(route_table: Path = ROUTE_TABLE) -> Home | None:
    gateway = default_gateway(route_table)
    if gateway is None:
        return None
    local = local_ip_towards(gateway)
    return Home(gateway, local) if local else None
