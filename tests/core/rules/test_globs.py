"""Tests for actors.core.rules.globs: glob matching through the snapshot and glob problems in a config."""

from __future__ import annotations

import pytest

from tests.core.rules.rule_docs import (
    config_error,
    detail_for,
    make_yaml,
    rule,
    snapshot_for,
)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("crypto", ["crypto"], ["crypto2", "Crypto", "cryp"]),
        ("fx*", ["fx", "fx_spot"], ["FX_spot", "xfx"]),
        ("*_stocks", ["us_stocks", "_stocks"], ["us_stock"]),
        ("us_?tocks", ["us_stocks", "us_xtocks"], ["us_tocks"]),
        ("[cf]x", ["cx", "fx"], ["ax", "Fx"]),
        ("[!c]x", ["fx", "ax"], ["cx"]),
        ("[a-c]*", ["apple", "crypto"], ["dog"]),
        ("eu/stocks:main-1.0", ["eu/stocks:main-1.0"], ["eu/stocks"]),
    ],
)
def test_asset_class_globs(pattern: str, matches: list[str], misses: list[str]) -> None:
    snap = snapshot_for([rule("hit", asset=pattern)])
    assert all(snap.select(a, 1).model == "hit" for a in matches)
    assert all(snap.select(a, 1).model == "base" for a in misses)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty glob"),
        ("a b", "disallowed"),
        ("crypto$", "disallowed"),
        ("[abc", "unbalanced '['"),
        ("abc]", "unbalanced ']'"),
        ("[]", "empty character class"),
        ("[!]", "empty character class"),
        ("[a[b]", "unbalanced '['"),
    ],
)
def test_bad_globs(pattern: str, message: str) -> None:
    err = config_error(make_yaml([rule("m", asset=pattern), rule("m", symbol=pattern)]))
    assert message in detail_for(err, "rules[0].match.asset_class")
    assert message in detail_for(err, "rules[1].match.symbol")


def test_glob_must_be_string() -> None:
    text = (
        "model_router:\n  config: {default_model: b}\n"
        "  rules:\n    - match: {asset_class: 5}\n      model: m\n"
    )
    assert "glob" in detail_for(config_error(text), "rules[0].match.asset_class")
