"""Lock-free loop metrics expose exactly what prometheus-client's own Counter and Histogram would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from actors.serving.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = (0.0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.99, 1.0, 1.5, 1000.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text exposition without the ``_created`` series (loop metrics do not keep them)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_histogram_matches_prometheus_client_sample_for_sample() -> None:
    """Same buckets, same values (edges included: ``le`` is inclusive) -> identical exposition."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("x_seconds", "doc", ["route"], buckets=BUCKETS, registry=ours)
    reference = Histogram("x_seconds", "doc", ["route"], buckets=BUCKETS, registry=theirs)
    for value in VALUES:
        mine.labels(route="/a").observe(value)
        reference.labels(route="/a").observe(value)
    mine.labels("/b").observe(0.2)
    reference.labels("/b").observe(0.2)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("x_seconds_bucket", {"route": "/a", "le": "0.001"}) == 3
    assert ours.get_sample_value("x_seconds_count", {"route": "/a"}) == len(VALUES)


def test_counter_matches_prometheus_client_sample_for_sample() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopCounter("hits_total", "doc", ["model", "status"], registry=ours)
    reference = Counter("hits_total", "doc", ["model", "status"], registry=theirs)
    for target in (mine, reference):
        target.labels(model="m", status="ok").inc()
        target.labels("m", "ok").inc(4)
        target.labels(model="m", status="error").inc(2)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("hits_total", {"model": "m", "status": "ok"}) == 5


def test_unlabelled_metrics_and_clear() -> None:
    registry = CollectorRegistry()
    rows = LoopHistogram("rows", "doc", buckets=(1, 2, 4), registry=registry)
    rows.observe(3)
    rows.observe(9)
    assert registry.get_sample_value("rows_bucket", {"le": "4.0"}) == 1
    assert registry.get_sample_value("rows_bucket", {"le": "+Inf"}) == 2
    assert registry.get_sample_value("rows_sum") == 12
    matches = LoopCounter("matches_total", "doc", ["rule"], registry=registry)
    matches.labels(rule="0").inc()
    matches.clear()
    assert registry.get_sample_value("matches_total", {"rule": "0"}) is None


def test_misuse_is_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("c_total", "doc", ["a"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels(b="x")
    with pytest.raises(ValueError):
        counter.labels("x", "y")
    with pytest.raises(ValueError):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError):
        LoopHistogram("h", "doc", buckets=(2, 1), registry=registry)
    with pytest.raises(ValueError):  # an unlabelled metric has no label sets, as in prometheus-client
        LoopHistogram("h", "doc", buckets=(1, 2), registry=registry).labels()
    with pytest.raises(ValueError):  # the registry refuses a second metric of the same name
        LoopCounter("c_total", "doc", ["a"], registry=registry)
