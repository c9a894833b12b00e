"""docs/metrics.md lists every metric the service exports, with exactly the labels it has."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from actors.serving.loop_metrics import LoopCounter, LoopHistogram
from actors.serving.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented() -> dict[str, set[str]]:
    """Metric name -> label names, from the reference tables' rows (label values in parentheses)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            name = re.match(r"`([a-z_:]+)`", cells[0])
            assert name is not None, line
            rows[name.group(1)] = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[2])))
    return rows


def test_every_exported_metric_is_documented() -> None:
    docs = documented()
    for family in text_string_to_metric_families(Metrics().exposition()[0].decode()):
        if family.name.endswith("_created"):
            continue  # prometheus-client's creation timestamps of unlabelled metrics
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in docs, f"{name} is not in docs/metrics.md"


def test_documented_labels_are_the_metrics_labels() -> None:
    docs = documented()
    metrics = Metrics()
    fields = (getattr(metrics, f.name) for f in attrs.fields(Metrics))
    wrappers = [m for m in fields if isinstance(m, (MetricWrapperBase, LoopCounter, LoopHistogram))]
    assert len(wrappers) >= 30
    for metric in wrappers:
        family = metric.describe()[0]
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = docs[name]
        if labels:
            metric.labels(**dict.fromkeys(labels, "x"))  # raises ValueError unless exactly these labels
        else:
            with pytest.raises(ValueError):
                metric.labels()  # an unlabelled metric refuses labels
