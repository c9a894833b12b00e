"""The prediction path: validate a request, pick the model, run it, shape the answer.

This is plain request-path logic shared by ``POST /predict`` and ``POST /predict/batch``:
routing reads the router's snapshot (no lock, no await), the model comes from the
cache's lock-free view (awaiting the cache actor only on a miss), and inference runs
inline because a small TFLite call costs microseconds, less than a thread hop.

When the model a rule names cannot be loaded, the rule's ``fallback`` and then the
default model answer instead, and the response says so in ``fallback_from``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from actors.errors import ApiError, bad_request
from actors.features import check_finite_number, feature_row
from actors.metrics import Metrics
from actors.model_cache import ModelCache
from actors.router import RouterState
from actors.rules import Selection
from actors.tflite_backend import LoadedModel

log = logging.getLogger("model_router.predictor")

MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 128
ACTIVE_GAUGE_LIMIT = 4096
REQUEST_KEYS = frozenset({
    "features", "model_name", "model_version", "asset_class", "horizon_ms", "symbol",
    "correlation_id", "timestamp",
})


@attrs.frozen
class PredictRequest:
    """A validated request; ``model_name`` set means addressed by name, else routed."""

    features: Mapping[str, Any]
    correlation_id: str
    model_name: str | None = None
    model_version: str | None = None
    asset_class: str | None = None
    horizon_ms: float | None = None
    symbol: str | None = None
    timestamp: Any = None


@attrs.frozen
class Resolved:
    """Which model answers a request and why."""

    model: LoadedModel
    selection: Selection | None
    fallback_from: str | None = None


def _optional_str(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"{key!r} must be a string", field=key)
    text = str(value)
    if not text or len(text) > limit:
        raise bad_request(f"{key!r} must be 1..{limit} characters", field=key)
    return text


def parse_request(body: Any) -> PredictRequest:
    """Check a request object's shape (not its features: those depend on the model)."""
    if not isinstance(body, Mapping):
        raise bad_request("request body must be a JSON object")
    unknown = sorted(set(body) - REQUEST_KEYS)
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", unknown=unknown,
                          allowed=sorted(REQUEST_KEYS))
    if "features" not in body:
        raise bad_request("'features' is required", field="features")
    model_name = _optional_str(body, "model_name", MAX_NAME_LENGTH)
    version = _optional_str(body, "model_version", 32)
    if version == "latest":
        version = None
    correlation_id = _optional_str(body, "correlation_id", MAX_ID_LENGTH) or uuid.uuid4().hex
    symbol = _optional_str(body, "symbol", MAX_NAME_LENGTH)
    if model_name is not None:
        return PredictRequest(body["features"], correlation_id, model_name, version,
                              symbol=symbol, timestamp=body.get("timestamp"))
    asset_class = _optional_str(body, "asset_class", MAX_NAME_LENGTH)
    if asset_class is None or "horizon_ms" not in body:
        raise bad_request("give either 'model_name' or both 'asset_class' and 'horizon_ms'",
                          missing=[k for k in ("asset_class", "horizon_ms") if body.get(k) is None])
    horizon = check_finite_number("horizon_ms", body["horizon_ms"], minimum=0)
    return PredictRequest(body["features"], correlation_id, asset_class=asset_class,
                          horizon_ms=horizon, symbol=symbol, timestamp=body.get("timestamp"))


def shape_prediction(probabilities: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    best = int(np.argmax(probabilities))
    values = probabilities.tolist()
    return {
        "signal": labels[best],
        "confidence": round(values[best], 6),
        "probabilities": {label: round(p, 6) for label, p in zip(labels, values, strict=True)},
    }


@attrs.define
class Predictor:
    """Request-path logic over the router state, the model cache and the metrics."""

    router: RouterState
    cache: ModelCache
    metrics: Metrics
    seen_routes: dict[tuple[str, int], int] = attrs.field(factory=dict)
    last_slow_log: float = 0.0

    def route(self, request: PredictRequest) -> Selection:
        started = time.perf_counter_ns()
        selection = self.router.select(request.asset_class or "", request.horizon_ms or 0.0,
                                       request.symbol)
        elapsed_us = (time.perf_counter_ns() - started) / 1000
        self.metrics.select_latency_us.observe(elapsed_us)
        settings = self.router.config.settings
        if elapsed_us > settings.max_latency_us and settings.performance_logging:
            self.log_slow_route(request, elapsed_us, settings.max_latency_us)
        rule = "default" if selection.rule_index is None else str(selection.rule_index)
        self.metrics.rule_matches.labels(rule_index=rule, model=selection.model).inc()
        self.note_active_model(request, selection)
        return selection

    def log_slow_route(self, request: PredictRequest, elapsed_us: float, budget_us: float) -> None:
        """At most one line per second: a slow route is a signal, not something to flood logs with."""
        now = time.monotonic()
        if now - self.last_slow_log >= 1.0:
            self.last_slow_log = now
            log.warning("select_model took %.1f us (budget %.0f us) for asset_class=%r horizon_ms=%r",
                        elapsed_us, budget_us, request.asset_class, request.horizon_ms)

    def note_active_model(self, request: PredictRequest, selection: Selection) -> None:
        """Keep ``model_router_active_model`` for routes seen in traffic (bounded)."""
        active = self.router.active
        snapshot = active.snapshot
        bucket = snapshot.horizon_bucket(request.horizon_ms or 0.0)
        key = (request.asset_class or "", bucket)
        if self.seen_routes.get(key) == active.generation:
            return
        if len(self.seen_routes) >= ACTIVE_GAUGE_LIMIT:
            self.seen_routes.clear()
            self.metrics.active_model.clear()
        self.seen_routes[key] = active.generation
        self.metrics.active_model.labels(
            asset_class=key[0], horizon_bucket=snapshot.bucket_label(bucket), model=selection.model
        ).set(1)

    async def resolve(self, request: PredictRequest) -> Resolved:
        if request.model_name is not None:
            model = await self.cache.get(request.model_name, request.model_version)
            return Resolved(model, None)
        selection = self.route(request)
        model = self.cache.lookup(selection.model)
        if model is not None:
            return Resolved(model, selection)
        try:
            return Resolved(await self.cache.get(selection.model), selection)
        except ApiError as primary_error:
            if primary_error.status != 503:
                raise
            return await self.fall_back(selection, primary_error)

    async def fall_back(self, selection: Selection, primary_error: ApiError) -> Resolved:
        default = self.router.config.settings.default_model
        for name in (selection.fallback, default):
            if name is None or name == selection.model:
                continue
            try:
                return Resolved(await self.cache.get(name), selection, fallback_from=selection.model)
            except ApiError:
                continue
        raise primary_error

    def run_model(self, model: LoadedModel, rows: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            probabilities = model.predict(rows)
        except Exception as exc:
            self.metrics.inference_requests.labels(model_name=model.name, status="error").inc(len(rows))
            raise ApiError(503, "inference_failed", f"{model.name}@{model.version} failed: {exc}",
                           {"model": model.name, "version": model.version}) from exc
        self.metrics.inference_latency_s.labels(model_name=model.name).observe(
            time.perf_counter() - started)
        self.metrics.inference_requests.labels(model_name=model.name, status="ok").inc(len(rows))
        return probabilities

    def respond(self, request: PredictRequest, resolved: Resolved, probabilities: np.ndarray,
                started: float) -> dict[str, Any]:
        model = resolved.model
        selection = resolved.selection
        answer: dict[str, Any] = {
            "prediction": shape_prediction(probabilities, model.metadata.labels),
            "model": {"name": model.name, "version": model.version},
            "rule_index": selection.rule_index if selection is not None else None,
            "correlation_id": request.correlation_id,
            "config_hash": self.router.config.config_hash,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if request.symbol is not None:
            answer["symbol"] = request.symbol
        if resolved.fallback_from is not None:
            answer["fallback_from"] = resolved.fallback_from
        return answer

    async def predict_one(self, body: Any) -> dict[str, Any]:
        started = time.perf_counter()
        request = parse_request(body)
        resolved = await self.resolve(request)
        meta = resolved.model.metadata
        row = feature_row(request.features, meta.features, meta.window)
        probabilities = self.run_model(resolved.model, row.reshape(1, -1))
        return self.respond(request, resolved, probabilities[0], started)

    async def predict_batch(self, body: Any, max_items: int) -> dict[str, Any]:
        """Per-item answers in order; items for the same model version run as one call."""
        started = time.perf_counter()
        items = body.get("requests") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or not items:
            raise bad_request("'requests' must be a non-empty list")
        if len(items) > max_items:
            raise ApiError(413, "batch_too_large", f"at most {max_items} requests per batch",
                           {"limit": max_items, "got": len(items)})
        results: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[tuple[str, str], list[tuple[int, PredictRequest, Resolved, np.ndarray]]] = (
            defaultdict(list))
        for index, item in enumerate(items):
            try:
                request = parse_request(item)
                resolved = await self.resolve(request)
                meta = resolved.model.metadata
                row = feature_row(request.features, meta.features, meta.window)
            except ApiError as error:
                results[index] = {"index": index, **error.to_body(), "status": error.status}
                continue
            key = (resolved.model.name, resolved.model.version)
            groups[key].append((index, request, resolved, row))
        for members in groups.values():
            model = members[0][2].model
            try:
                probabilities = self.run_model(model, np.stack([m[3] for m in members]))
            except ApiError as error:
                for index, *_ in members:
                    results[index] = {"index": index, **error.to_body(), "status": error.status}
                continue
            for position, (index, request, resolved, _row) in enumerate(members):
                results[index] = self.respond(request, resolved, probabilities[position], started)
        failed = sum(1 for r in results if r is not None and "error" in r)
        return {
            "predictions": results,
            "count": len(items),
            "failed": failed,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
