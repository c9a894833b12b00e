"""Tests for actors.core.rules.settings: thresholds, reload and switching sections with their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.core.rules import (
    ConfigError,
    ModelThreshold,
    SwitchingSettings,
    parse_config,
)
from tests.core.rules.rule_docs import (
    make_yaml,
    rule,
)


def test_defaults_and_thresholds() -> None:
    config = parse_config(make_yaml([rule("m")], model_thresholds={"m": {"max_latency_ms": 3}, "n": None}))
    assert config.settings.redis_url is None
    assert config.settings.max_cached_models == 16
    assert config.reload.debounce_ms == 100 and config.reload.backup_count == 10
    assert config.reload.signal == "SIGHUP"
    assert config.threshold_for("m") == ModelThreshold(max_latency_ms=3, min_accuracy=None, min_samples=100)
    assert config.threshold_for("n") == ModelThreshold()
    assert config.threshold_for("zzz") is None
    assert config.rules[0].priority == 100 and config.rules[0].description == ""


@pytest.mark.parametrize("signal", ["SIGHUP", "SIGUSR1", "SIGUSR2"])
def test_allowed_signals(signal: str) -> None:
    assert parse_config(make_yaml([], reload={"signal": signal})).reload.signal == signal


def test_switching_section_defaults_values_and_errors() -> None:
    """``switching:`` is optional, typed and bounded; every bad field is named."""
    base = "model_router:\n  config: {default_model: a}\n"
    assert parse_config(base).switching == SwitchingSettings()
    custom = parse_config(base + "  switching: {breaker_failures: 2, breaker_open_seconds: 0.5, "
                                 "alert_error_rate: 0.2, alert_latency_p95_ms: 50, min_requests: 3, "
                                 "feedback_index_size: 0}\n")
    assert custom.switching == SwitchingSettings(2, 0.5, 0.2, 50.0, 3, 0)
    assert custom.to_dict()["switching"]["breaker_failures"] == 2
    assert SwitchingSettings().feedback_index_size == 50_000
    with pytest.raises(ConfigError) as caught:
        parse_config(base + "  switching: {breaker_failures: 0, alert_error_rate: 2, alert_latency_p95_ms: -1, "
                            "min_requests: 1.5, feedback_index_size: 2000000, extra: 1}\n")
    paths = {d["path"] for d in caught.value.details}
    assert paths == {"switching.breaker_failures", "switching.alert_error_rate", "switching.alert_latency_p95_ms",
                     "switching.min_requests", "switching.feedback_index_size", "switching.extra"}


def test_access_section_is_validated_and_resolved_against_the_config_folder() -> None:
    base = "model_router:\n  rules: []\n  config: {default_model: a}\n"
    config = parse_config(base + '  access: {file: "access.yml", audit_file: "/var/log/audit.jsonl", '
                                 'cors_origins: ["https://app.example.com", "http://localhost:3000"]}\n')
    assert config.access.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert config.access.resolve(Path("/etc/router/rules.yml")) == (
        Path("/etc/router/access.yml"), Path("/var/log/audit.jsonl"))
    assert config.to_dict()["access"]["file"] == "access.yml"
    assert parse_config(base).access.resolve(Path("/x/rules.yml")) == (None, None)
    with pytest.raises(ConfigError) as raised:
        parse_config(base + '  access: {file: "", cors_origins: ["*", "https://ok.example"], extra: 1}\n')
    assert {d["path"] for d in raised.value.details} == {"access.file", "access.cors_origins[0]", "access.extra"}


def test_data_plane_section_is_validated() -> None:
    base = "model_router:\n  rules: []\n  config: {default_model: a}\n"
    config = parse_config(base + "  data_plane: {port: 9001, header_timeout_s: 5, max_connections: 10}\n")
    assert (config.data_plane.port, config.data_plane.header_timeout_s, config.data_plane.max_connections) == (
        9001, 5.0, 10)
    assert parse_config(base).data_plane.port is None
    with pytest.raises(ConfigError) as raised:
        parse_config(base + "  data_plane: {port: 70000, keep_alive_timeout_s: -1, max_header_bytes: 10, x: 1}\n")
    assert {d["path"] for d in raised.value.details} == {
        "data_plane.port", "data_plane.keep_alive_timeout_s", "data_plane.max_header_bytes", "data_plane.x"}


def test_request_deadline_ms_defaults_parses_and_is_validated() -> None:
    """``config.request_deadline_ms``: 500 by default, any positive number, else a problem at its path."""
    base = "model_router:\n  rules: []\n  config: {default_model: m%s}\n"
    assert parse_config(base % "").settings.request_deadline_ms == 500
    assert parse_config(base % ", request_deadline_ms: 75.5").settings.request_deadline_ms == 75.5
    for bad in ("0", "-1", "fast", "true"):
        with pytest.raises(ConfigError) as raised:
            parse_config(base % f", request_deadline_ms: {bad}")
        assert [d["path"] for d in raised.value.details] == ["config.request_deadline_ms"]


def test_rules_source_is_file_or_redis() -> None:
    base = "model_router:\n  rules: []\n  config: {default_model: m%s}\n"
    assert parse_config(base % "").settings.rules_source == "file"
    assert parse_config(base % ", rules_source: redis").settings.rules_source == "redis"
    with pytest.raises(ConfigError) as raised:
        parse_config(base % ", rules_source: etcd")
    assert [d["path"] for d in raised.value.details] == ["config.rules_source"]
