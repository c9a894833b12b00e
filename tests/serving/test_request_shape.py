"""Request parsing and prediction shaping on the predict path (actors/serving/request_shape.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from actors.core.errors import RouterError
from actors.serving.request_shape import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    REQUEST_KEYS,
    finite_values,
    parse_request,
    round6,
    shape_prediction,
)
from actors.web.errors import http_status

FEATURES = {"a": 1.0, "b": 2.0, "c": 3.0}


def rejected(body: Any) -> RouterError:
    with pytest.raises(RouterError) as info:
        parse_request(body)
    return info.value


def test_routed_request() -> None:
    """asset_class + horizon_ms make a routed request; every optional field is carried."""
    request = parse_request({"features": FEATURES, "asset_class": "crypto", "horizon_ms": 5000,
                             "symbol": "BTC-USD", "correlation_id": "req-1", "timestamp": 17})
    assert request.model_name is None and request.model_version is None
    assert request.asset_class == "crypto"
    assert request.horizon_ms == 5000.0 and isinstance(request.horizon_ms, float)
    assert request.symbol == "BTC-USD"
    assert request.correlation_id == "req-1"
    assert request.timestamp == 17
    assert request.features is FEATURES


def test_named_request_ignores_routing_fields() -> None:
    """With model_name the request is addressed by name; asset_class/horizon are not needed or kept."""
    request = parse_request({"features": FEATURES, "model_name": "fast", "model_version": "2",
                             "asset_class": "crypto", "horizon_ms": "not checked"})
    assert request.model_name == "fast" and request.model_version == "2"
    assert request.asset_class is None and request.horizon_ms is None


def test_integer_names_become_strings() -> None:
    """Integer model_version / correlation_id are accepted as their string form."""
    request = parse_request({"features": FEATURES, "model_name": "fast", "model_version": 3,
                             "correlation_id": 42})
    assert request.model_version == "3" and request.correlation_id == "42"


def test_latest_version_means_none() -> None:
    """model_version "latest" is the same as no version."""
    assert parse_request({"features": {}, "model_name": "fast", "model_version": "latest"}).model_version is None


def test_generated_correlation_id_is_unique_hex() -> None:
    """Without a correlation_id a fresh 32-hex id is generated per request (unique per process and restart)."""
    first = parse_request({"features": {}, "model_name": "fast"}).correlation_id
    second = parse_request({"features": {}, "model_name": "fast"}).correlation_id
    assert first != second
    assert len(first) == 32 and int(first, 16) >= 0


def test_unknown_fields_are_400() -> None:
    """Unknown fields are rejected with the list of them and of allowed fields."""
    error = rejected({"features": {}, "model_name": "fast", "modle_version": "1", "zzz": 1})
    assert http_status(error) == 400 and error.code == "bad_request"
    assert error.details["unknown"] == ["modle_version", "zzz"]
    assert error.details["allowed"] == sorted(REQUEST_KEYS)


@pytest.mark.parametrize("body", [[1, 2], "text", None, 3])
def test_body_must_be_object(body: Any) -> None:
    """A non-object body is 400."""
    assert http_status(rejected(body)) == 400


def test_features_required() -> None:
    """A body without features is 400 naming the field."""
    error = rejected({"model_name": "fast"})
    assert http_status(error) == 400 and error.details == {"field": "features"}


@pytest.mark.parametrize(("body", "missing"), [
    ({"features": {}}, ["asset_class", "horizon_ms"]),
    ({"features": {}, "asset_class": "crypto"}, ["horizon_ms"]),
    ({"features": {}, "horizon_ms": 10}, ["asset_class"]),
    ({"features": {}, "asset_class": None, "horizon_ms": 10}, ["asset_class"]),
])
def test_routing_needs_asset_class_and_horizon(body: dict[str, Any], missing: list[str]) -> None:
    """Neither model_name nor both routing fields: 400 listing what is missing."""
    error = rejected(body)
    assert http_status(error) == 400 and error.details["missing"] == missing


@pytest.mark.parametrize("horizon", [None, True, False, math.nan, math.inf, "100", [1], -1])
def test_bad_horizon_is_422(horizon: Any) -> None:
    """null, booleans, NaN, inf, strings, lists and negatives are invalid horizons."""
    error = rejected({"features": {}, "asset_class": "crypto", "horizon_ms": horizon})
    assert http_status(error) == 422 and error.code == "invalid_field"
    assert error.details == {"field": "horizon_ms"}


@pytest.mark.parametrize(("field", "limit"), [
    ("model_name", MAX_NAME_LENGTH), ("correlation_id", MAX_ID_LENGTH), ("symbol", MAX_NAME_LENGTH),
    ("model_version", 32),
])
def test_over_long_strings_are_400(field: str, limit: int) -> None:
    """Strings longer than their limit are rejected; exactly the limit is accepted."""
    base = {"features": {}, "model_name": "fast"}
    parse_request({**base, field: "x" * limit})
    error = rejected({**base, field: "x" * (limit + 1)})
    assert http_status(error) == 400 and error.details == {"field": field}


def test_over_long_asset_class_is_400() -> None:
    """asset_class has the name limit too."""
    error = rejected({"features": {}, "asset_class": "c" * (MAX_NAME_LENGTH + 1), "horizon_ms": 1})
    assert error.details == {"field": "asset_class"}


@pytest.mark.parametrize("value", ["", True, 1.5, ["fast"], {"n": 1}])
def test_string_fields_reject_empty_bool_and_non_strings(value: Any) -> None:
    """Empty strings, booleans, floats, lists and objects are not valid names."""
    error = rejected({"features": {}, "model_name": value})
    assert http_status(error) == 400 and error.details == {"field": "model_name"}


def test_shape_prediction_picks_argmax_and_rounds() -> None:
    """The best label wins; confidence and probabilities are rounded to 6 places."""
    probabilities = np.array([0.1234567, 0.6543219, 0.2222214], dtype=np.float64)
    values = finite_values(probabilities)
    assert values is not None
    shaped = shape_prediction(values, ("SELL", "HOLD", "BUY"))
    assert shaped["signal"] == "HOLD"
    assert shaped["confidence"] == 0.654322
    assert shaped["probabilities"] == {"SELL": 0.123457, "HOLD": 0.654322, "BUY": 0.222221}
    assert list(shaped["probabilities"]) == ["SELL", "HOLD", "BUY"]


def test_shape_prediction_float32_gives_plain_floats() -> None:
    """float32 inputs come back as JSON-ready Python floats."""
    values = finite_values(np.array([0.7, 0.2, 0.1], dtype=np.float32))
    assert values is not None
    shaped = shape_prediction(values, ("BUY", "HOLD", "SELL"))
    assert shaped["signal"] == "BUY"
    assert type(shaped["confidence"]) is float
    assert all(type(v) is float for v in shaped["probabilities"].values())


def test_shape_prediction_label_count_mismatch_raises() -> None:
    """Labels and probabilities of different lengths are a programming error, not a silent zip."""
    with pytest.raises(ValueError):
        shape_prediction([0.5, 0.5], ("SELL", "HOLD", "BUY"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_values_refuses_any_non_finite_value(bad: float) -> None:
    """One NaN or infinity anywhere in the row means no answer from this model."""
    assert finite_values(np.array([0.2, bad, 0.3], dtype=np.float32)) is None
    assert finite_values(np.array([0.2, 0.5, 0.3], dtype=np.float32)) == pytest.approx([0.2, 0.5, 0.3])


def test_round6_matches_numpy_round_used_by_batches() -> None:
    """Single answers and batch answers round the same way (the batch path uses ``np.round``)."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.random(2000), -rng.random(200), [0.0, 1.0, 0.5e-6, 2.5e-6, 0.9999995]])
    assert [round6(v) for v in values.tolist()] == np.round(values, 6).tolist()
