"""Turn a request's ``features`` object into the model's input row (pure, no I/O).

The model's metadata declares feature names and an optional window length. The input
vector is feature-major: every window value of feature 0, then of feature 1, and so on.
A request must name exactly the declared features; each value is one number (window 1)
or a list of exactly ``window`` numbers. Booleans, strings, NaN and infinities are
rejected, because a trading signal computed from them would be silently wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from actors.core.errors import InvalidInput, unprocessable

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(name: str, value: Any, position: int | None) -> float:
    where = name if position is None else f"{name}[{position}]"
    if not _is_number(value):
        raise unprocessable(
            f"feature {where!r} must be a number, got {type(value).__name__}", feature=where
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise unprocessable(f"feature {where!r} is not finite", feature=where)
    if abs(number) > FLOAT32_MAX:
        raise unprocessable(f"feature {where!r} is outside the float32 range the model computes in",
                            feature=where, limit=FLOAT32_MAX)
    return number


def _values_for(name: str, value: Any, window: int) -> Sequence[float]:
    if window == 1 and not isinstance(value, list):
        return (_check_number(name, value, None),)
    if not isinstance(value, list):
        raise unprocessable(
            f"feature {name!r} must be a list of {window} numbers", feature=name, window=window
        )
    if len(value) != window:
        raise unprocessable(
            f"feature {name!r} has {len(value)} values, the model's window is {window}",
            feature=name,
            window=window,
            got=len(value),
        )
    return [_check_number(name, item, i) for i, item in enumerate(value)]


_NUMBER_TYPES = frozenset({int, float})


def _quick_values(features: Any, names: Sequence[str], window: int) -> list[float] | None:
    """The flat input values when everything is well-formed, else None (the caller explains why).

    Accepts exactly the ints and floats that are finite and within float32 range.
    """
    values = shaped_values(features, names, window)
    return values if values is not None and numbers_ok(values) else None


def shaped_values(features: Any, names: Sequence[str], window: int) -> list[Any] | None:
    """The flat input values if ``features`` has exactly the model's shape, unchecked; else None.

    Batch callers check the values of a whole group at once with ``numbers_ok``.
    """
    if type(features) is not dict or len(features) != len(names):
        return None
    try:
        if window == 1:
            return list(map(features.__getitem__, names))  # no Python frame per request, unlike a comprehension
        values: list[Any] = []
        for name in names:
            series = features[name]
            if type(series) is not list or len(series) != window:
                return None
            values.extend(series)
    except KeyError:
        return None
    return values


def numbers_ok(values: Iterable[Any]) -> bool:
    """Are all ``values`` ints or floats, finite and within float32 range? (no Python loop)

    Checked by C loops, not a Python one (this runs for every prediction and batch item):
    only int and float (bool and numeric strings are refused), a finite exact sum (any NaN
    or infinity makes it non-finite; an int beyond float range raises), then the range.
    """
    values = values if isinstance(values, list) else list(values)
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return False
    try:
        return math.isfinite(math.fsum(values)) and min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX
    except (OverflowError, ValueError):  # fsum: an int too large for a float; min/max: no values
        return False


def feature_values(features: Any, names: Sequence[str], window: int) -> list[float]:
    """Validated flat input values (feature-major); raises the same 422s as ``feature_row``.

    Batch callers collect these lists and build one matrix for a whole group.
    """
    values = _quick_values(features, names, window)
    if values is not None:
        return values
    return _checked_row(features, names, window, None).tolist()


def feature_row(
    features: Any, names: Sequence[str], window: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Validate ``features`` against the declared ``names``/``window``; return a float32 row.

    Raises :class:`RouterError` (422) naming the offending feature. When ``out`` is given
    (a float32 view of length ``len(names) * window``) the row is written into it, which
    lets batch callers fill one preallocated matrix. Well-formed input takes a fast path;
    anything else goes through the per-feature checks that name the problem.
    """
    values = _quick_values(features, names, window)
    if values is None:
        return _checked_row(features, names, window, out)
    if out is None:
        return np.array(values, dtype=np.float32)
    out[:] = values
    return out


def _checked_row(features: Any, names: Sequence[str], window: int, out: np.ndarray | None) -> np.ndarray:
    if not isinstance(features, Mapping):
        raise unprocessable("'features' must be an object of name -> number or list of numbers")
    unknown = sorted(set(features) - set(names))
    missing = [name for name in names if name not in features]
    if unknown or missing:
        raise unprocessable(
            "features do not match the model's declared inputs",
            unknown=unknown,
            missing=missing,
            expected=list(names),
        )
    row = out if out is not None else np.empty(len(names) * window, dtype=np.float32)
    for i, name in enumerate(names):
        row[i * window : (i + 1) * window] = _values_for(name, features[name], window)
    return row


def check_finite_number(field: str, value: Any, *, minimum: float | None = None) -> float:
    """Validate a scalar request field such as ``horizon_ms``."""
    try:
        number = float(value) if _is_number(value) else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput("invalid_field", f"{field!r} must be a finite number", {"field": field})
    if minimum is not None and number < minimum:
        raise InvalidInput("invalid_field", f"{field!r} must be >= {minimum:g}", {"field": field})
    return number
