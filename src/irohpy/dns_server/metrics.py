"""The DNS server's Prometheus metrics, in a registry of their own (served on the metrics port only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

PUT_RESULTS = ("stored", "not_newer", "invalid", "future_timestamp", "rate_limited")
GET_RESULTS = ("found", "not_found", "invalid")
DNS_TRANSPORTS = ("udp", "tcp")
DNS_RESULTS = ("answer", "nxdomain", "formerr", "dropped", "rate_limited", "slipped")
LISTENERS = ("http", "dns_tcp")


class DnsServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.puts = Counter("irohpy_dns_pkarr_puts", "pkarr PUT requests, by result", ["result"], registry=r)
        self.gets = Counter("irohpy_dns_pkarr_gets", "pkarr GET requests, by result", ["result"], registry=r)
        self.queries = Counter("irohpy_dns_queries", "DNS queries, by transport and result",
                               ["transport", "result"], registry=r)
        self.evicted = Counter("irohpy_dns_packets_evicted", "Stored packets dropped for age", registry=r)
        self.stored = Gauge("irohpy_dns_packets_stored", "Signed packets in the store", registry=r)
        self.connections_refused = Counter("irohpy_dns_connections_refused",
                                           "TCP connections closed at accept (per-address cap), by listener",
                                           ["listener"], registry=r)
        self.bad_http_requests = Counter("irohpy_dns_bad_http_requests",
                                         "Requests that were not valid HTTP (logged in one line each)", registry=r)
        for listener in LISTENERS:
            self.connections_refused.labels(listener)
        for result in PUT_RESULTS:
            self.puts.labels(result)
        for result in GET_RESULTS:
            self.gets.labels(result)
        for transport in DNS_TRANSPORTS:
            for result in DNS_RESULTS:
                self.queries.labels(transport, result)

    def render(self) -> bytes:
        return generate_latest(self.registry)
