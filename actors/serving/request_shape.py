"""What a prediction request is and what its answer looks like: parsing and shaping, no I/O.

``parse_request`` checks a request object's shape (one ``POST /predict`` body or one batch
item); ``finite_values`` and ``shape_prediction`` turn a model's output row into the
``prediction`` object. Both run once per prediction, so the common cases are checked inline
and the rounding avoids Python's decimal-exact path; the predictor
(``actors/serving/predictor.py``) does the routing, the calls and the bookkeeping.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from math import isfinite
from typing import Any, NamedTuple

import numpy as np

from actors.core.errors import bad_request
from actors.core.features import check_finite_number

MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 128
# Horizons up to this pass the inline check; larger ones (and non-numbers) go through check_finite_number.
_MAX_HORIZON = 1e300
REQUEST_KEYS = frozenset({
    "features", "model_name", "model_version", "asset_class", "horizon_ms", "symbol",
    "correlation_id", "timestamp",
})


BATCH_KEYS = frozenset({"requests"})


class PredictRequest(NamedTuple):
    """A validated request; ``model_name`` set means addressed by name, else routed.

    An immutable value like the project's ``attrs.frozen`` messages, but a named tuple: one is
    built for every prediction and every batch item, and a frozen attrs instance costs three
    times as much to build (each field goes through ``object.__setattr__``).
    """

    features: Mapping[str, Any]
    correlation_id: str
    model_name: str | None = None
    model_version: str | None = None
    asset_class: str | None = None
    horizon_ms: float | None = None
    symbol: str | None = None
    timestamp: Any = None


def _optional_str(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is str and 0 < len(value) <= limit:
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"{key!r} must be a string", field=key)
    text = str(value)
    if not text or len(text) > limit:
        raise bad_request(f"{key!r} must be 1..{limit} characters", field=key)
    return text


# A process-unique prefix (random, so processes and restarts never collide) and a counter:
# a generated correlation id costs a string format, not a system call per request.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def _new_correlation_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):020x}"


def parse_request(body: Any) -> PredictRequest:
    """Check a request object's shape (not its features: those depend on the model).

    Runs once per prediction and once per batch item, so the common case (a dict whose
    strings are plain, short ``str``) is checked inline; anything else takes
    ``_optional_str``, which accepts numbers as names and phrases the errors.
    """
    if type(body) is not dict and not isinstance(body, Mapping):
        raise bad_request("request body must be a JSON object")
    if not body.keys() <= REQUEST_KEYS:
        unknown = sorted(set(body) - REQUEST_KEYS)
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", unknown=unknown,
                          allowed=sorted(REQUEST_KEYS))
    if "features" not in body:
        raise bad_request("'features' is required", field="features")
    get = body.get
    model_name = get("model_name")
    if model_name is not None and not (type(model_name) is str and 0 < len(model_name) <= MAX_NAME_LENGTH):
        model_name = _optional_str(body, "model_name", MAX_NAME_LENGTH)
    version = get("model_version")
    if version is not None:
        version = _optional_str(body, "model_version", 32)
        if version == "latest":
            version = None
    correlation_id = get("correlation_id")
    if correlation_id is None:
        correlation_id = _new_correlation_id()
    elif not (type(correlation_id) is str and 0 < len(correlation_id) <= MAX_ID_LENGTH):
        correlation_id = _optional_str(body, "correlation_id", MAX_ID_LENGTH) or _new_correlation_id()
    symbol = get("symbol")
    if symbol is not None and not (type(symbol) is str and 0 < len(symbol) <= MAX_NAME_LENGTH):
        symbol = _optional_str(body, "symbol", MAX_NAME_LENGTH)
    if model_name is not None:
        return PredictRequest(body["features"], correlation_id, model_name, version,
                              symbol=symbol, timestamp=get("timestamp"))
    asset_class = get("asset_class")
    if asset_class is not None and not (type(asset_class) is str and 0 < len(asset_class) <= MAX_NAME_LENGTH):
        asset_class = _optional_str(body, "asset_class", MAX_NAME_LENGTH)
    if asset_class is None or "horizon_ms" not in body:
        raise bad_request("give either 'model_name' or both 'asset_class' and 'horizon_ms'",
                          missing=[k for k in ("asset_class", "horizon_ms") if body.get(k) is None])
    horizon = body["horizon_ms"]
    if not (type(horizon) is int or type(horizon) is float) or not 0 <= horizon <= _MAX_HORIZON:
        horizon = check_finite_number("horizon_ms", horizon, minimum=0)
    return PredictRequest(body["features"], correlation_id, asset_class=asset_class,
                          horizon_ms=float(horizon), symbol=symbol, timestamp=get("timestamp"))


def finite_values(probabilities: np.ndarray) -> list[float] | None:
    """One output row as Python floats, or None when any is NaN or infinite.

    A handful of labels: ``tolist`` plus ``math.isfinite`` per value costs a fraction of
    ``np.isfinite(row).all()``, whose fixed numpy overhead dominated the per-request cost.
    """
    values = probabilities.tolist()
    return values if all(map(isfinite, values)) else None


def round6(value: float) -> float:
    """``value`` to 6 decimals exactly as ``np.round(value, 6)`` (scale, round half to even, unscale),
    which the batch path uses; several times cheaper than ``round(value, 6)``'s correct decimal rounding."""
    return round(value * 1e6) / 1e6


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (``time.perf_counter``), to the microsecond (cheap rounding, as ``round6``)."""
    return round((time.perf_counter() - started) * 1e6) / 1e3


def shape_prediction(values: list[float], labels: tuple[str, ...]) -> dict[str, Any]:
    """The ``prediction`` object of an answer from one finite output row (see ``finite_values``)."""
    best = values.index(max(values))  # a handful of labels: cheaper in Python than a numpy call
    rounded = [round6(p) for p in values]
    return {
        "signal": labels[best],
        "confidence": rounded[best],
        "probabilities": dict(zip(labels, rounded, strict=True)),
    }
