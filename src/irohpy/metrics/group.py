"""Metric groups: typed classes whose fields are counters, gauges and histograms.

A group is declared once as a class with a name (iroh's ``#[metrics(name = "...")]``);
each instance holds live values that code increments directly, and a
:class:`~irohpy.metrics.registry.Registry` encodes them for Prometheus. A field's help
text is its description, or else the docstring written under it in the class body.
"""

from __future__ import annotations

import ast
import bisect
import inspect
import math
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Value:
    """One unlabelled series of a metric."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def get(self) -> float:
        return self.value


class CounterValue(_Value):
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class GaugeValue(_Value):
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class HistogramValue:
    __slots__ = ("_bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def at_most(self, bound: float) -> int:
        """Observations in buckets up to ``bound`` (a bucket boundary)."""
        return sum(n for b, n in zip(self._bounds, self.counts) if b <= bound)

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip([*self._bounds, math.inf], self.counts):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return out


V = TypeVar("V", CounterValue, GaugeValue, HistogramValue)


class _Field(Generic[V]):
    """A metric declared on a group class; instances of the group get live copies."""

    kind: ClassVar[str]

    def __init__(self, description: str = "", *, labels: Sequence[str] = ()) -> None:
        self.description = description
        self.label_names = tuple(labels)
        self.name = ""
        self._series: dict[tuple[str, ...], V] = {}
        if not self.label_names:
            self._series[()] = self._new()

    def _new(self) -> V:
        raise NotImplementedError

    def _fresh(self) -> _Field[V]:
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy._series = {}
        if not self.label_names:
            copy._series[()] = copy._new()
        return copy

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def labels(self, *values: str) -> V:
        """The series for these label values (created on first use)."""
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self._new()
        return series

    def _only(self) -> V:
        try:
            return self._series[()]
        except KeyError:
            raise ValueError(f"{self.name} is labelled {self.label_names}: use .labels(...)") from None

    def series(self) -> Iterator[tuple[tuple[str, ...], V]]:
        yield from sorted(self._series.items())

    def family(self, name: str, help_text: str, labels: dict[str, str]) -> Metric:
        raise NotImplementedError


class Counter(_Field[CounterValue]):
    """A value that only goes up (iroh's ``Counter``); encoded with a ``_total`` suffix."""

    kind = "counter"

    def _new(self) -> CounterValue:
        return CounterValue()

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)

    def get(self) -> float:
        return self._only().value

    def family(self, name: str, help_text: str, labels: dict[str, str]) -> Metric:
        fam = CounterMetricFamily(name, help_text, labels=[*labels, *self.label_names])
        for values, series in self.series():
            fam.add_metric([*labels.values(), *values], series.value)
        return fam


class Gauge(_Field[GaugeValue]):
    """A value that goes up and down (iroh's ``Gauge``)."""

    kind = "gauge"

    def _new(self) -> GaugeValue:
        return GaugeValue()

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._only().dec(amount)

    def set(self, value: float) -> None:
        self._only().set(value)

    def get(self) -> float:
        return self._only().value

    def family(self, name: str, help_text: str, labels: dict[str, str]) -> Metric:
        fam = GaugeMetricFamily(name, help_text, labels=[*labels, *self.label_names])
        for values, series in self.series():
            fam.add_metric([*labels.values(), *values], series.value)
        return fam


class Histogram(_Field[HistogramValue]):
    """Observations counted into buckets (iroh's ``Histogram``), with their sum and count."""

    kind = "histogram"

    def __init__(self, description: str = "", *, labels: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(sorted(float(b) for b in buckets if b != math.inf))
        super().__init__(description, labels=labels)

    def _new(self) -> HistogramValue:
        return HistogramValue(self.buckets)

    def observe(self, value: float) -> None:
        self._only().observe(value)

    @property
    def count(self) -> int:
        return self._only().count

    @property
    def sum(self) -> float:
        return self._only().sum

    def family(self, name: str, help_text: str, labels: dict[str, str]) -> Metric:
        fam = HistogramMetricFamily(name, help_text, labels=[*labels, *self.label_names])
        for values, series in self.series():
            fam.add_metric([*labels.values(), *values], series.cumulative(), series.sum)
        return fam


def _field_docstrings(cls: type) -> dict[str, str]:
    """Docstrings written under fields in the class body, when the source is available."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    out: dict[str, str] = {}
    for stmt, nxt in zip(body.body, body.body[1:]):
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else (
            stmt.target if isinstance(stmt, ast.AnnAssign) else None)
        if (isinstance(target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            out[target.id] = " ".join(nxt.value.value.split())
    return out


class MetricsGroup:
    """Base of metric groups: ``class Metrics(MetricsGroup, name="ping")`` with field declarations.

    Each instance has its own values; register it into a :class:`Registry` to export it.
    """

    name: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]]
    _help: ClassVar[dict[str, str]]

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if not getattr(cls, "name", ""):
            raise TypeError(f"{cls.__name__} needs a group name: class {cls.__name__}(MetricsGroup, name=...)")
        fields = {k: v for k, v in vars(cls).items() if isinstance(v, _Field)}
        docs = _field_docstrings(cls) if any(not f.description for f in fields.values()) else {}
        inherited = getattr(cls, "_fields", ())
        cls._fields = (*inherited, *(k for k in fields if k not in inherited))
        cls._help = {**getattr(cls, "_help", {}),
                     **{k: f.description or docs.get(k) or k.replace("_", " ") for k, f in fields.items()}}

    def __init__(self) -> None:
        for field_name in self._fields:
            template: _Field[Any] = getattr(type(self), field_name)
            setattr(self, field_name, template._fresh())

    def fields(self) -> Iterator[tuple[str, _Field[Any]]]:
        for field_name in self._fields:
            yield field_name, getattr(self, field_name)

    def help(self, field_name: str) -> str:
        return self._help[field_name]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
