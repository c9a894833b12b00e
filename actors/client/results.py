"""Typed results of the client: what the service answers, as frozen value objects.

Fields mirror the service's answers (``actors/predictor.py`` shapes a prediction,
``actors/switch_policy.py`` an operation, ``actors/switch_feed.py`` a switch event) so a
reader of the API reference recognises every name. Parsing is strict about the fields a
trading engine acts on (signal, model, correlation id) and keeps the whole answer in
``raw`` for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from actors.client.errors import ApiError, api_error

TERMINAL_STATES = frozenset({"completed", "aborted", "rolled_back", "failed"})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen
class PredictInput:
    """One prediction request: routed (asset_class + horizon_ms) or addressed (model_name)."""

    features: Mapping[str, Any]
    asset_class: str | None = None
    horizon_ms: float | None = None
    symbol: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    correlation_id: str | None = None
    timestamp: Any = None

    def to_body(self) -> dict[str, Any]:
        """The ``/predict`` body; unset fields are left out (the service refuses unknown ones)."""
        body: dict[str, Any] = {"features": dict(self.features)}
        for name in ("asset_class", "horizon_ms", "symbol", "model_name", "model_version", "correlation_id",
                     "timestamp"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


@attrs.frozen
class Prediction:
    """One answer of ``/predict`` (or one batch item); ``elapsed_ms`` is measured by the client."""

    correlation_id: str
    model: str
    version: str
    signal: str
    confidence: float
    probabilities: Mapping[str, float] = attrs.field(converter=_frozen_mapping)
    labels: tuple[str, ...]
    rule_index: int | None
    config_hash: str
    latency_ms: float
    symbol: str | None = None
    fallback_from: str | None = None
    elapsed_ms: float = 0.0
    source: str = "remote"

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], *, elapsed_ms: float = 0.0,
                    source: str = "remote") -> Prediction:
        prediction = answer["prediction"]
        probabilities = {str(k): float(v) for k, v in prediction["probabilities"].items()}
        return cls(
            correlation_id=str(answer["correlation_id"]),
            model=str(answer["model"]["name"]),
            version=str(answer["model"]["version"]),
            signal=str(prediction["signal"]),
            confidence=float(prediction["confidence"]),
            probabilities=probabilities,
            labels=tuple(probabilities),
            rule_index=answer.get("rule_index"),
            config_hash=str(answer.get("config_hash", "")),
            latency_ms=float(answer.get("latency_ms", 0.0)),
            symbol=answer.get("symbol"),
            fallback_from=answer.get("fallback_from"),
            elapsed_ms=elapsed_ms,
            source=source,
        )

    @property
    def model_key(self) -> str:
        """``name@version``, the form switch events use."""
        return f"{self.model}@{self.version}"


@attrs.frozen
class ItemError:
    """A batch item that failed; the other items of the batch still have their answers."""

    index: int
    correlation_id: str | None
    error: ApiError

    @property
    def code(self) -> str:
        return self.error.code


@attrs.frozen
class BatchResult:
    """``/predict/batch``: one entry per item, in order, each a Prediction or an ItemError."""

    items: tuple[Prediction | ItemError, ...]
    count: int
    failed: int
    latency_ms: float
    elapsed_ms: float = 0.0

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], correlation_ids: list[str | None], *,
                    elapsed_ms: float = 0.0, source: str = "remote") -> BatchResult:
        items: list[Prediction | ItemError] = []
        for index, entry in enumerate(answer["predictions"]):
            if "error" in entry:
                correlation_id = correlation_ids[index] if index < len(correlation_ids) else None
                items.append(ItemError(index, correlation_id, api_error(int(entry.get("status", 0)), entry)))
            else:
                items.append(Prediction.from_answer(entry, elapsed_ms=elapsed_ms, source=source))
        return cls(tuple(items), int(answer["count"]), int(answer["failed"]), float(answer["latency_ms"]),
                   elapsed_ms)

    @property
    def predictions(self) -> tuple[Prediction, ...]:
        return tuple(item for item in self.items if isinstance(item, Prediction))

    @property
    def errors(self) -> tuple[ItemError, ...]:
        return tuple(item for item in self.items if isinstance(item, ItemError))


@attrs.frozen
class Route:
    """``/route/test``: which rule and model a request would get (no inference)."""

    model: str
    rule_index: int | None
    description: str
    fallback: str | None
    config_hash: str
    horizon_bucket: str

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Route:
        return cls(str(answer["model"]), answer.get("rule_index"), str(answer.get("description", "")),
                   answer.get("fallback"), str(answer.get("config_hash", "")), str(answer.get("horizon_bucket", "")))


@attrs.frozen
class VersionInfo:
    """One version of a model: lifecycle state, traffic share, breaker."""

    version: str
    status: str
    traffic_share: float
    in_flight: int
    breaker: str
    error: str | None = None

    @classmethod
    def from_answer(cls, entry: Mapping[str, Any]) -> VersionInfo:
        return cls(str(entry["version"]), str(entry["status"]), float(entry.get("traffic_share", 0.0)),
                   int(entry.get("in_flight", 0)), str(entry.get("breaker", "closed")), entry.get("error"))


@attrs.frozen
class ModelInfo:
    """One model of ``GET /models``."""

    name: str
    active_version: str | None
    latest_version: str | None
    status: str
    policy: str
    features: tuple[str, ...]
    labels: tuple[str, ...]
    window: int | None
    accuracy: float | None
    versions: tuple[VersionInfo, ...]
    raw: Mapping[str, Any] = attrs.field(converter=_frozen_mapping, repr=False, eq=False)

    @classmethod
    def from_answer(cls, entry: Mapping[str, Any]) -> ModelInfo:
        return cls(
            name=str(entry["name"]), active_version=entry.get("active_version"),
            latest_version=entry.get("latest_version"), status=str(entry.get("status", "")),
            policy=str(entry.get("policy", "")), features=tuple(entry.get("features") or ()),
            labels=tuple(entry.get("labels") or ()), window=entry.get("window"), accuracy=entry.get("accuracy"),
            versions=tuple(VersionInfo.from_answer(v) for v in entry.get("versions", ())), raw=entry,
        )


@attrs.frozen
class Operation:
    """A switch operation (``/switches/{id}``): strategy, state, current weight, log."""

    id: str
    model: str
    from_version: str | None
    to_version: str
    strategy: str
    state: str
    weight_percent: float
    step: int
    steps: tuple[float, ...]
    reason: str | None
    created_at: float
    updated_at: float
    log: tuple[Mapping[str, Any], ...]
    raw: Mapping[str, Any] = attrs.field(converter=_frozen_mapping, repr=False, eq=False)

    @classmethod
    def from_answer(cls, body: Mapping[str, Any]) -> Operation:
        params = body.get("params") or {}
        return cls(
            id=str(body["id"]), model=str(body["model"]), from_version=body.get("from_version"),
            to_version=str(body["to_version"]), strategy=str(body.get("strategy", params.get("strategy", ""))),
            state=str(body["state"]), weight_percent=float(body.get("weight_percent", 0.0)),
            step=int(body.get("step", 0)), steps=tuple(float(s) for s in params.get("steps", ())),
            reason=body.get("reason"), created_at=float(body.get("created_at", 0.0)),
            updated_at=float(body.get("updated_at", 0.0)), log=tuple(dict(e) for e in body.get("log", ())),
            raw=body,
        )

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "completed"


@attrs.frozen
class ServiceStatus:
    """``/health``, ``/health/ready`` and the running switches, in one view."""

    status: str
    service: str
    version: str
    ready: bool
    not_ready_reasons: tuple[str, ...]
    models_loaded: tuple[str, ...]
    config_hash: str
    uptime_s: float
    worker: int
    pid: int
    running_switches: tuple[Operation, ...]

    @classmethod
    def from_answers(cls, health: Mapping[str, Any], ready: Mapping[str, Any],
                     switches: Mapping[str, Any]) -> ServiceStatus:
        running = tuple(Operation.from_answer(o) for o in switches.get("operations", ())
                        if o.get("state") not in TERMINAL_STATES)
        return cls(
            status=str(health.get("status", "")), service=str(health.get("service", "")),
            version=str(health.get("version", "")), ready=ready.get("status") == "ready",
            not_ready_reasons=tuple(ready.get("reasons", ())), models_loaded=tuple(health.get("models_loaded", ())),
            config_hash=str(health.get("config_hash", "")), uptime_s=float(health.get("uptime_s", 0.0)),
            worker=int(health.get("worker", 0)), pid=int(health.get("pid", 0)), running_switches=running,
        )


@attrs.frozen
class SwitchEvent:
    """One message of ``/ws/switches``: a symbol's serving ``name@version`` changed."""

    timestamp: float
    symbol: str
    old_model: str | None
    new_model: str | None
    latency_ms: float
    reason: str
    operation_id: str | None
    asset_class: str | None
    event_id: str | None
    stream_id: str | None
    replay: bool

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> SwitchEvent:
        return cls(
            timestamp=float(message["timestamp"]), symbol=str(message["symbol"]),
            old_model=message.get("old_model"), new_model=message.get("new_model"),
            latency_ms=float(message.get("latency_ms", 0.0)), reason=str(message.get("reason", "")),
            operation_id=message.get("operation_id") or None, asset_class=message.get("asset_class") or None,
            event_id=message.get("event_id"), stream_id=message.get("id"), replay=bool(message.get("replay", False)),
        )
