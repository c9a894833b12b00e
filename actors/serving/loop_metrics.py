"""Counters and histograms updated without a lock: the metrics every prediction touches.

prometheus-client guards each child's value with a ``threading.Lock`` and checks the metric
on every call: an increment is a lock round trip, a histogram observation two. A routed
prediction updated eight such values, ~10 % of the data port's own code per request. Every
update of the metrics defined here happens on the event-loop thread (request code runs
nowhere else; worker threads only run the interpreter and hand the result back), so plain
Python numbers are exact. The exposition reads them through a collector registered on the
service's registry and yields the samples prometheus-client's own ``Counter`` and
``Histogram`` would (``_total``; ``_bucket``, ``_count``, ``_sum``), without ``_created``.

A scrape on another thread may read a histogram between its bucket and its sum being
updated: the sum can lag one observation behind the count, which Prometheus tolerates.
"""

from __future__ import annotations

from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterChild:
    """One label set's count."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter can only go up")
        self.value += amount


class HistogramChild:
    """One label set's buckets (per bucket, not cumulative: the exposition sums them) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. the bucket whose ``le`` the value satisfies.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    """A named metric with fixed label names; children are created on first use of a label set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], CounterChild | HistogramChild] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()
        registry.register(self)

    @abstractmethod
    def _new_child(self) -> CounterChild | HistogramChild:
        """A fresh child of this kind."""

    def _child(self, values: tuple[object, ...], named: dict[str, object]) -> CounterChild | HistogramChild:
        if not self.labelnames:
            raise ValueError(f"{self.name} has no labels: call inc/observe on it directly")
        if named:
            if values or set(named) != set(self.labelnames):
                raise ValueError(f"{self.name}: labels must be exactly {self.labelnames}")
            key = tuple(str(named[label]) for label in self.labelnames)
        else:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(values)}")
            key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def clear(self) -> None:
        """Drop every label set (a labelled metric only)."""
        if self.labelnames:
            self._children.clear()

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    @abstractmethod
    def _family(self) -> Metric:
        """The metric family, without samples."""


class LoopCounter(_Family):
    """A counter for event-loop code: ``labels(...).inc(n)``, or ``inc(n)`` without labels."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def labels(self, *values: object, **named: object) -> CounterChild:
        child = self._child(values, named)
        assert isinstance(child, CounterChild)
        return child

    def inc(self, amount: float = 1.0) -> None:
        """Count on an unlabelled counter."""
        child = self._children.get(())
        if not isinstance(child, CounterChild):
            raise ValueError(f"{self.name} has labels: count on labels(...)")
        child.inc(amount)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key, child in list(self._children.items()):
            assert isinstance(child, CounterChild)
            family.add_metric(list(key), child.value)
        return [family]


class LoopHistogram(_Family):
    """A histogram for event-loop code: ``labels(...).observe(v)``, or ``observe(v)`` without labels."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"{name}: buckets must be increasing and not empty")
        self.bounds = bounds
        self._labels_le = [floatToGoString(b) for b in bounds] + ["+Inf"]
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def labels(self, *values: object, **named: object) -> HistogramChild:
        child = self._child(values, named)
        assert isinstance(child, HistogramChild)
        return child

    def observe(self, value: float) -> None:
        """Observe on an unlabelled histogram."""
        child = self._children.get(())
        if not isinstance(child, HistogramChild):
            raise ValueError(f"{self.name} has labels: observe on labels(...)")
        child.observe(value)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key, child in list(self._children.items()):
            assert isinstance(child, HistogramChild)
            running = 0
            cumulative = []
            for le, count in zip(self._labels_le, list(child.counts), strict=True):
                running += count
                cumulative.append((le, running))
            family.add_metric(list(key), cumulative, child.sum)
        return [family]
