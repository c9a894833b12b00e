"""Every client call as data: method, path, body, whether it is an admin call, how to read the answer.

The sync and the async client execute the same :class:`Call` objects, so the two can
never disagree about a path, a body or a result type; only the I/O differs. Calls the
local (in-process) mode can answer name the engine method in ``local``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import attrs
import httpx

from actors.client.errors import api_error
from actors.client.results import (
    BatchResult,
    ModelInfo,
    Operation,
    PredictInput,
    Prediction,
    Route,
)

T = TypeVar("T")


def new_correlation_id() -> str:
    """One id per call when the caller gives none: it is echoed back, and keys feedback."""
    return uuid.uuid4().hex


@attrs.frozen
class Call(Generic[T]):
    """One HTTP exchange; ``parse(answer, elapsed_ms, source)`` turns the JSON answer into a result."""

    method: str
    path: str
    parse: Callable[[Any, float, str], T]
    body: Any = None
    admin: bool = False
    retry_503: bool = True
    accept: frozenset[int] = frozenset({200, 201, 202})
    local: str | None = None


def _segment(value: str) -> str:
    return quote(value, safe="")


def with_correlation_id(item: PredictInput | Mapping[str, Any]) -> dict[str, Any]:
    """The request body of one item, with a fresh correlation id when it has none."""
    body = item.to_body() if isinstance(item, PredictInput) else dict(item)
    if body.get("correlation_id") is None:
        body["correlation_id"] = new_correlation_id()
    return body


def predict(item: PredictInput | Mapping[str, Any]) -> Call[Prediction]:
    body = with_correlation_id(item)
    return Call("POST", "/predict", lambda answer, elapsed, source: Prediction.from_answer(
        answer, elapsed_ms=elapsed, source=source), body, local="predict_one")


def predict_batch(items: Iterable[PredictInput | Mapping[str, Any]]) -> Call[BatchResult]:
    requests = [with_correlation_id(item) for item in items]
    ids = [r["correlation_id"] for r in requests]
    return Call("POST", "/predict/batch", lambda answer, elapsed, source: BatchResult.from_answer(
        answer, ids, elapsed_ms=elapsed, source=source), {"requests": requests}, local="predict_batch")


def route(asset_class: str, horizon_ms: float, symbol: str | None = None) -> Call[Route]:
    body: dict[str, Any] = {"asset_class": asset_class, "horizon_ms": horizon_ms}
    if symbol is not None:
        body["symbol"] = symbol
    return Call("POST", "/route/test", lambda answer, _e, _s: Route.from_answer(answer), body, local="route")


def models() -> Call[tuple[ModelInfo, ...]]:
    return Call("GET", "/models", lambda answer, _e, _s: tuple(ModelInfo.from_answer(m) for m in answer["models"]))


def model(name: str) -> Call[ModelInfo]:
    return Call("GET", f"/models/{_segment(name)}", lambda answer, _e, _s: ModelInfo.from_answer(answer))


def switch_body(version: str, strategy: str, *, steps: Iterable[float] | None = None,
                interval_s: float | None = None, canary_weight: float | None = None,
                healthy_intervals: int | None = None, split: float | None = None,
                max_transition_s: float | None = None) -> dict[str, Any]:
    """The ``POST /models/{name}/switch`` body; unset parameters take the service's defaults."""
    body: dict[str, Any] = {"version": str(version), "strategy": strategy}
    optional = {"steps": list(steps) if steps is not None else None, "interval_s": interval_s,
                "canary_weight": canary_weight, "healthy_intervals": healthy_intervals, "split": split,
                "max_transition_s": max_transition_s}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _operation_of_start(answer: Any, _elapsed: float, _source: str) -> Operation:
    return Operation.from_answer(answer["operation"])


def switch(name: str, body: Mapping[str, Any]) -> Call[Operation]:
    return Call("POST", f"/models/{_segment(name)}/switch", _operation_of_start, dict(body), admin=True)


def rollback(name: str, version: str | None = None) -> Call[Operation]:
    body = {} if version is None else {"version": str(version)}
    return Call("POST", f"/models/{_segment(name)}/rollback", _operation_of_start, body, admin=True)


def operation(operation_id: str) -> Call[Operation]:
    return Call("GET", f"/switches/{_segment(operation_id)}", lambda answer, _e, _s: Operation.from_answer(answer))


def abort(operation_id: str) -> Call[Operation]:
    return Call("POST", f"/switches/{_segment(operation_id)}/abort",
                lambda answer, _e, _s: Operation.from_answer(answer), admin=True)


def promote(operation_id: str) -> Call[Operation]:
    return Call("POST", f"/switches/{_segment(operation_id)}/promote",
                lambda answer, _e, _s: Operation.from_answer(answer), admin=True)


def feedback(correlation_id: str, outcome: str) -> Call[dict[str, Any]]:
    return Call("POST", "/feedback", lambda answer, _e, _s: dict(answer),
                {"correlation_id": correlation_id, "outcome": outcome})


def raw_get(path: str) -> Call[Any]:
    return Call("GET", path, lambda answer, _e, _s: answer)


def health_ready() -> Call[Any]:
    """``/health/ready`` answers 503 while not ready: that is an answer, not a failure to retry."""
    return Call("GET", "/health/ready", lambda answer, _e, _s: answer, retry_503=False,
                accept=frozenset({200, 503}))


def answer_of(call: Call[Any], response: httpx.Response) -> Any:
    """The JSON answer, or the typed error for a status the call does not accept."""
    try:
        answer = response.json()
    except ValueError:
        answer = response.text
    if response.status_code not in call.accept:
        raise api_error(response.status_code, answer)
    return answer
