"""Feature validation: request ``features`` -> the model's float32 input row (actors/core/features.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from actors.core.errors import RouterError
from actors.core.features import check_finite_number, feature_row, numbers_ok, shaped_values
from actors.web.errors import http_status


def _reject(features: Any, names: tuple[str, ...], window: int) -> RouterError:
    with pytest.raises(RouterError) as info:
        feature_row(features, names, window)
    return info.value


def test_window_one_scalars_in_declared_order() -> None:
    """Window 1 takes one number per feature, in the declared (not the request's) order."""
    row = feature_row({"c": 3, "a": 1.5, "b": -2}, ("a", "b", "c"), 1)
    assert row.dtype == np.float32
    assert row.tolist() == [1.5, -2.0, 3.0]


def test_window_one_accepts_single_element_list() -> None:
    """With window 1 a one-element list is as good as a scalar."""
    row = feature_row({"a": [4.0], "b": 5}, ("a", "b"), 1)
    assert row.tolist() == [4.0, 5.0]


def test_windowed_lists_are_feature_major() -> None:
    """Every window value of feature 0 comes before any value of feature 1."""
    row = feature_row({"y": [10, 20, 30, 40], "x": [1, 2, 3, 4]}, ("x", "y"), 4)
    assert row.shape == (8,)
    assert row.tolist() == [1, 2, 3, 4, 10, 20, 30, 40]


def test_missing_and_unknown_names_are_listed() -> None:
    """A mismatch names every missing and every unknown feature, plus what was expected."""
    error = _reject({"a": 1, "zeta": 2, "alpha": 3}, ("a", "b", "c"), 1)
    assert http_status(error) == 422 and error.code == "invalid_features"
    assert error.details["missing"] == ["b", "c"]
    assert error.details["unknown"] == ["alpha", "zeta"]
    assert error.details["expected"] == ["a", "b", "c"]


def test_features_must_be_a_mapping() -> None:
    """A list (or anything but an object) is rejected with 422."""
    assert http_status(_reject([1, 2, 3], ("a", "b", "c"), 1)) == 422


@pytest.mark.parametrize("values", [[1, 2, 3], [1, 2, 3, 4, 5], []])
def test_wrong_list_length(values: list[float]) -> None:
    """A list whose length is not the window is rejected, reporting window and length."""
    error = _reject({"x": values, "y": [0, 0, 0, 0]}, ("x", "y"), 4)
    assert http_status(error) == 422
    assert error.details == {"feature": "x", "window": 4, "got": len(values)}


def test_scalar_for_windowed_feature_is_rejected() -> None:
    """A window > 1 requires a list, not a scalar."""
    error = _reject({"x": 1.0, "y": [0, 0, 0, 0]}, ("x", "y"), 4)
    assert error.details == {"feature": "x", "window": 4}


@pytest.mark.parametrize("value", [True, False, "1.0", None, {"v": 1}])
def test_non_numbers_are_rejected(value: Any) -> None:
    """Booleans, strings, None and objects are not numbers."""
    error = _reject({"a": value, "b": 1, "c": 1}, ("a", "b", "c"), 1)
    assert http_status(error) == 422
    assert error.details == {"feature": "a"}
    assert "must be a number" in error.message


@pytest.mark.parametrize("value", [True, "2", None])
def test_non_number_inside_window_names_position(value: Any) -> None:
    """A bad element of a list is reported with its index."""
    error = _reject({"x": [1, 2, value, 4], "y": [0, 0, 0, 0]}, ("x", "y"), 4)
    assert error.details == {"feature": "x[2]"}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(value: float) -> None:
    """NaN and infinities are rejected, as scalars and inside windows."""
    assert _reject({"a": value, "b": 1, "c": 1}, ("a", "b", "c"), 1).details == {"feature": "a"}
    error = _reject({"x": [0, 0, 0, value], "y": [0, 0, 0, 0]}, ("x", "y"), 4)
    assert error.details == {"feature": "x[3]"}
    assert "not finite" in error.message


def test_large_finite_value_within_float32_is_accepted() -> None:
    """A large number that float32 can hold passes validation unchanged."""
    row = feature_row({"a": 10**6, "b": 0, "c": 0}, ("a", "b", "c"), 1)
    assert row[0] == pytest.approx(1e6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_value_overflowing_float32_is_rejected() -> None:
    """1e39 is a finite float64 but becomes inf in the float32 row: it must be a 422, not an inf input.

    Regression guard: a finiteness check on float64 alone lets numpy's float32 cast produce inf.
    """
    with pytest.raises(RouterError) as info:
        row = feature_row({"a": 1e39, "b": 0, "c": 0}, ("a", "b", "c"), 1)
        assert np.all(np.isfinite(row)), f"non-finite value reached the model input: {row}"
    assert http_status(info.value) == 422


def test_integer_too_large_for_float_is_a_422() -> None:
    """A JSON integer beyond float range must be a 422, not an OverflowError (HTTP 500).

    Regression guard: ``float(10**400)`` raises OverflowError.
    """
    with pytest.raises(RouterError) as info:
        feature_row({"a": 10**400, "b": 0, "c": 0}, ("a", "b", "c"), 1)
    assert http_status(info.value) == 422


def test_out_buffer_is_filled_in_place() -> None:
    """With ``out`` the row is written into the given view and that view is returned."""
    matrix = np.full((2, 8), -1.0, dtype=np.float32)
    result = feature_row({"x": [1, 2, 3, 4], "y": [5, 6, 7, 8]}, ("x", "y"), 4, out=matrix[1])
    assert np.shares_memory(result, matrix)
    assert matrix[1].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert matrix[0].tolist() == [-1.0] * 8


def test_fresh_rows_are_independent() -> None:
    """Without ``out`` each call returns a new array."""
    first = feature_row({"a": 1, "b": 2, "c": 3}, ("a", "b", "c"), 1)
    second = feature_row({"a": 4, "b": 5, "c": 6}, ("a", "b", "c"), 1)
    assert not np.shares_memory(first, second)
    assert first.tolist() == [1, 2, 3]


@pytest.mark.parametrize("value", [0, 5, 2.5, 1e12])
def test_check_finite_number_accepts(value: float) -> None:
    """Finite ints and floats come back as float."""
    result = check_finite_number("horizon_ms", value, minimum=0)
    assert isinstance(result, float) and result == float(value)


@pytest.mark.parametrize("value", [True, "5", None, math.nan, math.inf, -math.inf, [1]])
def test_check_finite_number_rejects(value: Any) -> None:
    """Booleans, strings, None, NaN, infinities and lists are 422 invalid_field naming the field."""
    with pytest.raises(RouterError) as info:
        check_finite_number("horizon_ms", value)
    assert http_status(info.value) == 422 and info.value.code == "invalid_field"
    assert info.value.details == {"field": "horizon_ms"}


def test_check_finite_number_integer_beyond_float_range() -> None:
    """``horizon_ms`` as a huge JSON integer must be a 422, not an OverflowError (HTTP 500).

    Regression guard: ``math.isfinite(10**400)`` raises OverflowError.
    """
    with pytest.raises(RouterError) as info:
        check_finite_number("horizon_ms", 10**400, minimum=0)
    assert http_status(info.value) == 422


def test_check_finite_number_minimum() -> None:
    """Values below ``minimum`` are rejected; the minimum itself is accepted."""
    assert check_finite_number("horizon_ms", 0, minimum=0) == 0.0
    with pytest.raises(RouterError) as info:
        check_finite_number("horizon_ms", -0.5, minimum=0)
    assert ">= 0" in info.value.message


def test_shaped_values_takes_the_declared_shape_without_checking_values() -> None:
    """The batch path's first step: the flat values in model order, or None when the shape differs."""
    assert shaped_values({"b": 2, "a": "x"}, ("a", "b"), 1) == ["x", 2]
    assert shaped_values({"a": [1, 2], "b": [3, 4]}, ("a", "b"), 2) == [1, 2, 3, 4]
    assert shaped_values({"a": 1}, ("a", "b"), 1) is None
    assert shaped_values({"a": 1, "c": 2}, ("a", "b"), 1) is None
    assert shaped_values({"a": [1], "b": [3, 4]}, ("a", "b"), 2) is None
    assert shaped_values([1, 2], ("a", "b"), 1) is None


@pytest.mark.parametrize("values", [[0.5, 1, -3e38], [0]])
def test_numbers_ok_accepts_finite_float32_numbers(values: list[Any]) -> None:
    assert numbers_ok(values)
    assert numbers_ok(iter(values))


@pytest.mark.parametrize("bad", [True, "1.0", None, math.nan, math.inf, -math.inf, 1e39, -1e39, 10**400])
def test_numbers_ok_refuses_what_feature_row_refuses(bad: Any) -> None:
    """Exactly the values ``feature_row`` answers 422 for: a group passes only if every row would."""
    values = [0.25, bad, 0.5]
    assert not numbers_ok(values)
    with pytest.raises(RouterError):
        feature_row({"a": 0.25, "b": bad, "c": 0.5}, ("a", "b", "c"), 1)
    assert not numbers_ok([])


def test_a_form_only_the_full_check_accepts_fails_the_quick_one() -> None:
    """A one-element list for a window-1 feature: refused by ``numbers_ok``, so the batch path
    takes ``feature_values`` for that row, which accepts it and gives the plain number."""
    assert not numbers_ok([0.25, [1.0], 0.5])
    assert feature_row({"a": 0.25, "b": [1.0], "c": 0.5}, ("a", "b", "c"), 1).tolist() == [0.25, 1.0, 0.5]
