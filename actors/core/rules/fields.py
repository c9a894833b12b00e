"""Field validators shared by every section parser: each records a problem and returns a default.

Returning a default instead of raising lets one parse report every problem in the document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from actors.core.rules.problems import _describe, _echo, _join, _path_key, _Problems


def _check_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], path: str, probs: _Problems) -> None:
    """Unknown keys are errors so typos (``priorty``) never silently fall back to defaults."""
    for key in mapping:
        if key not in allowed:
            probs.add(_join(path, _path_key(key)), f"unknown key {_echo(key)} (allowed: {', '.join(allowed)})")


def _mapping(value: Any, path: str, probs: _Problems, *, what: str = "a mapping") -> dict[Any, Any] | None:
    """Treat null as an empty section; anything else but a mapping is an error."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    probs.add(path, f"expected {what}, got {_describe(value)}")
    return None


def _opt_str(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: str | None,
             *, nullable: bool = False) -> str | None:
    if key not in m or (nullable and m[key] is None):
        return default
    value = m[key]
    if not isinstance(value, str) or not value:
        probs.add(_join(path, key), f"expected a non-empty string, got {_describe(value)}")
        return default
    return value


def _opt_bool(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: bool) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        probs.add(_join(path, key), f"expected true or false, got {_describe(value)}")
        return default
    return value


def _opt_int(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: int,
             lo: int | None = None, hi: int | None = None) -> int:
    value = m.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        probs.add(_join(path, key), f"expected an integer, got {_describe(value)}")
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        probs.add(_join(path, key), f"must be {bounds}, got {_echo(value)}")
        return default
    return value


def _opt_number(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: float | None,
                *, positive: bool = False, unit: bool = False) -> float | None:
    value = m.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        probs.add(_join(path, key), f"expected a finite number, got {_describe(value)}")
        return default
    if positive and value <= 0:
        probs.add(_join(path, key), f"must be > 0, got {_echo(value)}")
        return default
    if unit and not 0 <= value <= 1:
        probs.add(_join(path, key), f"must be between 0 and 1, got {_echo(value)}")
        return default
    return value


class _ModelRefs:
    """Every place a model is named, checked against ``known_models`` after parsing."""

    def __init__(self) -> None:
        self.refs: list[tuple[str, str]] = []

    def add(self, path: str, name: str | None) -> None:
        if name is not None:
            self.refs.append((path, name))

    def check(self, known: frozenset[str], probs: _Problems) -> None:
        listing = ", ".join(sorted(known)) or "(none)"
        for path, name in self.refs:
            if name not in known:
                probs.add(path, f"unknown model {_echo(name)} (known models: {listing})")
