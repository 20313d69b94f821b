"""A registry of metric groups, encoded as Prometheus text or OpenMetrics.

Names follow iroh-metrics: ``<prefix>_<group>_<field>``, counters with ``_total``.
Sub-registries add a prefix or constant labels, so several endpoints (or a server
and its clients) can share one scrape without their series colliding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as prom_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

from irohpy.metrics.group import MetricsGroup

PROMETHEUS_CONTENT_TYPE = prom_text.CONTENT_TYPE_LATEST
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST

G = TypeVar("G", bound=MetricsGroup)


class Registry:
    """Metric groups to export together (iroh's ``Registry``)."""

    def __init__(self, prefix: str | None = None, labels: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self.labels = dict(labels or {})
        self._groups: list[MetricsGroup] = []
        self._subs: list[Registry] = []
        self._collectors = CollectorRegistry(auto_describe=False)
        self._collectors.register(self)

    def register(self, group: G) -> G:
        """Add a group; its names must not collide with what is here already."""
        if any(g is group for g in self._groups):
            return group
        if any(g.name == group.name for g in self._groups):
            raise ValueError(f"a metrics group named {group.name!r} is already registered here")
        self._groups.append(group)
        return group

    def group(self, cls: type[G]) -> G:
        """The registered group of class ``cls``, registering a new one here if there is none."""
        for group in self.groups():
            if type(group) is cls:
                return group
        return self.register(cls())  # type: ignore[return-value]

    def register_all(self, groups: Iterable[MetricsGroup]) -> None:
        for group in groups:
            self.register(group)

    def sub_registry(self, prefix: str | None = None, labels: dict[str, str] | None = None) -> Registry:
        """A registry nested in this one whose names get ``prefix`` and whose series get ``labels``."""
        joined = "_".join(p for p in (self.prefix, prefix) if p) or None
        sub = Registry(joined, {**self.labels, **(labels or {})})
        self._subs.append(sub)
        return sub

    def groups(self) -> Iterator[MetricsGroup]:
        yield from self._groups
        for sub in self._subs:
            yield from sub.groups()

    def get(self, name: str) -> MetricsGroup:
        """The registered group called ``name`` (searching sub-registries too)."""
        for group in self.groups():
            if group.name == name:
                return group
        raise KeyError(name)

    def collect(self) -> Iterator[Metric]:
        """Every metric as a prometheus_client family (the collector protocol); the same name
        from several sub-registries (told apart by their labels) is one family."""
        merged: dict[str, Metric] = {}
        for family in self._families():
            known = merged.get(family.name)
            if known is None:
                merged[family.name] = family
            elif known.type != family.type:
                raise ValueError(f"metric {family.name} registered as both {known.type} and {family.type}")
            else:
                known.samples += family.samples
        yield from merged.values()

    def _families(self) -> Iterator[Metric]:
        for group in self._groups:
            base = "_".join(p for p in (self.prefix, group.name) if p)
            for field_name, field in group.fields():
                yield field.family(f"{base}_{field_name}", group.help(field_name), self.labels)
        for sub in self._subs:
            yield from sub._families()

    def encode_prometheus(self) -> bytes:
        """The Prometheus text exposition format (0.0.4)."""
        return prom_text.generate_latest(self._collectors)

    def encode_openmetrics(self) -> bytes:
        """The OpenMetrics text format, ending in ``# EOF``."""
        return openmetrics.generate_latest(self._collectors)

    def values(self) -> dict[str, float]:
        """Every sample now, keyed ``name{label="value",...}`` as the text format writes it."""
        out: dict[str, float] = {}
        for family in self.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def __repr__(self) -> str:
        return f"<Registry {[g.name for g in self.groups()]}>"
