"""Shadow warnings: rules that an earlier rule (in evaluation order) makes unreachable.

A shadowed rule is legal but almost always a mistake in priorities, so the config is accepted
and the operator is told which earlier rule hides which.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from actors.core.rules.globs import _has_wildcard, _pattern_covers
from actors.core.rules.horizons import _bound_keys
from actors.core.rules.schema import Rule, _evaluation_order


def _rule_covers(a: Rule, b: Rule) -> bool:
    """Reference semantics of 'a shadows b' (the fast check below must agree with it)."""
    return (
        a.horizon.covers(b.horizon)
        and _pattern_covers(a.asset_class, b.asset_class)
        and _pattern_covers(a.symbol, b.symbol)
    )


def _covering_map(patterns: Iterable[str]) -> dict[str, list[str]]:
    """For each pattern, the patterns among ``patterns`` that _pattern_covers it."""
    distinct = set(patterns)
    wild = [p for p in distinct if p != "*" and _has_wildcard(p)]
    out: dict[str, list[str]] = {}
    for pattern in distinct:
        covering = [pattern] if pattern == "*" or "*" not in distinct else ["*", pattern]
        if not _has_wildcard(pattern):
            covering.extend(p for p in wild if fnmatch.fnmatchcase(pattern, p))
        out[pattern] = covering
    return out


def _shadow_warnings(rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """Warn about rules an earlier rule (in evaluation order) makes unreachable.

    Same result as testing every earlier rule with ``_rule_covers`` and naming the first that
    covers, but only earlier rules whose asset_class and symbol globs cover the rule's are
    looked at: rules are grouped by (asset_class, symbol), each group in evaluation order, and
    the candidate groups of each (asset_class, symbol) pair are computed once.
    """
    ordered = _evaluation_order(rules)
    asset_cover = _covering_map(r.asset_class for r in ordered)
    symbol_cover = _covering_map(r.symbol for r in ordered)
    candidates: dict[tuple[str, str], list[tuple[str, str]]] = {}
    groups: dict[tuple[str, str], list[tuple[int, tuple[float, int], tuple[float, int], Rule]]] = {}
    out: list[str] = []
    for pos, rule in enumerate(ordered):
        key = (rule.asset_class, rule.symbol)
        keys = candidates.get(key)
        if keys is None:
            keys = candidates[key] = [(a, s) for a in asset_cover[key[0]] for s in symbol_cover[key[1]]]
        lo, hi = _bound_keys(rule.horizon)
        best: tuple[int, Rule] | None = None
        for group_key in keys:
            for epos, elo, ehi, earlier in groups.get(group_key, ()):
                if best is not None and epos >= best[0]:
                    break
                if elo <= lo and ehi >= hi:
                    best = (epos, earlier)
                    break
        if best is not None:
            earlier = best[1]
            out.append(
                f"rules[{rule.index}] can never match: rules[{earlier.index}] is evaluated "
                f"earlier (priority {earlier.priority} vs {rule.priority}) and covers its match"
            )
        group = groups.get(key)
        if group is None:
            groups[key] = [(pos, lo, hi, rule)]
        else:
            group.append((pos, lo, hi, rule))
    return tuple(out)
