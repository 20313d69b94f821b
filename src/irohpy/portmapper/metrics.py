"""The port mapper's metrics group, with the names of iroh's ``portmap`` group where it has them."""

from __future__ import annotations

from irohpy.metrics import Counter, Gauge, MetricsGroup


class PortmapMetrics(MetricsGroup, name="portmap"):
    probes_started = Counter("Gateway probes started (PCP, NAT-PMP and UPnP at once)")
    mapping_attempts = Counter("Attempts to get or renew a mapping (one per protocol tried)")
    mapping_failures = Counter("Mapping attempts that failed (refused, malformed, silent)")
    external_address_updated = Counter("Times the mapped external address changed (appeared, moved, went)")
    upnp_probes = Counter("UPnP SSDP searches")
    upnp_probes_failed = Counter("UPnP SSDP searches the gateway did not answer")
    upnp_available = Counter("Probes that found UPnP IGD")
    pcp_probes = Counter("PCP ANNOUNCE probes")
    pcp_available = Counter("Probes that found PCP")
    nat_pmp_probes = Counter("NAT-PMP external-address probes")
    nat_pmp_available = Counter("Probes that found NAT-PMP")
    mapped = Gauge("1 while a mapping is held, else 0")
