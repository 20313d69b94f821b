"""The address lookup metrics group: publishes and resolves per service, with failures."""

from __future__ import annotations

from irohpy.metrics import Counter, MetricsGroup


class AddressLookupMetrics(MetricsGroup, name="address_lookup"):
    publishes = Counter("Endpoint data handed to a lookup service to publish", labels=("service",))
    publish_failures = Counter("Publishes a lookup service refused at once", labels=("service",))
    resolves = Counter("Resolve requests sent to a lookup service", labels=("service",))
    resolve_results = Counter("Addresses a lookup service returned", labels=("service",))
    resolve_failures = Counter("Resolves that ended in an error", labels=("service",))
    resolve_empty = Counter("Resolves that ended (or timed out) without an answer", labels=("service",))


def service_name(lookup: object) -> str:
    """The label of a lookup service: its class name, as our logs name it."""
    return type(lookup).__name__
