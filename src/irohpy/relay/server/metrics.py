"""The relay server's metrics group, in a registry of its own (served on the metrics port only).

The group is named ``relay`` under the prefix ``iroh``, so the series keep the names they
have always had (``iroh_relay_bytes_forwarded_total`` ...); docs/metrics.md maps them to
iroh-relay's. A private registry keeps the exposition to relay facts and lets several
servers share one Python process, e.g. in tests.
"""

from __future__ import annotations

from irohpy.metrics import Counter, Gauge, MetricsGroup, Registry
from irohpy.relay.server.access import DENIAL_KINDS

DROP_REASONS = ("unknown_destination", "queue_full", "client_gone", "control_queue_full", "segment_too_small")
DISCONNECT_REASONS = (
    "closed", "replaced", "ping_timeout", "write_timeout", "protocol_error", "access_revoked", "shutdown",
    "internal_error",
)
AUTH_FAILURES = ("signature", "protocol", "timeout", *DENIAL_KINDS)
PREFIX = "iroh"


class RelayMetrics(MetricsGroup, name="relay"):
    connections = Gauge("Authenticated clients connected now")
    accepts = Counter("Clients that completed the handshake")
    disconnects = Counter("Authenticated clients that left, by reason", labels=("reason",))
    bytes_forwarded = Counter("Datagram bytes written to their recipient")
    packets_forwarded = Counter("Datagrams written to their recipient")
    packets_dropped = Counter("Datagrams (or control frames) dropped", labels=("reason",))
    auth_failures = Counter("Handshakes that did not admit the client", labels=("reason",))
    rate_limited_clients = Counter("Connections throttled by the receive rate limit (once each)")
    rx_ratelimited_bytes = Counter("Receive budget (bytes) of frames after which reading paused")
    connections_refused = Counter("TCP connections closed at accept, by reason", labels=("reason",))
    bad_http_requests = Counter("Requests that were not valid HTTP (logged in one line each)")
    pings_sent = Counter("Pings the server sent to clients")
    queued_packets = Gauge("Datagram frames waiting in send queues")
    queued_bytes = Gauge("Bytes waiting in send queues")
    config_reloads = Counter("Config reloads on SIGHUP, by result", labels=("result",))
    stun_requests = Counter("STUN binding requests, by outcome", labels=("result",))
    # QUIC address discovery, as iroh-relay counts it: incoming = incoming_error + connections
    # + in flight; connections - connections_closed are open now.
    qad_incoming = Counter("QAD connections accepted to handshake (after address validation)")
    qad_incoming_error = Counter("QAD connections that failed before the handshake completed")
    qad_connections = Counter("QAD connections established")
    qad_connections_closed = Counter("QAD connections closed after they were established")
    qad_connections_errored = Counter("QAD connections closed otherwise than by the client's 'finished' "
                                      "(included in qad_connections_closed)")
    qad_refused = Counter("QAD handshakes refused, by reason", labels=("reason",))
    qad_dropped = Counter("QAD datagrams dropped before the QUIC endpoint, by reason", labels=("reason",))

    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry(prefix=PREFIX)
        self.registry.register(self)
        for result in ("ok", "bad"):
            self.stun_requests.labels(result)
        for reason in DROP_REASONS:
            self.packets_dropped.labels(reason)
        for reason in DISCONNECT_REASONS:
            self.disconnects.labels(reason)
        for reason in AUTH_FAILURES:
            self.auth_failures.labels(reason)
        for result in ("ok", "error"):
            self.config_reloads.labels(result)
        self.connections_refused.labels("per_ip_limit")
        for reason in ("per_ip_limit", "capacity"):
            self.qad_refused.labels(reason)
        self.qad_dropped.labels("rate_limited")

    def render(self) -> bytes:
        return self.registry.encode_prometheus()
