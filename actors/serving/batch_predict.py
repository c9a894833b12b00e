"""``POST /predict/batch``: per-item answers in order, items for one model version in one call.

Per-item work is only what differs per item (shape checks, routing, the input row, the
answer); the values of a group are checked in one C-level pass, metrics and health
observations are updated once per group, and a row whose call fails is retried alone on
the next model, as a single request would be (``Predictor.answer``).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from actors.core.access import ApiKey, model_refusal, refusal_error
from actors.core.errors import DeadlineExceeded, RouterError, TooLarge, Unavailable, bad_request
from actors.core.features import feature_values, numbers_ok, shaped_values
from actors.core.rules import Selection
from actors.health_monitor import Observation
from actors.serving.remote_model import RemoteModel
from actors.serving.request_shape import BATCH_KEYS, PredictRequest, elapsed_ms, parse_request
from actors.storage.tflite_backend import LoadedModel

if TYPE_CHECKING:
    from actors.serving.predictor import Predictor


async def first_usable(predictor: Predictor, request: PredictRequest, selection: Selection | None,
                       principal: ApiKey | None = None) -> tuple[LoadedModel, str | None]:
    """Slow path for a batch item: the same choice as a single request's first usable model."""
    chain = predictor.attempts(request, selection, principal)
    position, model, error = await predictor.usable(chain, 0, frozenset())
    if model is None:
        raise error or Unavailable("model_unavailable", "no model could take this request", {})
    if position > 0:
        predictor.metrics.note_fallback(chain[0].name, error.code if error else "unavailable")
    return model, (chain[0].name if chain[position].name != chain[0].name else None)


async def predict_batch(predictor: Predictor, body: Any, principal: ApiKey | None = None) -> dict[str, Any]:
    """Per-item answers in order; items for the same model version run as one call.

    ``principal`` (the admitted key; None for no checks): an item whose model is outside
    the key's workspace gets its own ``model_not_allowed`` answer naming the model.
    """
    started = time.perf_counter()
    deadline = predictor.deadline()
    items = body.get("requests") if isinstance(body, Mapping) else None
    if isinstance(body, Mapping) and not body.keys() <= BATCH_KEYS:
        unknown = sorted(set(body) - BATCH_KEYS)
        raise bad_request(f"unknown field(s): {', '.join(unknown)}; per-item fields go inside 'requests'",
                          unknown=unknown, allowed=sorted(BATCH_KEYS))
    if not isinstance(items, list) or not items:
        raise bad_request("'requests' must be a non-empty list")
    max_items = predictor.router.config.settings.max_batch_items  # live: follows reloads
    if len(items) > max_items:
        raise TooLarge("batch_too_large", f"at most {max_items} requests per batch",
                       {"limit": max_items, "got": len(items)})
    results: list[dict[str, Any] | None] = [None] * len(items)
    groups: dict[tuple[str, str], Group] = {}
    routed: Counter[Selection] = Counter()
    select = predictor.router.select
    # Items without a version for a model with no running switch all get the same first
    # choice: look it up once per batch, not once per item.
    same_for_all: dict[str, LoadedModel | None] = {}
    plan_of = predictor.transitions.plan
    for index, item in enumerate(items):
        try:
            request = parse_request(item)
            selection = None
            if request.model_name is None:
                selection = select(request.asset_class or "", request.horizon_ms or 0.0, request.symbol)
                routed[selection] += 1
            if principal is not None:
                refusal = model_refusal(principal, request.model_name or selection.model)  # type: ignore[union-attr]
                if refusal is not None:
                    raise refusal_error(refusal)
            name = request.model_name or selection.model  # type: ignore[union-attr]
            if request.model_version is None and plan_of(name) is None:
                if name in same_for_all:
                    model = same_for_all[name]
                else:
                    model = same_for_all[name] = predictor.quick_model(request, selection)
            else:
                model = predictor.quick_model(request, selection)
            fallback_from = None
            row = None
            if model is None:
                model, fallback_from = await first_usable(predictor, request, selection, principal)
            else:  # breaker closed, no probe claimed: the values are checked with the group's
                meta = model.metadata
                row = shaped_values(request.features, meta.features, meta.window)
            if row is None:
                meta = model.metadata
                try:
                    row = feature_values(request.features, meta.features, meta.window)
                except RouterError:
                    predictor.health.breakers.abandon((model.name, model.version))  # a claimed probe goes back
                    raise
        except RouterError as error:
            results[index] = {"index": index, **predictor.render_error(error)}
            continue
        group = groups.get((model.name, model.version))
        if group is None:
            group = groups[(model.name, model.version)] = Group(model, predictor.operation_of(model))
        group.add(index, request, selection, row, fallback_from)
    count_routes(predictor, routed)
    for unchecked in groups.values():
        group = checked(predictor, unchecked, results)
        if group is not None:
            await run_group(predictor, group, results, started, deadline, principal)
    failed = sum(1 for r in results if r is not None and "error" in r)
    return {
        "predictions": results,
        "count": len(items),
        "failed": failed,
        "latency_ms": elapsed_ms(started),
    }


def checked(predictor: Predictor, group: Group, results: list[dict[str, Any] | None]) -> Group | None:
    """The group with its input values checked: rows that fail get their own 422 and leave.

    One C-level pass over the whole group's values (``numbers_ok``) replaces one per item;
    only when it fails is each row checked alone, for the error naming its feature. None
    when no row is left to run.
    """
    if numbers_ok(list(itertools.chain.from_iterable(group.rows))):
        return group
    meta = group.model.metadata
    kept = Group(group.model, group.operation_id)
    for index, request, selection, row, fallback in zip(group.indexes, group.requests, group.selections,
                                                         group.rows, group.fallbacks, strict=True):
        try:
            if not numbers_ok(row):  # the item's 422, or its values in a form the quick path left out
                row = feature_values(request.features, meta.features, meta.window)
        except RouterError as error:
            results[index] = {"index": index, **predictor.render_error(error)}
            continue
        kept.add(index, request, selection, row, fallback)
    return kept if kept.indexes else None


def count_routes(predictor: Predictor, routed: Counter[Selection]) -> None:
    """One increment per rule and model the batch matched, not one per item."""
    for selection, count in routed.items():
        predictor.counters.rule(selection).inc(count)


async def run_group(predictor: Predictor, group: Group, results: list[dict[str, Any] | None], started: float,
                    deadline: float, principal: ApiKey | None = None) -> None:
    """One interpreter call for the group; rows that fail are retried one by one on the next model.

    A group whose call misses the deadline fails as a whole with DeadlineExceeded (no retry:
    the deadline is the whole batch's).
    """
    model = group.model
    key = (model.name, model.version)
    call_started = time.perf_counter()
    try:
        rows = np.asarray(group.rows, dtype=np.float32)
        if isinstance(model, RemoteModel):  # one OIP call for the group
            probabilities = await predictor.run_remote(model, rows, deadline)
        else:
            probabilities = await predictor.call(model, rows, deadline)
        finite = np.isfinite(probabilities).all(axis=1).tolist()
    except DeadlineExceeded as error:
        predictor.health.breakers.failure(key)
        predictor.health.observe(Observation(model.name, model.version, time.perf_counter() - call_started, False,
                                             (), model.metadata.labels, group.operation_id, len(group.indexes)))
        for index in group.indexes:
            results[index] = {"index": index, **predictor.render_error(error)}
        return
    except RouterError:
        probabilities, finite = None, [False] * len(group.indexes)
    latency_s = time.perf_counter() - call_started
    answered: list[tuple[str, str]] = []
    retry: list[int] = []
    if probabilities is not None:
        best = probabilities.argmax(axis=1).tolist()
        rounded = np.round(probabilities.astype(np.float64), 6).tolist()
        labels = model.metadata.labels
        model_body = {"name": model.name, "version": model.version}
        config_hash = predictor.router.config.config_hash
        latency_ms = elapsed_ms(started)
        for position, (index, request, selection, fallback, ok, row, top) in enumerate(zip(
                group.indexes, group.requests, group.selections, group.fallbacks, finite, rounded, best,
                strict=True)):
            if not ok:
                retry.append(position)
                continue
            label = labels[top]
            answer: dict[str, Any] = {
                "prediction": {"signal": label, "confidence": row[top],
                               "probabilities": dict(zip(labels, row, strict=True))},
                "model": model_body,
                "rule_index": selection.rule_index if selection is not None else None,
                "correlation_id": request.correlation_id,
                "config_hash": config_hash,
                "latency_ms": latency_ms,
            }
            if request.symbol is not None:
                answer["symbol"] = request.symbol
                predictor.note_symbol(request, model)
            if fallback is not None:
                answer["fallback_from"] = fallback
            results[index] = answer
            answered.append((request.correlation_id, label))
    else:
        retry = list(range(len(group.indexes)))
    if answered:
        predictor.health.breakers.success(key)
        predictor.counters.inference(model.name, ok=True).inc(len(answered))
        predictor.health.observe(Observation(model.name, model.version, latency_s / len(group.indexes), True,
                                             tuple(answered), model.metadata.labels, group.operation_id,
                                             len(answered)))
    if retry:
        predictor.counters.inference(model.name, ok=False).inc(len(retry))
        predictor.health.observe(Observation(model.name, model.version, latency_s / len(group.indexes), False,
                                             (), model.metadata.labels, group.operation_id, len(retry)))
        for position in retry:
            if not isinstance(model, RemoteModel):
                predictor.health.breakers.failure(key)
            index = group.indexes[position]
            try:
                results[index] = await predictor.answer(group.requests[position], group.selections[position],
                                                        started, skip=frozenset({key}), principal=principal,
                                                        deadline=deadline)
            except RouterError as error:
                results[index] = {"index": index, **predictor.render_error(error)}


@attrs.define
class Group:
    """Batch items that run on one model version in one interpreter call."""

    model: LoadedModel
    operation_id: str | None
    indexes: list[int] = attrs.field(factory=list)
    requests: list[PredictRequest] = attrs.field(factory=list)
    selections: list[Selection | None] = attrs.field(factory=list)
    rows: list[list[float]] = attrs.field(factory=list)
    fallbacks: list[str | None] = attrs.field(factory=list)

    def add(self, index: int, request: PredictRequest, selection: Selection | None, row: list[float],
            fallback_from: str | None) -> None:
        self.indexes.append(index)
        self.requests.append(request)
        self.selections.append(selection)
        self.rows.append(row)
        self.fallbacks.append(fallback_from)
