"""deploy/prometheus: alert rules checked and unit-tested by promtool, linked to the runbook.

promtool (Debian package ``prometheus``) runs ``check rules`` and the unit tests in
alerts_test.yml; .ci/run installs it, elsewhere those two tests skip and say why. The
structural checks below need no promtool: every alert has a firing and a quiet test case,
links a runbook section that exists, and queries metrics the service exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.serving.metrics import Metrics
from tests.deploy.test_grafana import exported_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
NO_PROMTOOL = "promtool not on PATH (Debian package 'prometheus'; .ci/run installs it)"


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.skipif(shutil.which("promtool") is None, reason=NO_PROMTOOL)
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alerts())} rules found" in result.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason=NO_PROMTOOL)
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_issue_alerts_are_all_there() -> None:
    names = {a["alert"] for a in alerts()}
    assert names == {"ModelRouterExcessiveSwitching", "ModelRouterReloadFailed", "ModelRouterRoutingLatencyHigh",
                     "ModelRouterBreakerOpen", "ModelRouterDown", "ModelRouterNotReady", "ModelRouterHighErrorRate",
                     "ModelRouterPredictLatencyP95High"}
    switching = next(a for a in alerts() if a["alert"] == "ModelRouterExcessiveSwitching")
    # 20 per 5 minutes counted with increase(); rate() would be per second (20/s = 6000 per 5 min).
    assert re.fullmatch(r"sum by \(job, instance\) \(increase\(model_switch_total\[5m\]\)\) > 20", switching["expr"])


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    suite = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    cases = [case for test in suite["tests"] for case in test["alert_rule_test"]]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no test where it stays quiet"


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_alert_links_an_existing_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in runbook.splitlines() if line.startswith("#")}
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", url
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in docs/runbook.md"
        assert alert["labels"]["severity"] in {"warning", "critical"}


def test_alerts_query_metrics_the_service_exports() -> None:
    exported = exported_names(Metrics().exposition()[0].decode()) | {"up"}  # up: Prometheus' own
    for alert in alerts():
        assert metric_names(alert["expr"]) <= exported, alert["alert"]
        assert metric_names(alert["expr"]), alert["alert"]


def test_scrape_config_targets_the_main_port_and_loads_the_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "model-router")
    assert job["metrics_path"] == "/metrics"
    assert [t.rsplit(":", 1)[1] for t in job["static_configs"][0]["targets"]] == ["8000"]
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    # The alerts' job label filter matches the scrape job name.
    down = next(a for a in alerts() if a["alert"] == "ModelRouterDown")
    assert f'job="{job["job_name"]}"' in down["expr"]


def test_exported_names_include_histogram_and_counter_suffixes() -> None:
    names = exported_names(Metrics().exposition()[0].decode())
    assert {"model_router_http_request_duration_seconds_bucket", "model_router_fallback_total",
            "model_switch_total", "process_cpu_seconds_total"} <= names
    families = {f.name for f in text_string_to_metric_families(Metrics().exposition()[0].decode())}
    assert "model_router_fallback_total" not in families  # the family is named without _total
