"""The batch path's own steps, directly: groups stay aligned, values are checked per group.

End-to-end batch behaviour (order, per-item errors, one call per group, fallbacks,
breakers) is tested over HTTP in tests/test_app.py and tests/web/test_data_port.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from actors.core.errors import RouterError
from actors.serving.batch_predict import Group, checked
from actors.serving.predictor import Predictor
from actors.serving.request_shape import PredictRequest
from actors.storage.tflite_backend import LoadedModel

NAMES = ("spread", "imbalance")
MODEL = cast(LoadedModel, SimpleNamespace(name="m", version="1",
                                          metadata=SimpleNamespace(features=NAMES, window=1)))
# ``checked`` needs only how an item's error reads (the web layer supplies it in service).
PREDICTOR = cast(Predictor, SimpleNamespace(render_error=RouterError.to_body))


def group_of(*rows: list[Any]) -> Group:
    group = Group(MODEL, "op-1")
    for index, row in enumerate(rows):
        features = dict(zip(NAMES, row, strict=True))
        group.add(index * 2, PredictRequest(features, f"c{index}"), None, row, None)
    return group


def test_a_group_keeps_its_items_aligned() -> None:
    group = group_of([0.1, 0.2], [0.3, 0.4])
    assert group.indexes == [0, 2]
    assert [r.correlation_id for r in group.requests] == ["c0", "c1"]
    assert group.rows == [[0.1, 0.2], [0.3, 0.4]]
    assert group.selections == [None, None] and group.fallbacks == [None, None]


def test_a_clean_group_runs_as_it_is() -> None:
    group = group_of([0.1, 0.2], [3, 4])
    results: list[dict[str, Any] | None] = [None] * 4
    assert checked(PREDICTOR, group, results) is group  # one C-level pass, no copy
    assert results == [None] * 4


def test_bad_rows_get_their_own_422_and_leave_the_group() -> None:
    group = group_of([0.1, 0.2], [True, 0.5], [float("nan"), 1.0], [0.7, 0.8])
    results: list[dict[str, Any] | None] = [None] * 8
    kept = checked(PREDICTOR, group, results)
    assert kept is not None and kept is not group
    assert kept.indexes == [0, 6] and kept.rows == [[0.1, 0.2], [0.7, 0.8]]
    assert [r.correlation_id for r in kept.requests] == ["c0", "c3"]
    for index, feature in ((2, "spread"), (4, "spread")):
        answer = results[index]
        assert answer is not None and answer["index"] == index
        assert answer["error"]["details"]["feature"] == feature, answer
    assert results[0] is None and results[6] is None


def test_a_group_with_no_good_row_is_dropped() -> None:
    results: list[dict[str, Any] | None] = [None] * 2
    assert checked(PREDICTOR, group_of([1e39, 0.0]), results) is None
    assert results[0] is not None and "error" in results[0]
