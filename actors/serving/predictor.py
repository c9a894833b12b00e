"""The prediction path: validate a request, pick the model version, run it, shape the answer.

Plain request-path logic shared by ``POST /predict`` and ``POST /predict/batch``:
routing reads the router's snapshot (no lock, no await); the version comes from the
model's traffic plan (sticky by symbol, see ``actors/core/assignment.py``); the model comes
from the cache's lock-free view (awaiting the cache actor only on a miss); inference
runs inline because a small TFLite call costs microseconds, less than a thread hop, once
the version has shown it is fast; other calls run in a worker thread bounded by the
request's deadline (``config.request_deadline_ms``, see ``actors/serving/model_calls.py``).

A request never fails because of a switch: if the version it was assigned fails (load
error, open circuit breaker, an exception or non-finite output), the stable version
answers; after that the rule's ``fallback`` and the default model, and the response
says so in ``fallback_from``. Each call is reported to the health monitor and the
circuit breakers, and symbols are noted for switch events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import numpy as np
import trio

from actors.core.access import ApiKey, model_allowed, model_refusal, refusal_error
from actors.core.errors import DeadlineExceeded, RouterError, Unavailable
from actors.core.features import feature_row
from actors.core.recent_symbols import SymbolRoute
from actors.core.rules import Selection
from actors.core.switch_policy import TrafficPlan
from actors.core.versions import latest_version
from actors.health_monitor import HealthMonitor, Observation
from actors.model_cache import ModelCache
from actors.router import RouterState
from actors.serving.batch_predict import predict_batch
from actors.serving.batcher import Batcher
from actors.serving.metrics import Metrics
from actors.serving.model_calls import ModelCalls, deadline_exceeded
from actors.serving.remote_model import RemoteCaller, RemoteModel
from actors.serving.request_shape import (
    PredictRequest,
    elapsed_ms,
    finite_values,
    parse_request,
    shape_prediction,
)
from actors.storage.tflite_backend import LoadedModel
from actors.switch_feed import SwitchFeed
from actors.transition_manager import Transitions

log = logging.getLogger("model_router.predictor")

ACTIVE_GAUGE_LIMIT = 4096


@attrs.frozen
class Attempt:
    """One model a request may be answered by; ``version`` None means the model's serving version."""

    name: str
    version: str | None
    why: str


@attrs.define
class Predictor:
    """Request-path logic over the router, the model cache, the transition manager and health."""

    router: RouterState
    cache: ModelCache
    metrics: Metrics
    transitions: Transitions
    health: HealthMonitor
    feed: SwitchFeed
    batcher: Batcher | None = None
    # How a failed batch item reads: the web layer supplies it (it alone knows statuses).
    render_error: Callable[[RouterError], dict[str, Any]] = RouterError.to_body
    # Calls remote versions' endpoints (docs/remote-models.md); None: remote versions are unavailable.
    remote: RemoteCaller | None = None
    seen_routes: dict[tuple[str, int], int] = attrs.field(factory=dict)
    last_slow_log: float = 0.0
    calls: ModelCalls = attrs.field(factory=ModelCalls)
    # Why a version's last call failed (inference error, deadline), for /models and /health/detailed.
    call_errors: dict[tuple[str, str], str] = attrs.field(factory=dict)
    counters: MetricChildren = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.counters = MetricChildren(self.metrics)

    # -- routing --------------------------------------------------------------------------

    def route(self, request: PredictRequest) -> Selection:
        started = time.perf_counter_ns()
        selection = self.router.select(request.asset_class or "", request.horizon_ms or 0.0,
                                       request.symbol)
        elapsed_us = (time.perf_counter_ns() - started) / 1000
        self.metrics.select_latency_us.observe(elapsed_us)
        settings = self.router.config.settings
        if elapsed_us > settings.max_latency_us and settings.performance_logging:
            self.log_slow_route(request, elapsed_us, settings.max_latency_us)
        self.counters.rule(selection).inc()
        self.note_active_model(request, selection)
        return selection

    def log_slow_route(self, request: PredictRequest, elapsed_us: float, budget_us: float) -> None:
        """At most one line per second: a slow route is a signal, not something to flood logs with."""
        now = time.monotonic()
        if now - self.last_slow_log >= 1.0:
            self.last_slow_log = now
            log.warning("select_model took %.1f us (budget %.0f us) for asset_class=%r horizon_ms=%r",
                        elapsed_us, budget_us, request.asset_class, request.horizon_ms,
                        extra={"correlation_id": request.correlation_id})

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

    def attempts(self, request: PredictRequest, selection: Selection | None,
                 principal: ApiKey | None = None) -> list[Attempt]:
        """Who may answer, in order: the assigned version, the stable version, fallbacks.

        With a ``principal`` (a key bound to a workspace), a first choice outside the
        workspace's allow-list is refused (``model_not_allowed``) and fallbacks outside it
        are skipped: a request never reaches a model its workspace may not use.

        A request naming a version gets exactly that version. Otherwise the model's traffic
        plan assigns a version by the request's key (symbol, else correlation id); if that
        is a switch candidate, the stable version is next in line, so a failing candidate
        never fails a request. Routed requests then try the rule's fallback and the
        default model.
        """
        first, plan = self.primary(request, selection)
        if principal is not None:
            refusal = model_refusal(principal, first.name)
            if refusal is not None:
                raise refusal_error(refusal)
        if first.why == "explicit":
            return [first]
        chain = [first]
        if plan is not None and first.version != plan.stable:
            chain.append(Attempt(first.name, plan.stable, "stable"))
        if selection is not None:
            for alternative in (selection.fallback, self.router.config.settings.default_model):
                if alternative and all(a.name != alternative for a in chain) and (
                        principal is None or model_allowed(principal, alternative)):
                    chain.append(Attempt(alternative, None, "fallback"))
        return chain

    def primary(self, request: PredictRequest, selection: Selection | None) -> tuple[Attempt, TrafficPlan | None]:
        """The first choice as an Attempt (explicit when the request named its version), with the model's plan."""
        name, version, plan = self.first_choice(request, selection)
        return Attempt(name, version, "explicit" if request.model_version is not None else "primary"), plan

    def first_choice(self, request: PredictRequest,
                     selection: Selection | None) -> tuple[str, str | None, TrafficPlan | None]:
        """(model, version, plan): the named version, or the version the model's plan assigns this
        key (symbol, else correlation id); version None means the model's serving version.
        Plain values, no Attempt: ``quick_model`` asks this for every request and batch item."""
        name = request.model_name or (selection.model if selection is not None else "")
        if request.model_version is not None:
            return name, request.model_version, None
        plan = self.transitions.plan(name)
        if plan is None:
            return name, None, None
        return name, plan.pick(request.symbol or request.correlation_id), plan

    async def usable(self, chain: list[Attempt], start: int,
                     skip: frozenset[tuple[str, str]]) -> tuple[int, LoadedModel | None, RouterError | None]:
        """From ``chain[start:]``, the first model that loads and whose breaker admits a call.

        Returns (its position, the model, the first error met on the way); the model is None
        when nothing is left. A client error (e.g. 404) on the first choice is raised: it is
        the client's answer, not a reason to fall back.
        """
        first_error: RouterError | None = None
        for position in range(start, len(chain)):
            try:
                model = await self.load(chain[position])
            except RouterError as error:
                if not isinstance(error, Unavailable) and position == 0:
                    raise
                first_error = first_error or error
                continue
            key = (model.name, model.version)
            if key in skip or not self.health.breakers.allow(key):
                first_error = first_error or Unavailable(
                    "circuit_open", f"{model.name}@{model.version} is failing; circuit breaker open",
                    {"model": model.name, "version": model.version})
                continue
            return position, model, first_error
        return len(chain), None, first_error

    def serving_version(self, name: str) -> str | None:
        plan = self.transitions.plan(name)
        if plan is not None:
            return plan.stable
        active = self.cache.view.active.get(name)
        if active is not None:
            return active
        versions = [v for v in self.cache.view.catalog.get(name, ()) if v not in self.transitions.excluded(name)]
        return latest_version(versions)

    def serving_for(self, route: SymbolRoute) -> str | None:
        """Read-only: which ``name@version`` would answer this symbol now (for switch events)."""
        selection = None
        if route.model_name is None:
            selection = self.router.select(route.asset_class or "", route.horizon_ms or 0.0, route.symbol)
        probe = PredictRequest({}, route.symbol, route.model_name, asset_class=route.asset_class,
                               horizon_ms=route.horizon_ms, symbol=route.symbol)
        for attempt in self.attempts(probe, selection):
            version = attempt.version or self.serving_version(attempt.name)
            if version is None:
                continue
            key = (attempt.name, version)
            if self.health.breakers.is_open(key) or key in self.cache.view.failures:
                continue
            return f"{attempt.name}@{version}"
        return None

    # -- running --------------------------------------------------------------------------

    async def load(self, attempt: Attempt) -> LoadedModel:
        version = attempt.version
        if version is None:
            plan = self.transitions.plan(attempt.name)
            version = plan.stable if plan is not None else None
        model = self.cache.lookup(attempt.name, version)
        return model if model is not None else await self.cache.get(attempt.name, version)

    def operation_of(self, model: LoadedModel) -> str | None:
        """The running switch this call belongs to (both arms count for A/B statistics)."""
        plan = self.transitions.plan(model.name)
        if plan is None or plan.candidate is None or model.version not in plan.versions():
            return None
        return plan.operation_id

    def run_model(self, model: LoadedModel, rows: np.ndarray) -> np.ndarray:
        """One inline interpreter call; rows whose output is not finite come back as NaN rows.

        Not counted in ``InFlight``: the call runs on the event loop without a checkpoint, so no
        other task (a drain waiting for the version to go idle, a metrics scrape) could ever see
        the count between its increment and decrement. Threaded and remote calls, which do
        yield, are counted.
        """
        started = time.perf_counter()
        key = (model.name, model.version)
        try:
            probabilities = model.predict(rows)
        except Exception as exc:
            self.counters.inference(model.name, ok=False).inc(len(rows))
            raise self.call_failed(model, exc) from exc
        elapsed = time.perf_counter() - started
        self.calls.measured(key, elapsed)
        self.counters.latency(model.name).observe(elapsed)
        return probabilities

    def call_failed(self, model: LoadedModel, exc: Exception) -> Unavailable:
        error = Unavailable("inference_failed", f"{model.name}@{model.version} failed: {exc}",
                            {"model": model.name, "version": model.version})
        self.note_call_error((model.name, model.version), error)
        return error

    def note_call_error(self, key: tuple[str, str], error: RouterError) -> None:
        if len(self.call_errors) >= ACTIVE_GAUGE_LIMIT:
            self.call_errors.clear()
        self.call_errors[key] = error.message

    async def run_bounded(self, model: LoadedModel, rows: np.ndarray, deadline: float) -> np.ndarray:
        """The call in a worker thread, abandoned at ``deadline`` (see actors/serving/model_calls.py)."""
        key = (model.name, model.version)
        self.transitions.inflight.enter(key)
        try:
            probabilities, seconds = await self.calls.in_thread(key, model, model.predict, rows, deadline)
        except DeadlineExceeded as error:
            self.counters.inference(model.name, ok=False).inc(len(rows))
            self.note_call_error(key, error)
            raise
        except Exception as exc:
            self.counters.inference(model.name, ok=False).inc(len(rows))
            raise self.call_failed(model, exc) from exc
        finally:
            self.transitions.inflight.exit(key)
        self.counters.latency(model.name).observe(seconds)
        return probabilities

    async def call(self, model: LoadedModel, rows: np.ndarray, deadline: float) -> np.ndarray:
        """Inline when the version has earned it, else bounded by the deadline in a worker thread."""
        key = (model.name, model.version)
        if self.calls.ready(key):
            return self.run_model(model, rows)
        if self.calls.inline(key):  # promoted, but probation threads still hold the interpreter
            return await self.calls.run_after_threads(key, partial(self.run_model, model, rows), deadline)
        return await self.run_bounded(model, rows, deadline)

    async def run_remote(self, model: RemoteModel, rows: np.ndarray, deadline: float) -> np.ndarray:
        """A remote version's call: awaited, never batched with others; Unavailable when no endpoint
        answers, DeadlineExceeded (504) when the request's deadline comes first."""
        if self.remote is None:
            raise Unavailable("endpoints_unavailable", f"{model.name}@{model.version} is remote and remote "
                              "calls are not wired", {"model": model.name, "version": model.version})
        started = time.perf_counter()
        key = (model.name, model.version)
        self.transitions.inflight.enter(key)
        try:
            with trio.move_on_at(deadline) as scope:
                probabilities = await self.remote.call(model, rows)
            if scope.cancelled_caught:
                error = deadline_exceeded(key)
                self.note_call_error(key, error)
                raise error
        except (Unavailable, DeadlineExceeded):
            self.counters.inference(model.name, ok=False).inc(len(rows))
            raise
        finally:
            self.transitions.inflight.exit(key)
        self.counters.latency(model.name).observe(time.perf_counter() - started)
        return probabilities

    async def infer(self, model: LoadedModel | RemoteModel, row: np.ndarray, deadline: float) -> np.ndarray:
        """One output row: inline, through the dynamic batcher when requests contend, or bounded;
        a remote version's call is awaited (never batched with others)."""
        if isinstance(model, RemoteModel):
            return (await self.run_remote(model, row.reshape(1, -1), deadline))[0]
        key = (model.name, model.version)
        if self.batcher is None or not self.calls.ready(key):
            return (await self.call(model, row.reshape(1, -1), deadline))[0]
        return await self.batcher.submit(model, row, self.run_model)

    def deadline(self) -> float:
        """This request's deadline on the trio clock (``config.request_deadline_ms``, live)."""
        return trio.current_time() + self.router.config.settings.request_deadline_ms / 1000

    def record(self, request: PredictRequest, model: LoadedModel, latency_s: float, ok: bool,
               label: str | None, operation_id: str | None) -> None:
        key = (model.name, model.version)
        if ok:
            self.health.breakers.success(key)
            if self.call_errors:
                self.call_errors.pop(key, None)
        elif not isinstance(model, RemoteModel):
            # A remote version has a breaker per endpoint and health checks: its version-level
            # breaker stays closed, so an endpoint that recovers serves within one check.
            self.health.breakers.failure(key)
        self.counters.inference(model.name, ok=ok).inc()
        predicted = ((request.correlation_id, label),) if ok and label is not None else ()
        self.health.observe(Observation(model.name, model.version, latency_s, ok, predicted, model.metadata.labels,
                                        operation_id))

    def note_symbol(self, request: PredictRequest, model: LoadedModel) -> None:
        """Remember the symbol for switch events; what serves it comes from routing state."""
        symbol = request.symbol
        if symbol is None or self.feed.recent.touch(symbol, request.asset_class, request.horizon_ms,
                                                    request.model_name):
            return
        route = SymbolRoute(symbol, request.asset_class, request.horizon_ms, request.model_name,
                            f"{model.name}@{model.version}")
        self.feed.recent.note(attrs.evolve(route, served=self.serving_for(route) or route.served))

    async def answer(self, request: PredictRequest, selection: Selection | None, started: float,
                     skip: frozenset[tuple[str, str]] = frozenset(),
                     principal: ApiKey | None = None, deadline: float | None = None) -> dict[str, Any]:
        """Try each attempt in order; the first that yields a finite prediction answers.

        The common case (the first choice is loaded, its breaker closed, the call works)
        takes no chain at all: ``quick_model`` finds the model and ``attempt`` runs it. The
        chain of alternatives is built only when that first try cannot answer, and the walk
        then goes on after it, with its error, exactly as if it had been the chain's first step.

        A call that misses the request's deadline ends the request with DeadlineExceeded
        (504): the deadline is the whole request's, so no fallback is tried after it.
        """
        if deadline is None:
            deadline = self.deadline()
        position = 0
        first_error: RouterError | None = None
        if not skip:
            model = self.quick_model(request, selection, principal)
            if model is not None:
                prediction, first_error = await self.attempt(request, model, deadline, first=True)
                if prediction is not None:
                    return self.respond(request, model, selection, None, prediction, started)
                position = 1
        chain = self.attempts(request, selection, principal)
        while True:
            position, model, error = await self.usable(chain, position, skip)
            first_error = first_error or error
            if model is None:
                break
            attempt = chain[position]
            position += 1
            try:
                prediction, error = await self.attempt(request, model, deadline, first=attempt is chain[0])
            except FeaturesMismatch:
                continue  # this fallback takes other inputs
            if prediction is None:
                first_error = first_error or error
                continue
            fallback_from = chain[0].name if attempt.name != chain[0].name else None
            if fallback_from is not None:
                self.metrics.note_fallback(fallback_from, first_error.code if first_error else "features_mismatch")
            return self.respond(request, model, selection, fallback_from, prediction, started)
        raise first_error or Unavailable("model_unavailable", "no model could take this request", {})

    async def attempt(self, request: PredictRequest, model: LoadedModel, deadline: float, *,
                      first: bool) -> tuple[dict[str, Any] | None, RouterError | None]:
        """One model's try at a request: (the prediction, None) or (None, why it could not answer).

        Features the model does not take: the client's error (raised) on the first choice,
        ``FeaturesMismatch`` (skip it) on a fallback. A missed deadline is raised: it ends
        the request. Every call is recorded for the breakers and the health monitor.
        """
        key = (model.name, model.version)
        meta = model.metadata
        try:
            row = feature_row(request.features, meta.features, meta.window)
        except RouterError:
            self.health.breakers.abandon(key)
            if first:
                raise
            raise FeaturesMismatch from None
        operation_id = self.operation_of(model)
        call_started = time.perf_counter()
        try:
            probabilities = await self.infer(model, row, deadline)
        except DeadlineExceeded:
            self.record(request, model, time.perf_counter() - call_started, False, None, operation_id)
            raise
        except RouterError as error:
            self.record(request, model, time.perf_counter() - call_started, False, None, operation_id)
            return None, error
        latency_s = time.perf_counter() - call_started
        values = finite_values(probabilities)
        if values is None:
            self.record(request, model, latency_s, False, None, operation_id)
            return None, non_finite(model)
        prediction = shape_prediction(values, meta.labels)
        self.record(request, model, latency_s, True, prediction["signal"], operation_id)
        self.note_symbol(request, model)
        return prediction, None

    def respond(self, request: PredictRequest, model: LoadedModel, selection: Selection | None,
                fallback_from: str | None, prediction: dict[str, Any], started: float) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "prediction": prediction,
            "model": {"name": model.name, "version": model.version},
            "rule_index": selection.rule_index if selection is not None else None,
            "correlation_id": request.correlation_id,
            "config_hash": self.router.config.config_hash,
            "latency_ms": elapsed_ms(started),
        }
        if request.symbol is not None:
            answer["symbol"] = request.symbol
        if fallback_from is not None:
            answer["fallback_from"] = fallback_from
        return answer

    async def predict_one(self, body: Any, principal: ApiKey | None = None) -> dict[str, Any]:
        """One request; ``principal`` (the admitted key, None for no checks) limits the models it may reach."""
        started = time.perf_counter()
        deadline = self.deadline()
        request = parse_request(body)
        selection = self.route(request) if request.model_name is None else None
        return await self.answer(request, selection, started, principal=principal, deadline=deadline)

    def quick_model(self, request: PredictRequest, selection: Selection | None,
                    principal: ApiKey | None = None) -> LoadedModel | None:
        """The first attempt's model when it is loaded and its breaker is closed; else None.

        The same first choice as ``attempts``, without building the chain; anything short
        of a closed breaker (open, or half-open and due a probe), a model the cache has not
        loaded, or a model outside ``principal``'s workspace takes the full path (which
        explains a refusal).
        """
        name, version, _plan = self.first_choice(request, selection)
        if principal is not None and not model_allowed(principal, name):
            return None
        model = self.cache.lookup(name, version)
        if model is None or self.health.breakers.state((model.name, model.version)) != "closed":
            return None
        return model

    async def predict_batch(self, body: Any, principal: ApiKey | None = None) -> dict[str, Any]:
        """Per-item answers in order, items for one model version in one call (``batch_predict``)."""
        return await predict_batch(self, body, principal)


@attrs.define
class MetricChildren:
    """Labelled metric children, looked up once: ``labels()`` costs more than the increment."""

    metrics: Metrics
    rules: dict[Selection, Any] = attrs.field(factory=dict)
    inferences: dict[tuple[str, bool], Any] = attrs.field(factory=dict)
    latencies: dict[str, Any] = attrs.field(factory=dict)

    def rule(self, selection: Selection) -> Any:
        child = self.rules.get(selection)
        if child is None:
            if len(self.rules) > 4096:
                self.rules.clear()
            rule = "default" if selection.rule_index is None else str(selection.rule_index)
            child = self.rules[selection] = self.metrics.rule_matches.labels(rule_index=rule, model=selection.model)
        return child

    def inference(self, model_name: str, *, ok: bool) -> Any:
        child = self.inferences.get((model_name, ok))
        if child is None:
            child = self.inferences[(model_name, ok)] = self.metrics.inference_requests.labels(
                model_name=model_name, status="ok" if ok else "error")
        return child

    def latency(self, model_name: str) -> Any:
        child = self.latencies.get(model_name)
        if child is None:
            child = self.latencies[model_name] = self.metrics.inference_latency_s.labels(model_name=model_name)
        return child


class FeaturesMismatch(Exception):
    """A fallback model takes other inputs than the request carries: try the next one."""


def non_finite(model: LoadedModel) -> RouterError:
    return Unavailable("inference_failed", f"{model.name}@{model.version} produced non-finite output",
                    {"model": model.name, "version": model.version})
