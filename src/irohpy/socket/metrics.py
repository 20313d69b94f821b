"""The socket's metrics group (iroh's ``magicsock`` group): traffic by path kind, paths,
hole punching and connections. Byte counters carry iroh's names (``send_ipv4`` counts
bytes, as in iroh); the rest are listed with their iroh counterpart in docs/metrics.md.
"""

from __future__ import annotations

from irohpy.metrics import Counter, Gauge, Histogram, MetricsGroup

PATH_KINDS = ("relay", "ipv4", "ipv6")
TIME_TO_DIRECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)


class SocketMetrics(MetricsGroup, name="magicsock"):
    send_ipv4 = Counter("Bytes sent directly over IPv4")
    send_ipv6 = Counter("Bytes sent directly over IPv6")
    send_relay = Counter("Bytes sent through relays")
    recv_data_ipv4 = Counter("Bytes received directly over IPv4")
    recv_data_ipv6 = Counter("Bytes received directly over IPv6")
    recv_data_relay = Counter("Bytes received through relays")
    send_datagrams = Counter("UDP datagrams (or relayed datagrams) sent, by path kind", labels=("path",))
    recv_datagrams = Counter("UDP datagrams (or relayed datagrams) received, by path kind", labels=("path",))
    send_dropped = Counter("Datagrams the OS refused or the full send queue dropped")
    paths_opened = Counter("Connections' paths that validated, by path kind", labels=("path",))
    paths_closed = Counter("Connections' paths that closed (abandoned, or with their connection)",
                           labels=("path",))
    path_selected = Counter("Times traffic to a remote moved onto a path, by path kind", labels=("path",))
    relay_home_change = Counter("Times our home relay changed")
    holepunch_attempts = Counter("NAT-traversal rounds started (REACH_OUT sent, the server's candidates probed)")
    holepunch_successes = Counter("Remotes that went from the relay to a validated direct path")
    time_to_direct = Histogram("Seconds from traffic going onto the relay to a direct path",
                               buckets=TIME_TO_DIRECT_BUCKETS)
    fallbacks_to_relay = Counter("Direct paths that died and left traffic on the relay")
    num_conns_opened = Counter("Connections whose handshake completed")
    num_conns_closed = Counter("Handshaked connections that closed")
    num_conns_failed = Counter("Connections that never completed their handshake, by reason", labels=("reason",))
    num_conns_direct = Counter("Connections that used a direct path at some point")
    connections = Gauge("Connections open now")

    def __init__(self) -> None:
        super().__init__()
        for kind in PATH_KINDS:
            for field in (self.send_datagrams, self.recv_datagrams, self.paths_opened, self.paths_closed,
                          self.path_selected):
                field.labels(kind)


def path_kind(addr: str, is_relay: bool) -> str:
    """``relay``, ``ipv4`` or ``ipv6`` for a path as PathInfo writes it."""
    if is_relay:
        return "relay"
    return "ipv6" if addr.startswith("[") or addr.count(":") > 1 else "ipv4"
