"""The DNS server's metrics group, in a registry of its own (served on the metrics port only).

Named ``dns`` under the prefix ``irohpy``, so the series keep their names
(``irohpy_dns_pkarr_puts_total`` ...); docs/metrics.md maps them to iroh-dns-server's.
"""

from __future__ import annotations

from irohpy.metrics import Counter, Gauge, MetricsGroup, Registry

PUT_RESULTS = ("stored", "not_newer", "invalid", "future_timestamp", "rate_limited")
GET_RESULTS = ("found", "not_found", "invalid")
DNS_TRANSPORTS = ("udp", "tcp")
DNS_RESULTS = ("answer", "nxdomain", "formerr", "dropped", "rate_limited", "slipped")
LISTENERS = ("http", "dns_tcp")
PREFIX = "irohpy"


class DnsServerMetrics(MetricsGroup, name="dns"):
    pkarr_puts = Counter("pkarr PUT requests, by result", labels=("result",))
    pkarr_gets = Counter("pkarr GET requests, by result", labels=("result",))
    queries = Counter("DNS queries, by transport and result", labels=("transport", "result"))
    packets_evicted = Counter("Stored packets dropped for age")
    packets_stored = Gauge("Signed packets in the store")
    connections_refused = Counter("TCP connections closed at accept (per-address cap), by listener",
                                  labels=("listener",))
    bad_http_requests = Counter("Requests that were not valid HTTP (logged in one line each)")

    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry(prefix=PREFIX)
        self.registry.register(self)
        for listener in LISTENERS:
            self.connections_refused.labels(listener)
        for result in PUT_RESULTS:
            self.pkarr_puts.labels(result)
        for result in GET_RESULTS:
            self.pkarr_gets.labels(result)
        for transport in DNS_TRANSPORTS:
            for result in DNS_RESULTS:
                self.queries.labels(transport, result)

    def render(self) -> bytes:
        return self.registry.encode_prometheus()
