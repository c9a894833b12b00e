"""Tests for actors.core.rules.horizons: horizon expressions, their bounds and their errors in a config."""

from __future__ import annotations

import pytest

from actors.core.rules import (
    HorizonRange,
    parse_horizon,
)
from tests.core.rules.rule_docs import (
    config_error,
    detail_for,
    make_yaml,
    rule,
)


@pytest.mark.parametrize(
    ("expr", "inside", "outside"),
    [
        ("<5", [0, 4.999, -1], [5, 6]),
        ("<=5", [5, 0], [5.0001, 6]),
        (">5", [5.0001, 1e12], [5, 0]),
        (">=5", [5, 6], [4.999]),
        ("*", [0, 5, 1e15, -3], []),
        (">=60000 & <7200000", [60000, 7199999.9], [59999.9, 7200000]),
        (">1&<3", [2], [1, 3]),
        ("  >= 1  &  <= 3  ", [1, 3], [0.99, 3.01]),
        ("<2.5", [2.4999], [2.5]),
        (">=0.5 & <=0.75", [0.5, 0.75], [0.49, 0.76]),
        (">1 & >2 & <10 & <=9", [2.1, 9], [2, 9.5]),
        (">=5 & <=5", [5], [4.9999, 5.0001]),
    ],
)
def test_horizon_expressions(expr: str, inside: list[float], outside: list[float]) -> None:
    rng = parse_horizon(expr)
    assert all(rng.contains(v) for v in inside)
    assert not any(rng.contains(v) for v in outside)
    assert not rng.is_empty()


def test_horizon_bounds_fields() -> None:
    expr = ">=60000 & <7200000"
    assert parse_horizon(expr) == HorizonRange(60000.0, True, 7200000.0, False, expr)
    star = parse_horizon("*")
    assert (star.lo, star.hi) == (None, None)
    tie = parse_horizon(">=5 & >5")
    assert (tie.lo, tie.lo_inclusive) == (5.0, False)


@pytest.mark.parametrize(
    "expr",
    [
        "=5",
        ">>5",
        "<-1",
        "abc",
        "",
        "   ",
        "* & <5",
        "<5 &",
        "& <5",
        "<",
        "5",
        "<5 | >6",
        "<1e3",
        "<5.",
        "<.5",
        "<5 & *",
        "≤5",
    ],
)
def test_horizon_invalid_forms(expr: str) -> None:
    with pytest.raises(ValueError):
        parse_horizon(expr)


@pytest.mark.parametrize("expr", [">5 & <3", ">5 & <=5", ">=5 & <5", ">5 & <5"])
def test_horizon_empty_ranges_rejected(expr: str) -> None:
    with pytest.raises(ValueError, match="empty range"):
        parse_horizon(expr)


def test_horizon_covers() -> None:
    wide = parse_horizon("<100")
    assert wide.covers(parse_horizon("<50"))
    assert wide.covers(parse_horizon("<100"))
    assert not wide.covers(parse_horizon("<=100"))
    assert parse_horizon("<=100").covers(wide)
    assert parse_horizon("*").covers(parse_horizon(">=1 & <2"))
    assert not parse_horizon(">=1").covers(parse_horizon("*"))
    assert parse_horizon(">=1").covers(parse_horizon(">1"))
    assert not parse_horizon(">1").covers(parse_horizon(">=1"))
    assert not parse_horizon("<50").covers(parse_horizon(">=40 & <60"))


@pytest.mark.parametrize(
    ("expr", "message"),
    [("=5", "invalid horizon term"), (">5 & <3", "empty range"), ("", "empty horizon")],
)
def test_horizon_errors_in_config_have_paths(expr: str, message: str) -> None:
    err = config_error(make_yaml([rule("m"), rule("m", horizon=expr)]))
    assert message in detail_for(err, "rules[1].match.horizon_ms")


@pytest.mark.parametrize("value", ["60000", "1.5", "true"])
def test_horizon_yaml_numbers_rejected(value: str) -> None:
    text = (
        "model_router:\n  config: {default_model: b}\n"
        f"  rules:\n    - match: {{horizon_ms: {value}}}\n      model: m\n"
    )
    err = config_error(text)
    assert "quoted expression string" in detail_for(err, "rules[0].match.horizon_ms")
