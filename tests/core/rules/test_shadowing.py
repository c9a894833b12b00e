"""Tests for actors.core.rules.shadowing: warnings agree with the O(n^2) definition."""

from __future__ import annotations

import fnmatch
import random
from typing import Any

import pytest

from actors.core.rules import (
    Rule,
    parse_config,
    parse_horizon,
)
from actors.core.rules.shadowing import _shadow_warnings
from tests.core.rules.rule_docs import (
    ASSET_GLOBS,
    SYMBOL_GLOBS,
    make_yaml,
    rule,
)


def test_shadow_warnings_name_both_rules() -> None:
    config = parse_config(
        make_yaml(
            [
                rule("broad", asset="crypto*", horizon="<100000", priority=1),
                rule("narrow", asset="crypto_spot", horizon=">=10 & <60000", symbol="BTC*"),
                rule("same", asset="crypto*", horizon="<50"),
            ]
        )
    )
    assert len(config.warnings) == 2
    assert "rules[1]" in config.warnings[0] and "rules[0]" in config.warnings[0]
    assert "rules[2]" in config.warnings[1] and "rules[0]" in config.warnings[1]


def test_shadow_warning_uses_evaluation_order() -> None:
    wide = rule("wide", asset="*", priority=2)
    config = parse_config(make_yaml([rule("narrow", asset="fx", priority=1), wide]))
    assert config.warnings == ()
    config = parse_config(make_yaml([rule("narrow", asset="fx", priority=3), wide]))
    assert len(config.warnings) == 1 and config.warnings[0].startswith("rules[0]")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (rule("a", asset="crypto", horizon="<100"), rule("b", asset="crypto", horizon=">=50 & <200")),
        (rule("a", asset="crypto", horizon="<100"), rule("b", asset="crypto", horizon="<=100")),
        (rule("a", asset="fx*"), rule("b", asset="f*")),
        (rule("a", asset="fx?"), rule("b", asset="fx*")),
        (rule("a", symbol="BTC*"), rule("b")),
        (rule("a", asset="crypto"), rule("b", asset="crypto2")),
    ],
)
def test_no_false_shadow_warnings(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert parse_config(make_yaml([first, second])).warnings == ()


def glob_covers(a: str, b: str) -> bool:
    """Conservative 'every string b matches, a matches too' (the documented shadow rule)."""
    return a == "*" or a == b or (set("*?[").isdisjoint(b) and fnmatch.fnmatchcase(b, a))


def brute_force_shadow_warnings(rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """The O(n^2) definition: the first earlier rule (priority, file order) that covers it."""
    ordered = sorted(rules, key=lambda r: r.priority)
    out = []
    for pos, later in enumerate(ordered):
        for earlier in ordered[:pos]:
            if (earlier.horizon.covers(later.horizon) and glob_covers(earlier.asset_class, later.asset_class)
                    and glob_covers(earlier.symbol, later.symbol)):
                out.append(
                    f"rules[{later.index}] can never match: rules[{earlier.index}] is evaluated "
                    f"earlier (priority {earlier.priority} vs {later.priority}) and covers its match"
                )
                break
    return tuple(out)


@pytest.mark.parametrize("seed", range(20))
def test_shadow_warnings_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    horizons = ["*", "<5", "<=5", ">5", ">=5", ">=1 & <10", ">1 & <=5", ">=5 & <=5", "<" + "9" * 400, ">0"]
    symbols = [*SYMBOL_GLOBS, "BTCUSD", "B"]
    rules = tuple(
        Rule(i, rng.choice([*ASSET_GLOBS, "crypto_spot", "c"]), parse_horizon(rng.choice(horizons)),
             rng.choice(symbols), "m", None, rng.choice([1, 5, 100, 100]), "")
        for i in range(rng.randint(0, 60))
    )
    assert _shadow_warnings(rules) == brute_force_shadow_warnings(rules)
