"""Tests for actors.core.rules.snapshot: ordering, buckets, the memo and the compiled selector.

The randomized test compares the compiled snapshot with a brute-force reference written here
(independent of HorizonRange.contains) because bucketing and memoization are the parts most
likely to hide off-by-one mistakes at range boundaries.
"""

from __future__ import annotations

import fnmatch
import operator
import random
from collections.abc import Callable
from typing import Any

import pytest

from actors.core.rules import (
    RouterConfig,
    Selection,
    compile_snapshot,
    parse_config,
    parse_horizon,
    select_model,
)
from tests.core.rules.rule_docs import (
    ASSET_GLOBS,
    CONF_PATH,
    DEMO_MODELS,
    SYMBOL_GLOBS,
    make_yaml,
    rule,
    snapshot_for,
)


@pytest.mark.parametrize(
    ("expr", "value", "hit"),
    [
        ("<60000", 59999.999, True),
        ("<60000", 60000, False),
        ("<=60000", 60000, True),
        ("<=60000", 60000.001, False),
        (">60000", 60000, False),
        (">60000", 60000.001, True),
        (">=60000", 60000, True),
        (">=60000", 59999.999, False),
        (">=5 & <=5", 5, True),
        (">=5 & <=5", 5.000001, False),
        (">=5 & <=5", 4.999999, False),
    ],
)
def test_boundaries_through_snapshot(expr: str, value: float, hit: bool) -> None:
    snap = snapshot_for([rule("hit", horizon=expr)])
    assert (snap.select("any", value).model == "hit") is hit


def test_nan_horizon_rejected() -> None:
    snap = snapshot_for([rule("m", horizon="<5")])
    with pytest.raises(ValueError, match="NaN"):
        snap.select("x", float("nan"))


def test_buckets_and_labels() -> None:
    snap = snapshot_for([rule("a", horizon="<60000"), rule("b", horizon=">=60000 & <7200000")])
    assert snap.points == (60000.0, 7200000.0)
    assert snap.horizon_bucket(10) == 0
    assert snap.horizon_bucket(60000) == 1
    assert snap.horizon_bucket(60001) == 2
    assert snap.horizon_bucket(7200000) == 3
    assert snap.horizon_bucket(1e9) == 4
    assert [snap.bucket_label(b) for b in range(5)] == [
        "(-inf,60000)",
        "[60000,60000]",
        "(60000,7200000)",
        "[7200000,7200000]",
        "(7200000,+inf)",
    ]
    with pytest.raises(ValueError):
        snap.bucket_label(5)


def test_decimal_point_label() -> None:
    snap = snapshot_for([rule("a", horizon="<2.5")])
    assert snap.bucket_label(1) == "[2.5,2.5]"


def test_priority_order_and_file_index() -> None:
    snap = snapshot_for(
        [
            rule("late", asset="crypto", priority=50),
            rule("early", asset="cry*", priority=5),
            rule("default_prio", asset="crypto"),
        ]
    )
    chosen = snap.select("crypto", 10)
    assert (chosen.model, chosen.rule_index) == ("early", 1)
    assert snap.select("cryptox", 10).rule_index == 1
    assert snap.select("stocks", 10).rule_index is None


def test_ties_keep_file_order() -> None:
    snap = snapshot_for(
        [
            rule("first", asset="crypto", horizon="<100", priority=7),
            rule("second", asset="crypto", priority=7),
            rule("third", asset="crypto", horizon="<100", priority=7),
        ]
    )
    assert snap.select("crypto", 5).model == "first"
    assert snap.select("crypto", 500).model == "second"


def test_default_fallthrough_and_zero_rules() -> None:
    config = parse_config(make_yaml([], default="base"))
    snap = compile_snapshot(config)
    chosen = snap.select("anything", 123.0, "SYM")
    assert chosen == Selection("base", None, config.config_hash, None, chosen.description)
    assert snap.points == ()
    assert snap.bucket_label(snap.horizon_bucket(5)) == "(-inf,+inf)"


def test_selection_fields_and_reuse() -> None:
    config = parse_config(make_yaml([rule("m", asset="a", fallback="fb", description="why")]))
    snap = compile_snapshot(config)
    first = snap.select("a", 1)
    assert first == Selection("m", 0, config.config_hash, "fb", "why")
    assert snap.select("a", 2) is first
    assert select_model(snap, "a", 3) is first


def test_symbol_rules() -> None:
    snap = snapshot_for(
        [
            rule("btc", asset="crypto", symbol="BTC*"),
            rule("eth", asset="crypto", symbol="ETH?USD"),
            rule("crypto", asset="crypto"),
        ]
    )
    assert snap.select("crypto", 1, "BTCUSD").model == "btc"
    assert snap.select("crypto", 1, "ETHXUSD").model == "eth"
    assert snap.select("crypto", 1, "ETHUSD").model == "crypto"
    assert snap.select("crypto", 1, "btcusd").model == "crypto"
    assert snap.select("crypto", 1).model == "crypto"
    assert snap.select("crypto", 1, None).model == "crypto"


def test_symbol_rule_never_matches_without_symbol() -> None:
    snap = snapshot_for([rule("only_sym", symbol="*USD")])
    assert snap.select("x", 1).model == "base"
    assert snap.select("x", 1, "BTCUSD").model == "only_sym"


def test_snapshot_is_immutable() -> None:
    snap = snapshot_for([rule("m")])
    with pytest.raises(AttributeError):
        snap.config = None  # type: ignore[misc]


def test_bundled_config_is_clean() -> None:
    config = parse_config(CONF_PATH.read_text(encoding="utf-8"), known_models=DEMO_MODELS)
    assert isinstance(config, RouterConfig)
    assert config.warnings == ()
    assert config.settings.redis_url is None
    assert config.settings.default_model == "timesnet_base"
    assert any(r.fallback for r in config.rules)
    snap = compile_snapshot(config)
    assert snap.select("crypto", 30_000, "BTCUSDT").model == "tlob_tiny"
    assert snap.select("crypto", 600_000).model == "patchtst_small"
    assert snap.select("us_stocks", 4 * 3600 * 1000).model == "mamba_ts_small"
    assert snap.select("us_stocks", 3600 * 1000).model == "timesnet_base"


def test_memo_is_bounded_and_results_stay_correct() -> None:
    snap = snapshot_for([rule("c", asset="c*", horizon="<100"), rule("x", asset="x*")], memo_limit=64)
    for i in range(1000):
        asset = f"{'cx'[i % 2]}{i}"
        expected = "c" if i % 2 == 0 and i % 3 else ("x" if i % 2 else "base")
        horizon = 50 if i % 3 else 500
        assert snap.select(asset, horizon).model == expected
        assert snap.memo_size <= 64
    assert snap.memo_limit == 64


def test_memo_ignores_symbol_when_no_rule_uses_it() -> None:
    snap = snapshot_for([rule("m", asset="a")])
    for i in range(100):
        snap.select("a", 1, f"SYM{i}")
    assert snap.memo_size == 1


def test_memo_limit_validation() -> None:
    with pytest.raises(ValueError):
        compile_snapshot(parse_config(make_yaml([])), memo_limit=0)


POINTS = [0, 1000, 5000, 60000, 60000.5, 3600000]


OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


ASSETS = ["crypto", "cryptox", "Crypto", "fx_spot", "fx", "us_stocks", "us_xtocks", "eu_stocks", "c", ""]


SYMBOLS = [None, "BTCUSD", "ETHXUSD", "ETHUSD", "XRPUSD", "btcusd", "B"]


def random_horizon(rng: random.Random) -> tuple[str, list[tuple[str, float]]]:
    """A non-empty random expression plus its terms for the reference evaluator."""
    while True:
        terms = [(rng.choice(list(OPS)), float(rng.choice(POINTS))) for _ in range(rng.randint(0, 2))]
        text = " & ".join(f"{op}{v:g}" if v != int(v) else f"{op}{int(v)}" for op, v in terms) or "*"
        try:
            parse_horizon(text)
        except ValueError:
            continue
        return text, terms


def reference_select(
    rules: list[dict[str, Any]],
    terms: list[list[tuple[str, float]]],
    default: str,
    asset: str,
    horizon: float,
    symbol: str | None,
) -> tuple[str, int | None]:
    """Brute force: sort by (priority, file index) and test every condition directly."""
    for index in sorted(range(len(rules)), key=lambda i: (rules[i].get("priority", 100), i)):
        r = rules[index]
        if not fnmatch.fnmatchcase(asset, r["match"]["asset_class"]):
            continue
        if not all(OPS[op](horizon, v) for op, v in terms[index]):
            continue
        sym = r["match"]["symbol"]
        if sym != "*" and (symbol is None or not fnmatch.fnmatchcase(symbol, sym)):
            continue
        return r["model"], index
    return default, None


def random_query_horizon(rng: random.Random) -> float:
    base = float(rng.choice(POINTS))
    return rng.choice([base, base - 1, base + 1, base + 0.25, base - 0.25, rng.uniform(0, 4_000_000)])


@pytest.mark.parametrize("seed", range(10))
def test_randomized_against_reference(seed: int) -> None:
    rng = random.Random(seed)
    rules: list[dict[str, Any]] = []
    terms: list[list[tuple[str, float]]] = []
    for i in range(rng.randint(0, 25)):
        text, parsed_terms = random_horizon(rng)
        rules.append(
            {
                "match": {
                    "asset_class": rng.choice(ASSET_GLOBS),
                    "horizon_ms": text,
                    "symbol": rng.choice(SYMBOL_GLOBS),
                },
                "model": f"m{i}",
                "priority": rng.choice([1, 5, 5, 100, 100, 100]),
            }
        )
        terms.append(parsed_terms)
    snap = compile_snapshot(parse_config(make_yaml(rules, default="dflt")), memo_limit=rng.choice([8, 8192]))
    for _ in range(200):
        asset, horizon, symbol = rng.choice(ASSETS), random_query_horizon(rng), rng.choice(SYMBOLS)
        got = snap.select(asset, horizon, symbol)
        expected = reference_select(rules, terms, "dflt", asset, horizon, symbol)
        assert (got.model, got.rule_index) == expected, (asset, horizon, symbol)
