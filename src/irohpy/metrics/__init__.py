"""Metrics as iroh-metrics does them: typed groups, a registry, Prometheus/OpenMetrics export."""

from irohpy.metrics.group import Counter, Gauge, Histogram, MetricsGroup
from irohpy.metrics.registry import Registry
from irohpy.metrics.service import metrics_handler, parse_addr, serve_metrics

__all__ = ["Counter", "Gauge", "Histogram", "MetricsGroup", "Registry", "metrics_handler", "parse_addr",
           "serve_metrics"]
