"""Route changes between two rule sets, over the union of their horizon buckets."""

from __future__ import annotations

import textwrap

from actors.core.route_diff import OTHER_ASSET_CLASS, horizon_buckets, route_changes
from actors.core.rules import compile_snapshot, parse_config


def snapshot(rules: str, default: str = "base") -> object:
    text = "model_router:\n  rules:\n" + textwrap.indent(textwrap.dedent(rules), "    ") + \
        f"  config:\n    default_model: {default}\n"
    return compile_snapshot(parse_config(text))


OLD = """\
- match: {asset_class: crypto, horizon_ms: "<60000"}
  model: fast
- match: {asset_class: crypto, horizon_ms: ">=60000"}
  model: slow
- match: {asset_class: fx, horizon_ms: "*"}
  model: fxm
"""


def test_buckets_cover_every_horizon_once() -> None:
    assert horizon_buckets([]) == [("(-inf,+inf)", 0.0)]
    labels = [label for label, _ in horizon_buckets([60000, 1000])]
    assert labels == ["(-inf,1000)", "[1000,1000]", "(1000,60000)", "[60000,60000]", "(60000,+inf)"]
    horizons = [h for _, h in horizon_buckets([1000, 60000])]
    assert horizons == [500, 1000, 30500, 60000, 60001]
    assert [label for label, _ in horizon_buckets([0])] == ["[0,0]", "(0,+inf)"]  # no negative horizons


def test_identical_rules_change_nothing() -> None:
    assert route_changes(snapshot(OLD), snapshot(OLD)) == ()


def test_moved_boundary_reports_only_the_buckets_in_between() -> None:
    new = OLD.replace('"<60000"', '"<30000"').replace('">=60000"', '">=30000"')
    changes = route_changes(snapshot(OLD), snapshot(new))
    assert [(c.asset_class, c.horizon_bucket, c.old_model, c.new_model) for c in changes] == [
        ("crypto", "[30000,30000]", "fast", "slow"),
        ("crypto", "(30000,60000)", "fast", "slow"),
    ]
    assert changes[0].old_rule == 0 and changes[0].new_rule == 1
    assert changes[0].describe() == "crypto [30000,30000]: fast (rule 0) -> slow (rule 1)"


def test_default_model_change_shows_for_other_asset_classes() -> None:
    changes = route_changes(snapshot(OLD), snapshot(OLD, default="newbase"))
    assert {c.asset_class for c in changes} == {OTHER_ASSET_CLASS}
    assert all((c.old_model, c.new_model, c.new_rule) == ("base", "newbase", None) for c in changes)
    assert [c.horizon_bucket for c in changes] == ["(-inf,60000)", "[60000,60000]", "(60000,+inf)"]


def test_symbol_rule_reported_with_its_symbol_only() -> None:
    new = '- match: {asset_class: crypto, horizon_ms: "<60000", symbol: BTCUSD}\n  model: btc\n  priority: 1\n' + OLD
    changes = route_changes(snapshot(OLD), snapshot(new))
    assert changes and all(c.symbol == "BTCUSD" and c.asset_class == "crypto" for c in changes)
    assert {(c.old_model, c.new_model) for c in changes} == {("fast", "btc")}
