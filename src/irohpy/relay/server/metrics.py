"""The relay's Prometheus metrics, in a registry of their own (served on the metrics port only).

A private registry keeps the exposition to relay facts (no process or GC collectors from the
global registry) and lets several servers share one Python process, e.g. in tests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from irohpy.relay.server.access import DENIAL_KINDS

DROP_REASONS = ("unknown_destination", "queue_full", "client_gone", "control_queue_full", "segment_too_small")
DISCONNECT_REASONS = (
    "closed", "replaced", "ping_timeout", "write_timeout", "protocol_error", "access_revoked", "shutdown",
    "internal_error",
)
AUTH_FAILURES = ("signature", "protocol", "timeout", *DENIAL_KINDS)


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("iroh_relay_connections", "Authenticated clients connected now", registry=r)
        self.accepts = Counter("iroh_relay_accepts", "Clients that completed the handshake", registry=r)
        self.disconnects = Counter("iroh_relay_disconnects", "Authenticated clients that left, by reason",
                                   ["reason"], registry=r)
        self.bytes_forwarded = Counter("iroh_relay_bytes_forwarded", "Datagram bytes written to their recipient",
                                       registry=r)
        self.packets_forwarded = Counter("iroh_relay_packets_forwarded", "Datagrams written to their recipient",
                                         registry=r)
        self.packets_dropped = Counter("iroh_relay_packets_dropped", "Datagrams (or control frames) dropped",
                                       ["reason"], registry=r)
        self.auth_failures = Counter("iroh_relay_auth_failures", "Handshakes that did not admit the client",
                                     ["reason"], registry=r)
        self.rate_limited = Counter("iroh_relay_rate_limited_clients",
                                    "Connections throttled by the receive rate limit (once each)", registry=r)
        self.rx_ratelimited_bytes = Counter("iroh_relay_rx_ratelimited_bytes",
                                            "Receive budget (bytes) of frames after which reading paused",
                                            registry=r)
        self.connections_refused = Counter("iroh_relay_connections_refused",
                                           "TCP connections closed at accept, by reason", ["reason"], registry=r)
        self.bad_http_requests = Counter("iroh_relay_bad_http_requests",
                                         "Requests that were not valid HTTP (logged in one line each)", registry=r)
        self.pings_sent = Counter("iroh_relay_pings_sent", "Pings the server sent to clients", registry=r)
        self.queued_packets = Gauge("iroh_relay_queued_packets", "Datagram frames waiting in send queues",
                                    registry=r)
        self.queued_bytes = Gauge("iroh_relay_queued_bytes", "Bytes waiting in send queues", registry=r)
        self.config_reloads = Counter("iroh_relay_config_reloads", "Config reloads on SIGHUP, by result",
                                      ["result"], registry=r)
        self.stun_requests = Counter("iroh_relay_stun_requests", "STUN binding requests, by outcome",
                                     ["result"], registry=r)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
