"""The compiled, memoized routing table; ``RoutingSnapshot.select`` is the per-request hot path."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import attrs

from actors.core.rules.globs import _compile_glob
from actors.core.rules.horizons import HorizonRange, _fmt_number
from actors.core.rules.schema import RouterConfig, Rule, Selection, _evaluation_order

#: Memo entries kept per snapshot before the memo is cleared; asset classes and symbols come
#: from clients, so the memo must never grow without bound.
DEFAULT_MEMO_LIMIT = 8192

_CompiledRule = tuple[Callable[[str], Any], HorizonRange, Callable[[str], Any] | None, Selection]


@attrs.frozen(eq=False)
class RoutingSnapshot:
    """Immutable compiled routing table; ``select`` is the per-request hot path.

    Horizons are reduced to a bucket index over the sorted critical points of all rule
    ranges, so every value in a bucket compares identically against every rule and the
    answer can be memoized per (asset_class, bucket, symbol).  The memo is the only mutable
    state; it is bounded and holds shared Selection objects, so no lock is needed in Trio.
    """

    config: RouterConfig
    _points: tuple[float, ...]
    _ordered: tuple[_CompiledRule, ...]
    _default: Selection
    _uses_symbol: bool
    _memo_limit: int
    _memo: dict[tuple[str, int, str | None], Selection] = attrs.field(factory=dict, repr=False)

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    @property
    def memo_size(self) -> int:
        """Current memo entries (for metrics and tests of the bound)."""
        return len(self._memo)

    @property
    def memo_limit(self) -> int:
        return self._memo_limit

    @property
    def points(self) -> tuple[float, ...]:
        """Sorted critical points that define the horizon buckets."""
        return self._points

    def select(self, asset_class: str, horizon_ms: float, symbol: str | None = None) -> Selection:
        """Pick the model for a request; first matching rule in priority order, else default."""
        if horizon_ms != horizon_ms:
            raise ValueError("horizon_ms must not be NaN")
        points = self._points
        i = bisect_left(points, horizon_ms)
        bucket = i + i + 1 if i < len(points) and points[i] == horizon_ms else i + i
        key = (asset_class, bucket, symbol if self._uses_symbol else None)
        selection = self._memo.get(key)
        if selection is None:
            selection = self._fill(key, asset_class, horizon_ms, symbol)
        return selection

    def _fill(self, key: tuple[str, int, str | None], asset_class: str, horizon_ms: float,
              symbol: str | None) -> Selection:
        """Memo miss: scan the rules once, then remember the answer for the whole bucket."""
        selection = self._resolve(asset_class, horizon_ms, symbol)
        memo = self._memo
        if len(memo) >= self._memo_limit:
            memo.clear()
        memo[key] = selection
        return selection

    def _resolve(self, asset_class: str, horizon_ms: float, symbol: str | None) -> Selection:
        for asset_ok, horizon, symbol_ok, selection in self._ordered:
            if not asset_ok(asset_class) or not horizon.contains(horizon_ms):
                continue
            if symbol_ok is not None and (symbol is None or not symbol_ok(symbol)):
                continue
            return selection
        return self._default

    def horizon_bucket(self, horizon_ms: float) -> int:
        """Bucket index of a horizon: even = open gap between points, odd = exactly a point."""
        if horizon_ms != horizon_ms:
            raise ValueError("horizon_ms must not be NaN")
        points = self._points
        i = bisect_left(points, horizon_ms)
        return i + i + 1 if i < len(points) and points[i] == horizon_ms else i + i

    def bucket_label(self, bucket: int) -> str:
        """Interval notation for a bucket, e.g. ``(60000,7200000)`` or ``[60000,60000]``."""
        points = self._points
        if not 0 <= bucket <= 2 * len(points):
            raise ValueError(f"bucket {bucket} out of range 0..{2 * len(points)}")
        k, exact = divmod(bucket, 2)
        if exact:
            p = _fmt_number(points[k])
            return f"[{p},{p}]"
        lo = _fmt_number(points[k - 1]) if k > 0 else "-inf"
        hi = _fmt_number(points[k]) if k < len(points) else "+inf"
        return f"({lo},{hi})"


def _compile_rule(rule: Rule, config_hash: str) -> _CompiledRule:
    selection = Selection(rule.model, rule.index, config_hash, rule.fallback, rule.description)
    symbol_ok = None if rule.symbol == "*" else _compile_glob(rule.symbol)
    return (_compile_glob(rule.asset_class), rule.horizon, symbol_ok, selection)


def compile_snapshot(config: RouterConfig, *, memo_limit: int = DEFAULT_MEMO_LIMIT) -> RoutingSnapshot:
    """Precompute everything ``select`` needs so the hot path is a bisect plus a dict hit."""
    if memo_limit < 1:
        raise ValueError("memo_limit must be >= 1")
    ordered = _evaluation_order(config.rules)
    points = sorted({float(p) for rule in ordered for p in rule.horizon.points()})
    default = Selection(
        config.settings.default_model, None, config.config_hash, None, "no rule matched: default model"
    )
    return RoutingSnapshot(
        config=config,
        points=tuple(points),
        ordered=tuple(_compile_rule(r, config.config_hash) for r in ordered),
        default=default,
        uses_symbol=any(r.symbol != "*" for r in ordered),
        memo_limit=memo_limit,
    )


def select_model(snapshot: RoutingSnapshot, asset_class: str, horizon_ms: float,
                 symbol: str | None = None) -> Selection:
    """Module-level alias of ``RoutingSnapshot.select`` for callers that prefer functions."""
    return snapshot.select(asset_class, horizon_ms, symbol)
