"""The metric definitions: names, labels and the helpers the web layer and router call."""

from __future__ import annotations

import gc
import os

from prometheus_client.parser import text_string_to_metric_families

from actors.core.rules import parse_config
from actors.serving.metrics import Metrics

CONFIG = """\
model_router:
  rules:
    - match: {asset_class: "crypto", horizon_ms: "<60000"}
      model: fast
    - match: {asset_class: "*stock", horizon_ms: ">=60000"}
      model: slow
  config:
    default_model: base
"""


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition()[0].decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_seed_metric_names_are_all_exported() -> None:
    text = Metrics().exposition()[0].decode()
    declared = {f"{f.name}_total" if f.type == "counter" else f.name for f in text_string_to_metric_families(text)}
    seed = {"model_router_latency_microseconds", "model_router_reload_duration_ms",
            "model_router_rule_matches_total", "model_router_active_model", "model_switch_total",
            "inference_requests_total", "inference_latency_seconds"}
    assert seed <= declared


def test_process_and_python_collectors_report_this_process() -> None:
    metrics = Metrics()
    open_fds = value(metrics, "process_open_fds") or 0
    assert 3 <= open_fds <= len(os.listdir("/proc/self/fd")) + 8
    assert (value(metrics, "process_resident_memory_bytes") or 0) > 1_000_000
    assert value(metrics, "process_cpu_seconds_total") is not None
    before = value(metrics, "python_gc_collections_total", generation="2") or 0.0
    gc.collect()
    assert (value(metrics, "python_gc_collections_total", generation="2") or 0.0) >= before + 1
    assert any(name == "python_info" for name, _ in samples(metrics))


def test_request_durations_are_labelled_by_route_template_method_and_status() -> None:
    metrics = Metrics()
    metrics.observe_request("/models/<name>", "GET", 404, 0.003)
    metrics.observe_request("/models/<name>", "GET", 404, 0.2)
    labels = {"route": "/models/<name>", "method": "GET", "status": "404"}
    assert value(metrics, "model_router_http_request_duration_seconds_count", **labels) == 2
    assert value(metrics, "model_router_http_request_duration_seconds_bucket", **labels, le="0.005") == 1
    assert value(metrics, "model_router_http_request_duration_seconds_sum", **labels) == 0.203


def test_fallbacks_count_per_first_choice_and_reason() -> None:
    metrics = Metrics()
    metrics.note_fallback("fast", "circuit_open")
    metrics.note_fallback("fast", "circuit_open")
    metrics.note_fallback("fast", "model_load_failed")
    assert value(metrics, "model_router_fallback_total", model="fast", reason="circuit_open") == 2
    assert value(metrics, "model_router_fallback_total", model="fast", reason="model_load_failed") == 1


def test_readiness_is_computed_at_scrape_time() -> None:
    metrics = Metrics()
    assert value(metrics, "model_router_ready") == 0  # nothing tracked yet: not ready
    state = {"ready": False}
    metrics.track_readiness(lambda: state["ready"])
    assert value(metrics, "model_router_ready") == 0
    state["ready"] = True
    assert value(metrics, "model_router_ready") == 1


def test_rule_info_describes_the_rules_in_force_and_forgets_old_ones() -> None:
    metrics = Metrics()
    metrics.describe_rules(parse_config(CONFIG))
    assert value(metrics, "model_router_rule_info", rule_index="1", asset_class="*stock",
                 horizon_ms=">=60000", model="slow") == 1
    assert value(metrics, "model_router_rule_info", rule_index="default", asset_class="*",
                 horizon_ms="*", model="base") == 1
    metrics.describe_rules(parse_config(CONFIG.replace("*stock", "fx")))
    info = [labels for name, labels in samples(metrics) if name == "model_router_rule_info"]
    assert len(info) == 3
    assert all(dict(labels)["asset_class"] != "*stock" for labels in info)
