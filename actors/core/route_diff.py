"""Which routes change between two rule sets: the (asset class, horizon bucket) pairs whose model differs.

Used by ``model-router validate NEW --against OLD`` before a deploy. Horizon buckets are the
intervals between the rule boundaries of *both* configs (the snapshot's own bucketing,
over the union of their points), so every horizon inside a bucket routes the same way
under each config and one representative horizon per bucket decides. Asset classes are
every literal asset class either config names, plus ``*`` standing for any other class;
symbols are every literal symbol either config names (reported only where a symbol
changes the answer beyond its asset class and bucket). Glob patterns other than ``*``
are exercised through those names, not enumerated.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from actors.core.rules import RouterConfig, RoutingSnapshot, Selection

OTHER_ASSET_CLASS = "*"
_OTHER_PROBE = "\x00any-other-asset-class"
_WILDCARDS = frozenset("*?[")


@attrs.frozen
class RouteChange:
    """One route whose answer differs: which model (and rule) before, which after."""

    asset_class: str
    horizon_bucket: str
    symbol: str | None
    old_model: str
    new_model: str
    old_rule: int | None
    new_rule: int | None

    def describe(self) -> str:
        symbol = f" symbol={self.symbol}" if self.symbol is not None else ""
        return (f"{self.asset_class} {self.horizon_bucket}{symbol}: {self.old_model} (rule {_rule(self.old_rule)})"
                f" -> {self.new_model} (rule {_rule(self.new_rule)})")


def _rule(index: int | None) -> str:
    return "default" if index is None else str(index)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def horizon_buckets(points: Iterable[float]) -> list[tuple[str, float]]:
    """(label, representative horizon) of every bucket a request can fall in (horizons are >= 0)."""
    ordered = sorted(set(points))
    if not ordered:
        return [("(-inf,+inf)", 0.0)]
    buckets: list[tuple[str, float]] = []
    if ordered[0] > 0:
        buckets.append((f"(-inf,{_number(ordered[0])})", ordered[0] / 2))
    for position, point in enumerate(ordered):
        buckets.append((f"[{_number(point)},{_number(point)}]", point))
        if position + 1 < len(ordered):
            upper = ordered[position + 1]
            buckets.append((f"({_number(point)},{_number(upper)})", (point + upper) / 2))
    buckets.append((f"({_number(ordered[-1])},+inf)", ordered[-1] + 1))
    return buckets


def _literals(configs: Iterable[RouterConfig], field: str) -> list[str]:
    names = {getattr(rule, field) for config in configs for rule in config.rules}
    return sorted(n for n in names if not _WILDCARDS & set(n))


def _differs(a: Selection, b: Selection) -> bool:
    return a.model != b.model


def route_changes(old: RoutingSnapshot, new: RoutingSnapshot) -> tuple[RouteChange, ...]:
    """Every (asset class, horizon bucket[, symbol]) whose model differs between ``old`` and ``new``."""
    configs = (old.config, new.config)
    classes = [(name, name) for name in _literals(configs, "asset_class")] + [(OTHER_ASSET_CLASS, _OTHER_PROBE)]
    symbols = _literals(configs, "symbol")
    changes: list[RouteChange] = []
    for label, horizon in horizon_buckets([*old.points, *new.points]):
        for shown, probe in classes:
            base_old, base_new = old.select(probe, horizon), new.select(probe, horizon)
            if _differs(base_old, base_new):
                changes.append(RouteChange(shown, label, None, base_old.model, base_new.model,
                                           base_old.rule_index, base_new.rule_index))
            for symbol in symbols:
                was, now = old.select(probe, horizon, symbol), new.select(probe, horizon, symbol)
                if (was.model, now.model) != (base_old.model, base_new.model) and _differs(was, now):
                    changes.append(RouteChange(shown, label, symbol, was.model, now.model,
                                               was.rule_index, now.rule_index))
    return tuple(changes)
