"""Tests for actors.core.rules.yaml_reader: data identical to PyYAML's, located errors, duplicate keys."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import yaml

from actors.core.rules import (
    ConfigError,
    ModelThreshold,
    parse_config,
)
from actors.core.rules.problems import _Problems
from actors.core.rules.yaml_nodes import _expanded_size
from actors.core.rules.yaml_reader import MAX_EXPANDED_CHARS, MAX_EXPANDED_NODES, _load_yaml
from actors.core.rules.yaml_subset import _load_subset
from tests.core.rules.rule_docs import (
    CONF_PATH,
    config_error,
    detail_for,
    make_yaml,
    paths_of,
    rule,
)


def typed(value: Any) -> Any:
    """Structure with types spelled out, so 1, 1.0 and True do not compare equal."""
    if isinstance(value, dict):
        return ("map", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("seq", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def load_data(text: str) -> Any:
    problems = _Problems()
    data = _load_yaml(text, problems)
    assert problems.details == []
    return data


YAML_DOCS = [
    # the line-based fast path
    "a: 1\nb: x\n",
    "a:\n- 1\n- two\nb:\n  - c: d\n    e: ~\n  -\n  - [nested]\n",
    "m:\n  k: {x: 1, y: 'q', z: \"a # b\", w: fx*}\n  l: [a, 'b', \"c\", 1.5]\n  e: {}\n  f: [ ]\n",
    "k: yes\nl: No\nm: on\nn: 010\no: 0x1F\np: 1_000\nq: 1:30\nr: .inf\ns: null\nt: 3.0\nu: 1e5\n",
    "yes: 1\nnull: 2\noff: 3\n",
    "a: b  # comment\n# full line\n   # indented comment\nc:   \nd: 'x'   # c\ne: a b  c\nf: http://h:1/p\n",
    "- x\n- y: 1\n  z:\n    w: 2\n- ",
    # outside the subset: PyYAML decides
    "a:\n  - - nested\n",
    "a: &anchor {b: 1}\nc: *anchor\n",
    "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",
    "a: 2024-01-01\nb: !!str 5\nc: |\n  block\n  text\n",
    "a: multi\n  line\nb: 'x\ty'\n",
    "a: 1\r\nb: 2\r\n",
    "---\na: caf\u00e9\n...\n",
    "a: \"esc\\taped\"\nb: 'it''s'\nc: -5\nd: [a, [b]]\n",
    "",
    "# only a comment\n",
]


@pytest.mark.parametrize("text", YAML_DOCS)
def test_yaml_loading_matches_pyyaml(text: str) -> None:
    assert typed(load_data(text)) == typed(yaml.safe_load(text))


@pytest.mark.parametrize("text", YAML_DOCS[:7])
def test_fast_path_is_taken_and_matches_pyyaml(text: str) -> None:
    assert typed(_load_subset(text)) == typed(yaml.safe_load(text))


def test_equal_keys_spelled_differently_are_duplicates() -> None:
    err = config_error("model_router: {default_model: b}\nyes: 1\non: 2\n")
    assert "duplicate key True" in detail_for(err, "<document>.True")


def test_bundled_and_generated_configs_load_like_pyyaml() -> None:
    texts = [CONF_PATH.read_text(encoding="utf-8"),
             make_yaml([rule(f"m{i}", asset=f"a{i % 7}", horizon=f"<{i + 1}", priority=i) for i in range(50)])]
    for text in texts:
        assert typed(load_data(text)) == typed(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: b: c\n", "invalid YAML at line 1, column 5"),
        ("a: 1\n  b: 2\n", "invalid YAML at line 2"),
        ("a: [1, 2\n", "invalid YAML at line 2"),
        ("a: {b: [1]: 2}\n", "invalid YAML at line 1"),
        ("a: *missing\n", "invalid YAML at line 1, column 4"),
        ("? [a]\n: 1\n", "invalid YAML at line 1"),
    ],
)
def test_invalid_yaml_located(text: str, fragment: str) -> None:
    err = config_error(text)
    assert err.details[0]["path"] == "<document>"
    assert fragment in err.details[0]["message"], err.details


def test_duplicate_keys_rejected_with_paths() -> None:
    text = """model_router:
  rules:
    - match: {asset_class: "crypto", asset_class: "fx"}
      model: m
      model: n
  config:
    default_model: b
    max_cached_models: 0
  config:
    default_model: b
extra: 1
extra: 2
"""
    err = config_error(text)
    assert detail_for(err, "rules[0].match.asset_class") == (
        "duplicate key 'asset_class' at line 3, column 38 (first defined at line 3, column 15)"
    )
    assert "line 5, column 7 (first defined at line 4, column 7)" in detail_for(err, "rules[0].model")
    assert "duplicate key 'config'" in detail_for(err, "config")
    assert "duplicate key 'extra'" in detail_for(err, "<document>.extra")
    # later problems are still reported (PyYAML's last-wins data is validated)
    assert "<document>.extra" in paths_of(err)
    assert "(+" in err.message


def test_duplicate_model_router_key() -> None:
    err = config_error("model_router: {default_model: a}\nmodel_router: {default_model: b}\n")
    assert "duplicate key 'model_router'" in detail_for(err, "<document>.model_router")


def test_duplicate_keys_found_on_slow_path_too() -> None:
    text = "model_router:\n  default_model: &m b\n  config: {default_model: *m, default_model: b}\n"
    assert "duplicate key" in detail_for(config_error(text), "config.default_model")


def test_merge_keys_are_not_duplicates() -> None:
    text = """model_router:
  config: {default_model: b}
  model_thresholds:
    base: &limits {max_latency_ms: 3, min_samples: 10}
    m:
      <<: *limits
      min_samples: 20
"""
    config = parse_config(text)
    assert config.threshold_for("m") == ModelThreshold(max_latency_ms=3, min_samples=20)


# --------------------------------------------------------------------------- alias expansion bound


def laughs(levels: int, refs: int, tail: str) -> str:
    """A "billion laughs" document: each anchor is a list of ``refs`` aliases to the previous one."""
    lines = ["anchors:", '  - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * refs)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n" + tail


async def refused_within(text: str, seconds: float) -> ConfigError:
    """Parse in a worker thread so a regression fails the test instead of hanging the suite."""
    def attempt() -> ConfigError:
        with pytest.raises(ConfigError) as caught:
            parse_config(text)
        return caught.value

    with trio.fail_after(seconds):
        return await trio.to_thread.run_sync(attempt, abandon_on_cancel=True)


async def test_billion_laughs_is_refused_quickly_with_a_bounded_message() -> None:
    text = laughs(9, 9, "model_router:\n  rules: *a9\n  config: {default_model: m}\n")
    err = await refused_within(text, 2.0)
    assert paths_of(err) == ["<document>"]
    assert f"more than {MAX_EXPANDED_NODES} YAML nodes" in err.details[0]["message"]
    assert "MAX_EXPANDED_NODES" in err.message
    assert len(str(err)) < 500


async def test_merge_key_bomb_is_refused_quickly() -> None:
    """``<<: [*prev, *prev]`` doubles a mapping's entries per level when PyYAML flattens merges."""
    lines = ["anchors:", "  - &m0 {a: 1, b: 2}"]
    lines += [f"  - &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}" for i in range(1, 40)]
    text = "\n".join(lines) + "\nmodel_router:\n  config: {default_model: m}\n  model_thresholds: {x: *m39}\n"
    err = await refused_within(text, 2.0)
    assert "MAX_EXPANDED_NODES" in err.message


async def test_alias_graph_below_the_limit_reports_bounded_problems() -> None:
    """Nothing refused: the validator's messages quote the (large) rule values briefly."""
    text = laughs(3, 9, "model_router:\n  rules: *a3\n  config: {default_model: m}\n")  # 9^4 leaves
    err = await refused_within(text, 2.0)
    assert paths_of(err) == ["<document>.anchors"] + [f"rules[{i}]" for i in range(9)]
    assert all(len(d["message"]) < 500 for d in err.details)


def test_expanded_size_counts_every_alias_reference() -> None:
    node = yaml.compose("a: &x [1, 22]\nb: *x\nc: *x\n")
    # root, three keys, three copies of [1, 22]; characters: the keys and three copies of "1", "22"
    assert _expanded_size(node, 1_000, 1_000) == (1 + 3 + 3 * 3, 3 + 3 * 3)
    assert _expanded_size(node, 5, 1_000)[0] > 5  # stops once past a limit
    assert _expanded_size(node, 1_000, 5)[1] > 5
    loop = yaml.compose("a: &r [1, *r]\n")
    assert _expanded_size(loop, 1_000, 1_000) == (1 + 1 + 3, 2)  # the recursive alias counts once


async def test_long_scalar_repeated_through_aliases_is_refused() -> None:
    """Scalars are not collections, so only the character count catches this one."""
    rules = "".join(f"    - {{model: m, description: *s, priority: {i}}}\n" for i in range(60))
    text = f"long: &s {'x' * 200_000}\nmodel_router:\n  config: {{default_model: m}}\n  rules:\n{rules}"
    err = await refused_within(text, 2.0)
    assert f"more than {MAX_EXPANDED_CHARS} characters" in err.details[0]["message"]
    assert paths_of(err) == ["<document>"]


def test_ampersands_in_horizons_do_not_change_results() -> None:
    """A horizon's '&' makes the anchor check run (a false hit), which must not alter anything."""
    text = 'model_router:\n  config: {default_model: b}\n  rules:\n    - {match: {horizon_ms: ">=1&<5"}, model: m}\n'
    assert parse_config(text).rules[0].horizon.text == ">=1&<5"


def test_recursive_alias_is_reported_not_expanded() -> None:
    err = config_error("model_router:\n  config: {default_model: m}\n  rules: &r [*r]\n")
    message = detail_for(err, "rules[0]")
    assert message.startswith("expected a mapping, got list [[[") and len(message) < 100


def test_shared_anchors_within_the_limit_still_load() -> None:
    text = """model_router:
  config: {default_model: b}
  rules:
    - match: &crypto {asset_class: "crypto", horizon_ms: "<5"}
      model: m
    - match: *crypto
      model: n
      priority: 200
"""
    config = parse_config(text)
    assert [r.model for r in config.rules] == ["m", "n"]
    assert len(config.warnings) == 1
