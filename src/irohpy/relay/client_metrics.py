"""The relay client's metrics group (our side of each relay connection)."""

from __future__ import annotations

from irohpy.metrics import Counter, Gauge, MetricsGroup

FAILURES = ("refused", "error")


class RelayClientMetrics(MetricsGroup, name="relay_client"):
    connects = Counter("Relay connections that completed the handshake")
    connect_failures = Counter("Relay connection attempts that failed, by reason (refused: denied auth)",
                               labels=("reason",))
    disconnects = Counter("Relay connections that ended after the handshake")
    connected = Gauge("Relays connected now")
    send_frames = Counter("Datagram frames written to relays (a frame may carry a batch)")
    send_datagrams = Counter("Datagrams sent through relays")
    recv_datagrams = Counter("Datagrams received from relays")
    recv_dropped = Counter("Datagrams from relays refused by the receive limits (a refused batch counts once)")
    send_queue_dropped = Counter("Datagrams dropped because the relay send queue was full or too old")
    pings_sent = Counter("Liveness pings sent to relays")
    ping_timeouts = Counter("Pings a relay did not answer in time (the connection is then replaced)")
    local_addr_gone = Counter("Relay connections dropped because a network change took their local address")

    def __init__(self) -> None:
        super().__init__()
        for reason in FAILURES:
            self.connect_failures.labels(reason)
