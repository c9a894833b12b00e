"""The ``rules:`` section: each list entry validated into a Rule, with every problem recorded.

Most entries are clean, so ``_clean_rule`` accepts them in one pass of type checks; only an
entry with a problem takes the field-by-field route that explains what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.core.rules.fields import _check_keys, _mapping, _ModelRefs, _opt_int, _opt_str
from actors.core.rules.globs import _glob_problem
from actors.core.rules.horizons import _ANY_HORIZON, HorizonRange, _cached_horizon
from actors.core.rules.problems import _describe, _join, _Problems
from actors.core.rules.schema import Rule

_RULE_KEYS = ("match", "model", "fallback", "priority", "description")
_MATCH_KEYS = ("asset_class", "horizon_ms", "symbol")


def _parse_glob(m: Mapping[Any, Any], key: str, path: str, probs: _Problems) -> str:
    value = m.get(key, "*")
    if not isinstance(value, str):
        probs.add(_join(path, key), f"expected a quoted glob string, got {_describe(value)}")
        return "*"
    problem = _glob_problem(value)
    if problem is not None:
        probs.add(_join(path, key), problem)
        return "*"
    return value


def _parse_rule_horizon(m: Mapping[Any, Any], path: str, probs: _Problems) -> HorizonRange:
    value = m.get("horizon_ms", "*")
    if not isinstance(value, str):
        probs.add(_join(path, "horizon_ms"),
                  f"must be a quoted expression string such as \"<60000\", got {_describe(value)}")
        return _ANY_HORIZON
    try:
        return _cached_horizon(value)
    except ValueError as exc:
        probs.add(_join(path, "horizon_ms"), str(exc))
        return _ANY_HORIZON


def _parse_match(value: Any, path: str, probs: _Problems) -> tuple[str, HorizonRange, str]:
    m = _mapping(value, path, probs)
    if m is None:
        return "*", _ANY_HORIZON, "*"
    _check_keys(m, _MATCH_KEYS, path, probs)
    return (
        _parse_glob(m, "asset_class", path, probs),
        _parse_rule_horizon(m, path, probs),
        _parse_glob(m, "symbol", path, probs),
    )


_RULE_KEY_SET = frozenset(_RULE_KEYS)
_MATCH_KEY_SET = frozenset(_MATCH_KEYS)


def _clean_rule(index: int, value: Any, refs: _ModelRefs) -> Rule | None:
    """The rule when every field is present-and-valid or absent (the usual case), else None.

    Accepts exactly what the field-by-field checks in _parse_rule accept without a problem,
    so None only means 'take the slow path', which then reports what is wrong.
    """
    if type(value) is not dict or not value.keys() <= _RULE_KEY_SET:
        return None
    match = value.get("match")
    if type(match) is not dict or not match.keys() <= _MATCH_KEY_SET:
        return None
    asset_class = match.get("asset_class", "*")
    symbol = match.get("symbol", "*")
    horizon = match.get("horizon_ms", "*")
    model = value.get("model")
    fallback = value.get("fallback")
    priority = value.get("priority", 100)
    description = value.get("description", "")
    if not (type(asset_class) is str and type(symbol) is str and type(horizon) is str
            and type(model) is str and model and type(priority) is int and type(description) is str
            and (fallback is None or (type(fallback) is str and fallback))
            and _glob_problem(asset_class) is None and _glob_problem(symbol) is None):
        return None
    try:
        horizon_range = _cached_horizon(horizon)
    except ValueError:
        return None
    path = f"rules[{index}]"
    refs.add(f"{path}.model", model)
    refs.add(f"{path}.fallback", fallback)
    return Rule(index, asset_class, horizon_range, symbol, model, fallback, priority, description)


def _parse_rule(index: int, value: Any, probs: _Problems, refs: _ModelRefs) -> Rule | None:
    clean = _clean_rule(index, value, refs)
    if clean is not None:
        return clean
    path = f"rules[{index}]"
    m = _mapping(value, path, probs)
    if m is None:
        return None
    _check_keys(m, _RULE_KEYS, path, probs)
    asset_class, horizon, symbol = _parse_match(m.get("match"), _join(path, "match"), probs)
    if "model" not in m:
        probs.add(_join(path, "model"), "missing required key 'model'")
    model = _opt_str(m, "model", path, probs, None)
    fallback = _opt_str(m, "fallback", path, probs, None, nullable=True)
    refs.add(_join(path, "model"), model)
    refs.add(_join(path, "fallback"), fallback)
    priority = _opt_int(m, "priority", path, probs, 100)
    description = m.get("description", "")
    if not isinstance(description, str):
        probs.add(_join(path, "description"), f"expected a string, got {_describe(description)}")
        description = ""
    if model is None:
        return None
    return Rule(index, asset_class, horizon, symbol, model, fallback, priority, description)


def _parse_rules(value: Any, probs: _Problems, refs: _ModelRefs) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        probs.add("rules", f"expected a list of rules, got {_describe(value)}")
        return ()
    parsed = (_parse_rule(i, item, probs, refs) for i, item in enumerate(value))
    return tuple(r for r in parsed if r is not None)
