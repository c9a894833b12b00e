"""Tests for actors.rules: horizon expressions, globs, validation, ordering and the memoized selector.

The randomized test compares the compiled snapshot with a brute-force reference written here
(independent of HorizonRange.contains) because bucketing and memoization are the parts most
likely to hide off-by-one mistakes at range boundaries.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors import rules as rules_module
from actors.rules import (
    ConfigError,
    HorizonRange,
    ModelThreshold,
    RouterConfig,
    RoutingSnapshot,
    Rule,
    Selection,
    SwitchingSettings,
    compile_snapshot,
    parse_config,
    parse_horizon,
    select_model,
)

CONF_PATH = Path(__file__).resolve().parent.parent / "conf" / "model_router_rules.yml"
DEMO_MODELS = frozenset({"tlob_tiny", "patchtst_small", "timesnet_base", "mamba_ts_small"})


# --------------------------------------------------------------------------- helpers


def make_yaml(rules: list[dict[str, Any]], default: str = "base", **sections: Any) -> str:
    """Build a config document from plain data so each test states only what it varies."""
    router: dict[str, Any] = {"rules": rules, "config": {"default_model": default}}
    router.update(sections)
    return yaml.safe_dump({"model_router": router}, sort_keys=False)


def rule(model: str, asset: str = "*", horizon: str = "*", symbol: str = "*", **extra: Any) -> dict[str, Any]:
    return {"match": {"asset_class": asset, "horizon_ms": horizon, "symbol": symbol}, "model": model, **extra}


def snapshot_for(rules: list[dict[str, Any]], **kwargs: Any) -> RoutingSnapshot:
    return compile_snapshot(parse_config(make_yaml(rules)), **kwargs)


def config_error(text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, **kwargs)
    return info.value


def paths_of(err: ConfigError) -> list[str]:
    return [d["path"] for d in err.details]


def detail_for(err: ConfigError, path: str) -> str:
    matches = [d["message"] for d in err.details if d["path"] == path]
    assert matches, f"no problem at {path!r}; got {err.details}"
    return matches[0]


# --------------------------------------------------------------------------- horizon expressions


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


# --------------------------------------------------------------------------- boundaries via the snapshot


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


# --------------------------------------------------------------------------- globs


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


# --------------------------------------------------------------------------- ordering and results


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


# --------------------------------------------------------------------------- validation


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


# --------------------------------------------------------------------------- warnings


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
    assert rules_module._shadow_warnings(rules) == brute_force_shadow_warnings(rules)


# --------------------------------------------------------------------------- YAML loading


def typed(value: Any) -> Any:
    """Structure with types spelled out, so 1, 1.0 and True do not compare equal."""
    if isinstance(value, dict):
        return ("map", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("seq", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def load_data(text: str) -> Any:
    problems = rules_module._Problems()
    data = rules_module._load_yaml(text, problems)
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
    assert typed(rules_module._load_subset(text)) == typed(yaml.safe_load(text))


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


# --------------------------------------------------------------------------- hash and serialisation


def test_config_hash_stable_across_comments_and_whitespace() -> None:
    text = make_yaml([rule("m", asset="crypto", horizon="<5")])
    edited = "# a comment\n\n" + text.replace("model_router:", "model_router:   # inline")
    assert parse_config(text).config_hash == parse_config(edited).config_hash
    changed = make_yaml([rule("m", asset="crypto", horizon="<6")])
    assert parse_config(changed).config_hash != parse_config(text).config_hash
    assert len(parse_config(text).config_hash) == 12


def test_to_dict_is_json_serialisable() -> None:
    config = parse_config(
        make_yaml(
            [rule("m", asset="crypto", horizon="<5", fallback="f", priority=3)],
            model_thresholds={"m": {"min_accuracy": 0.5}},
        )
    )
    view = json.loads(json.dumps(config.to_dict()))
    assert view["rules"][0] == {
        "index": 0,
        "match": {"asset_class": "crypto", "horizon_ms": "<5", "symbol": "*"},
        "model": "m",
        "fallback": "f",
        "priority": 3,
        "description": "",
    }
    assert view["config"]["default_model"] == "base"
    assert view["thresholds"]["m"]["min_accuracy"] == 0.5
    assert view["reload"]["signal"] == "SIGHUP"
    assert view["config_hash"] == config.config_hash and view["warnings"] == []


# --------------------------------------------------------------------------- bundled config


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


# --------------------------------------------------------------------------- memo bound


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


# --------------------------------------------------------------------------- randomized property test


ASSET_GLOBS = ["*", "crypto", "cry*", "fx*", "fx_spot", "us_?tocks", "[cf]*", "[!c]*", "*_stocks"]
SYMBOL_GLOBS = ["*", "*", "*", "BTC*", "ETH?USD", "*USD", "[BE]*"]
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


def test_switching_section_defaults_values_and_errors() -> None:
    """``switching:`` is optional, typed and bounded; every bad field is named."""
    base = "model_router:\n  config: {default_model: a}\n"
    assert parse_config(base).switching == SwitchingSettings()
    custom = parse_config(base + "  switching: {breaker_failures: 2, breaker_open_seconds: 0.5, "
                                 "alert_error_rate: 0.2, alert_latency_p95_ms: 50, min_requests: 3}\n")
    assert custom.switching == SwitchingSettings(2, 0.5, 0.2, 50.0, 3)
    assert custom.to_dict()["switching"]["breaker_failures"] == 2
    with pytest.raises(ConfigError) as caught:
        parse_config(base + "  switching: {breaker_failures: 0, alert_error_rate: 2, alert_latency_p95_ms: -1, "
                            "min_requests: 1.5, extra: 1}\n")
    paths = {d["path"] for d in caught.value.details}
    assert paths == {"switching.breaker_failures", "switching.alert_error_rate", "switching.alert_latency_p95_ms",
                     "switching.min_requests", "switching.extra"}


def test_request_deadline_ms_defaults_parses_and_is_validated() -> None:
    """``config.request_deadline_ms``: 500 by default, any positive number, else a problem at its path."""
    assert parse_config(make_yaml([rule("m")], default="m")).settings.request_deadline_ms == 500
    text = make_yaml([rule("m")], default="m", config={"default_model": "m", "request_deadline_ms": 75.5})
    assert parse_config(text).settings.request_deadline_ms == 75.5
    for bad in (0, -1, "fast", True):
        text = make_yaml([rule("m")], default="m", config={"default_model": "m", "request_deadline_ms": bad})
        err = config_error(text)
        assert paths_of(err) == ["config.request_deadline_ms"]


def billion_laughs(levels: int = 9) -> str:
    """A config whose rules are an alias bomb: a few hundred bytes standing for 9**9 scalars."""
    lines = ['x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nmodel_router:\n  rules: *a{levels}\n  config: {{default_model: m}}\n"


def test_yaml_alias_bomb_is_refused_at_once() -> None:
    """Aliases expanding past MAX_YAML_NODES are a problem at <document>, found in one pass (no expansion)."""
    err = config_error(billion_laughs())
    assert "alias bomb" in detail_for(err, "<document>")
    # Ordinary anchors and aliases still work.
    text = "model_router:\n  rules:\n    - &r {match: {asset_class: a}, model: m}\n  config: {default_model: m}\n"
    assert parse_config(text).settings.default_model == "m"
