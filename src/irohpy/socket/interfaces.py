"""Local interface addresses, for endpoints bound to a wildcard address.

An endpoint on ``0.0.0.0`` is reachable at every interface address; its
EndpointAddr must list them, as iroh does. Linux is read from the kernel
directly; elsewhere we fall back to what the host name resolves to.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import sys

SIOCGIFADDR = 0x8915


def _linux_v4() -> list[str]:
    out: list[str] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            out.append(socket.inet_ntoa(raw[20:24]))
    finally:
        probe.close()
    return out


def _linux_v6() -> list[str]:
    out: list[str] = []
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 6:
                    continue
                addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                if not addr.is_link_local:
                    out.append(str(addr))
    except OSError:
        pass
    return out


def _fallback(family: socket.AddressFamily) -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_DGRAM)
    except OSError:
        return []
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def interface_addrs(family: socket.AddressFamily) -> list[str]:
    """Unicast addresses of this host's interfaces in ``family`` (link-local v6 excluded)."""
    if sys.platform.startswith("linux"):
        addrs = _linux_v4() if family == socket.AF_INET else _linux_v6()
    else:
        addrs = _fallback(family)
    loopback = "127.0.0.1" if family == socket.AF_INET else "::1"
    return sorted(set(addrs) | {loopback}, key=lambda a: ipaddress.ip_address(a).packed)


def route_source(host: str) -> str | None:
    """The address the kernel's routes would send from to ``host`` now (None: no route). A
    UDP ``connect`` only looks the route up; nothing is sent."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return str(probe.getsockname()[0]).split("%")[0]
        except OSError:
            return None
