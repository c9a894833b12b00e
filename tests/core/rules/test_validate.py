"""Tests for actors.core.rules.validate: every problem of a document reported with its path, and the hash."""

from __future__ import annotations

import pytest

from actors.core.rules import (
    parse_config,
)
from tests.core.rules.rule_docs import (
    DEMO_MODELS,
    config_error,
    detail_for,
    make_yaml,
    paths_of,
    rule,
)


def test_unknown_keys_at_every_level() -> None:
    text = """
extra: 1
model_router:
  bogus: 1
  rules:
    - match: {asset_class: "a", colour: "red"}
      model: m
      priorty: 3
  config: {default_model: b, redis: x}
  model_thresholds:
    m: {max_latency: 3}
  reload: {enable: true}
"""
    err = config_error(text)
    assert set(paths_of(err)) == {
        "<document>.extra",
        "bogus",
        "rules[0].match.colour",
        "rules[0].priorty",
        "config.redis",
        "model_thresholds.m.max_latency",
        "reload.enable",
    }
    assert "'priorty'" in detail_for(err, "rules[0].priorty")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model_router: [", "invalid YAML at line 2, column 1"),
        ("rules:\n  - x\n  y: [\n", "invalid YAML at line"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("", "top level must be a mapping"),
        ("other: 1\n", "missing top-level key 'model_router'"),
    ],
)
def test_document_level_errors(text: str, fragment: str) -> None:
    err = config_error(text)
    assert any(fragment in d["message"] for d in err.details), err.details
    assert "\n" not in err.message
    assert isinstance(err, ValueError)


def test_wrong_types() -> None:
    text = """
model_router:
  rules:
    - match: "crypto"
      model: 5
    - "not a rule"
    - model: m
      priority: "high"
      description: 3
      fallback: ""
  config:
    default_model: b
    redis_url: 5
    max_latency_us: 0
    cache_ttl_seconds: -1
    performance_logging: "yes"
    model_repository: 7
    preload_models: "m"
    max_cached_models: 0
    model_cache_mb: true
    max_batch_items: 1.5
  model_thresholds:
    m: {max_latency_ms: -1, min_accuracy: 1.5, min_samples: 0}
  reload:
    enabled: 1
    signal: SIGKILL
    validation: null
    backup_on_reload: "no"
    debounce_ms: 10001
    backup_count: 0
"""
    err = config_error(text)
    expected = {
        "rules[0].match",
        "rules[0].model",
        "rules[1]",
        "rules[2].priority",
        "rules[2].description",
        "rules[2].fallback",
        "config.redis_url",
        "config.max_latency_us",
        "config.cache_ttl_seconds",
        "config.performance_logging",
        "config.model_repository",
        "config.preload_models",
        "config.max_cached_models",
        "config.model_cache_mb",
        "config.max_batch_items",
        "model_thresholds.m.max_latency_ms",
        "model_thresholds.m.min_accuracy",
        "model_thresholds.m.min_samples",
        "reload.enabled",
        "reload.signal",
        "reload.validation",
        "reload.backup_on_reload",
        "reload.debounce_ms",
        "reload.backup_count",
    }
    assert set(paths_of(err)) == expected
    assert str(len(expected)) in err.message


def test_rules_must_be_a_list_and_model_required() -> None:
    assert paths_of(config_error("model_router:\n  rules: {a: 1}\n  default_model: b\n")) == ["rules"]
    err = config_error("model_router:\n  rules:\n    - match: {asset_class: a}\n  default_model: b\n")
    assert "missing required key 'model'" in detail_for(err, "rules[0].model")


def test_default_model_forms() -> None:
    basic = parse_config("model_router:\n  default_model: b\n  rules: []\n")
    assert basic.settings.default_model == "b"
    both = parse_config("model_router:\n  default_model: b\n  config: {default_model: b}\n")
    assert both.settings.default_model == "b"
    err = config_error("model_router:\n  default_model: a\n  config: {default_model: b}\n")
    assert "conflicts" in detail_for(err, "config.default_model")
    err = config_error("model_router:\n  rules: []\n")
    assert "missing default model" in detail_for(err, "config.default_model")
    err = config_error("model_router:\n")
    assert "missing default model" in detail_for(err, "config.default_model")


def test_unknown_models_with_known_models() -> None:
    text = make_yaml(
        [rule("tlob_tiny", fallback="ghost"), rule("phantom")],
        default="nope",
        model_thresholds={"tlob_tiny": {"min_samples": 5}, "spectre": {}},
    ).replace("config:\n", "config:\n    preload_models: [tlob_tiny, wraith]\n")
    err = config_error(text, known_models=DEMO_MODELS)
    assert set(paths_of(err)) == {
        "rules[0].fallback",
        "rules[1].model",
        "config.default_model",
        "config.preload_models[1]",
        "model_thresholds.spectre",
    }
    message = detail_for(err, "rules[1].model")
    assert "'phantom'" in message
    assert all(name in message for name in DEMO_MODELS)
    assert parse_config(text).settings.preload_models == ("tlob_tiny", "wraith")


def test_multiple_errors_collected_in_one_pass() -> None:
    err = config_error(
        make_yaml(
            [
                rule("m", horizon=">>5"),
                rule("m", asset="[x"),
                rule("m", horizon=">5 & <1"),
                rule("m", symbol=""),
            ],
            reload={"signal": "SIGTERM"},
        )
    )
    assert paths_of(err) == [
        "rules[0].match.horizon_ms",
        "rules[1].match.asset_class",
        "rules[2].match.horizon_ms",
        "rules[3].match.symbol",
        "reload.signal",
    ]
    assert "(+4 more)" in err.message
    assert "rules[2].match.horizon_ms" in str(err)


def test_config_hash_stable_across_comments_and_whitespace() -> None:
    text = make_yaml([rule("m", asset="crypto", horizon="<5")])
    edited = "# a comment\n\n" + text.replace("model_router:", "model_router:   # inline")
    assert parse_config(text).config_hash == parse_config(edited).config_hash
    changed = make_yaml([rule("m", asset="crypto", horizon="<6")])
    assert parse_config(changed).config_hash != parse_config(text).config_hash
    assert len(parse_config(text).config_hash) == 12
