"""Reading and flushing a router's conntrack table without conntrack-tools.

Flushing is one ctnetlink ``IPCTNL_MSG_CT_DELETE`` request with no attributes,
sent from a netlink socket created inside the router's namespace. After a flush
the router forgets every NAT mapping, as a rebooted home router would.
"""

from __future__ import annotations

import os
import socket
import struct

from irohpy.errors import LabError
from irohpy.lab import netns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")


def flush_request(seq: int) -> bytes:
    """A ctnetlink delete-all request for IPv4 entries."""
    body = _NFGEN.pack(socket.AF_INET, 0, 0)
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse_ack(data: bytes, seq: int) -> None:
    """Raise :class:`LabError` unless ``data`` is a zero-error ack for request ``seq``."""
    if len(data) < _HEADER.size + 4:
        raise LabError(f"short netlink answer ({len(data)} bytes)")
    _, kind, _, answer_seq, _ = _HEADER.unpack_from(data)
    if kind != NLMSG_ERROR or answer_seq != seq:
        raise LabError(f"unexpected netlink answer type {kind} seq {answer_seq}")
    (error,) = struct.unpack_from("=i", data, _HEADER.size)
    if error:
        raise LabError(f"conntrack flush failed: {os.strerror(-error)}")


def flush(ns: str) -> None:
    """Delete every IPv4 conntrack entry (and so every NAT mapping) in namespace ``ns``."""
    def run() -> None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(5)
            sock.send(flush_request(1))
            parse_ack(sock.recv(65536), 1)
    netns.call_in(ns, run)


def entries(ns: str, proto: str = "udp") -> list[str]:
    """The conntrack table of ``ns`` as text lines (``/proc/thread-self/net/nf_conntrack``)."""
    text = netns.read_file(ns, "/proc/thread-self/net/nf_conntrack")
    return [line for line in text.splitlines() if f" {proto} " in f" {line} "]


def public_mapping(lines: list[str], host_ip: str, remote_ip: str) -> tuple[str, int] | None:
    """From a router's conntrack ``lines``: the public address and port the router maps
    ``host_ip``'s UDP flow to ``remote_ip`` to (the reply tuple's destination), if there is one."""
    for line in lines:
        fields = [f.split("=", 1) for f in line.split() if "=" in f]
        values: dict[str, list[str]] = {}
        for key, value in fields:
            values.setdefault(key, []).append(value)
        src, dst, dport = values.get("src", []), values.get("dst", []), values.get("dport", [])
        if len(src) == 2 and len(dst) == 2 and len(dport) == 2 and src[0] == host_ip and dst[0] == remote_ip:
            try:
                return dst[1], int(dport[1])
            except ValueError:
                continue
    return None
