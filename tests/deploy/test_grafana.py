"""deploy/grafana: every metric the dashboard queries is one a running service exports.

The dashboard's PromQL (panels, the instance variable, annotations) is parsed for metric
names, and a real service started on a free port is scraped over HTTP: a renamed or
never-registered metric fails here instead of drawing an empty panel in production.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fast_features, running_app, wait_ready

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "model-router.json"

# PromQL words that are not metric names when not followed by "(".
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                      "group_left", "group_right", "inf", "nan", "Inf", "NaN"})
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"), "gauge": (), "info": ("_info",), "unknown": ()}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana variables allowed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, e.g. "5.."
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = GROUPING.sub(" ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # $__rate_interval, ${instance}
    names = set()
    for match in IDENTIFIER.finditer(expr):
        if expr[match.end():].lstrip().startswith("(") or match.group(0) in KEYWORDS:
            continue  # a function or aggregation call, or an operator keyword
        names.add(match.group(0))
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def prometheus_queries() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL query: panel targets, variables, annotations."""
    board = dashboard()
    queries = [(f"panel {p['title']!r}", t["expr"]) for p in panels() for t in p.get("targets", [])
               if t.get("datasource", p.get("datasource", {})).get("type") == "prometheus"]
    for variable in board["templating"]["list"]:
        if variable.get("datasource", {}).get("type") == "prometheus":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            queries.append((f"variable {variable['name']}", re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)))
    queries += [(f"annotation {a['name']!r}", a["expr"]) for a in board["annotations"]["list"] if "expr" in a]
    return queries


def test_metric_names_are_extracted_from_promql() -> None:
    expr = ('sum by (asset_class) (rate(model_router_rule_matches_total{job="x", status=~"5.."}[$__rate_interval])'
            ' * on (instance, rule_index) group_left (asset_class) model_router_rule_info) / 2 > bool 1e3'
            ' or histogram_quantile(0.99, sum by (le) (rate(model_router_latency_microseconds_bucket[5m] offset 1h)))')
    assert metric_names(expr) == {"model_router_rule_matches_total", "model_router_rule_info",
                                  "model_router_latency_microseconds_bucket"}


def exported_names(exposition: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_dashboard_metric_is_exported_by_a_running_service(config_path: Path) -> None:
    async with running_app(config_path) as harness:
        await wait_ready(harness)
        answer = await harness.predict(asset_class="crypto", horizon_ms=5, features=fast_features())
        assert answer.status_code == 200
        scrape = await harness.client.get("/metrics")
    assert scrape.status_code == 200
    exported = exported_names(scrape.text)
    queries = prometheus_queries()
    assert len(queries) >= 20
    missing = {f"{where}: {name}" for where, expr in queries for name in metric_names(expr) - exported}
    assert not missing, "dashboard queries metrics the service does not export:\n" + "\n".join(sorted(missing))
    # The seed's own metrics carry samples after one routed prediction, not just declarations.
    sampled = {s.name for f in text_string_to_metric_families(scrape.text) for s in f.samples}
    assert {"model_router_latency_microseconds_bucket", "model_router_rule_matches_total",
            "model_router_active_model", "inference_requests_total", "process_resident_memory_bytes"} <= sampled


def test_seed_panels_and_their_thresholds() -> None:
    by_title = {p["title"]: p for p in panels()}
    for title in ("Active model distribution", "Routing latency (select_model)",
                  "Model switch rate (switches per 5 min)", "Configuration reload events",
                  "Rule matches by asset class", "Failover / fallback events", "Switch log (model.switch.log)",
                  "Request rate by route", "Request latency by route (p50, p95)", "Errors by route"):
        assert title in by_title, title
    latency = by_title["Routing latency (select_model)"]["fieldConfig"]["defaults"]
    assert {"color": "red", "value": 50} in latency["thresholds"]["steps"]
    assert latency["custom"]["thresholdsStyle"]["mode"].startswith("line") and latency["unit"] == "µs"
    switches = by_title["Model switch rate (switches per 5 min)"]
    assert {"color": "red", "value": 20} in switches["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert "increase(model_switch_total{" in switches["targets"][0]["expr"]
    assert switches["targets"][0]["expr"].split("[")[1].startswith("5m]")
    switch_log = by_title["Switch log (model.switch.log)"]["targets"][0]
    assert (switch_log["command"], switch_log["keyName"]) == ("xrevrange", "model.switch.log")


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    every = list(panels())
    assert len({p["id"] for p in every}) == len(every)
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_datasource_the_dashboard_uses_is_provisioned() -> None:
    provisioned = {}
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            provisioned[source["uid"]] = source["type"]
    used = {(t.get("datasource") or p["datasource"])["uid"]: (t.get("datasource") or p["datasource"])["type"]
            for p in panels() for t in p.get("targets", [])}
    assert used.items() <= provisioned.items()
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "model-router.yml").read_text())
    assert provider["providers"][0]["options"]["path"].startswith("/var/lib/grafana/dashboards")


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not on PATH (Debian package 'prometheus'; .ci/run installs it)")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana variables replaced by examples)."""
    rules = []
    for index, (_where, expr) in enumerate(prometheus_queries()):
        concrete = (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
                    .replace("$instance", ".*"))
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
