"""Tests for actors.core.rules.problems: values echoed in messages are bounded, short ones read as repr.

A config value can be huge (a long string, a deep structure, or a small YAML alias graph that
expands to billions of nodes); a message quoting it must stay short and be built quickly.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.core.rules.problems import _describe, _echo, _path_key
from tests.core.rules.rule_docs import config_error, detail_for, make_yaml, rule


@pytest.mark.parametrize(
    "value",
    [5, -1.5, True, None, "SIGKILL", "", [1, "two"], {"b": 1, "a": [2]}, ("x",), float("inf")],
)
def test_small_values_read_exactly_like_repr(value: Any) -> None:
    assert _echo(value) == repr(value)
    assert _describe(value) == f"{type(value).__name__} {value!r}"


def test_long_string_keeps_both_ends_and_is_bounded() -> None:
    text = "head" + "x" * 1_000_000 + "tail"
    echoed = _echo(text)
    assert len(echoed) <= 200
    assert echoed.startswith("'head") and echoed.endswith("tail'") and "..." in echoed


def test_wide_and_deep_structures_are_bounded() -> None:
    wide = {f"k{i}": list(range(1000)) for i in range(1000)}
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    assert len(_describe(wide)) < 400
    assert len(_describe(deep)) < 100
    assert _echo(wide).startswith("{'k0': [0, 1,")  # insertion order, like repr


def test_shared_structure_is_not_expanded() -> None:
    """The Python shape of a YAML alias bomb: 9 references per level, 9 levels (about 387M leaves)."""
    value: Any = ["lol"] * 9
    for _ in range(9):
        value = [value] * 9
    started = time.perf_counter()
    described = _describe(value)
    assert time.perf_counter() - started < 2.0
    assert len(described) < 400


def test_recursive_structure_is_bounded() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert len(_echo(loop)) < 50


def test_path_keys_are_shortened_only_when_long() -> None:
    assert _path_key("max_latency_ms") == "max_latency_ms"
    assert _path_key(True) == "True"
    long_key = "k" * 10_000
    assert len(_path_key(long_key)) <= 80 and "..." in _path_key(long_key)


def test_config_messages_quote_huge_values_briefly() -> None:
    huge = "d" * 1_000_000 + "$"
    text = make_yaml([rule("m", asset=huge), {"model": "m", "description": ["x" * 1000] * 1000}])
    text += f"  ? {'k' * 100_000}\n  : 1\n"  # explicit key: plain keys stop at 1024 characters
    err = config_error(text)
    assert "disallowed characters" in detail_for(err, "rules[0].match.asset_class")
    assert "expected a string, got list" in detail_for(err, "rules[1].description")
    assert any(d["message"].startswith("unknown key 'kkk") for d in err.details)
    assert all(len(d["message"]) < 500 and len(d["path"]) < 200 for d in err.details), err.details
    assert len(str(err)) < 2_000
