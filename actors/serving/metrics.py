"""Prometheus metrics of one service instance.

prometheus-client is used rather than hand-written exposition because it gets the text
format, label escaping and histogram buckets right and is what every scraper expects.
Each service owns its own ``CollectorRegistry`` so several instances (tests start many
in one process) never collide on metric names; the standard process, platform and GC
collectors are registered on it too, because a private registry does not get them from
prometheus-client's default one. The metrics every prediction updates are lock-free
``LoopCounter``/``LoopHistogram`` (actors/serving/loop_metrics.py: why), exposed with the same
samples. docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from actors.serving.loop_metrics import LoopCounter, LoopHistogram

if TYPE_CHECKING:
    from actors.core.rules import RouterConfig

SELECT_BUCKETS_US = (0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000)
RELOAD_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000)
INFERENCE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# End-to-end HTTP: a prediction takes ~0.1-1 ms, admin calls (reload, switch) up to seconds.
HTTP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@attrs.define
class Metrics:
    """Every metric the service exports, registered on a private registry."""

    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    select_latency_us: LoopHistogram = attrs.field(init=False)
    reload_duration_ms: Histogram = attrs.field(init=False)
    reloads_total: Counter = attrs.field(init=False)
    rule_matches: LoopCounter = attrs.field(init=False)
    active_model: Gauge = attrs.field(init=False)
    inference_requests: LoopCounter = attrs.field(init=False)
    inference_latency_s: LoopHistogram = attrs.field(init=False)
    models_loaded: Gauge = attrs.field(init=False)
    model_cache_bytes: Gauge = attrs.field(init=False)
    model_load_failures: Counter = attrs.field(init=False)
    redis_dropped: Counter = attrs.field(init=False)
    access_refusals: Counter = attrs.field(init=False)
    redis_connected: Gauge = attrs.field(init=False)
    switch_total: Counter = attrs.field(init=False)
    switch_triggers_dropped: Counter = attrs.field(init=False)
    switch_subscribers: Gauge = attrs.field(init=False)
    switch_subscribers_dropped: Counter = attrs.field(init=False)
    switch_feed_backlog: Gauge = attrs.field(init=False)
    traffic_share: Gauge = attrs.field(init=False)
    breaker_state: Gauge = attrs.field(init=False)
    inflight: Gauge = attrs.field(init=False)
    operations_total: Counter = attrs.field(init=False)
    health_observations_dropped: Counter = attrs.field(init=False)
    feedback_index_entries: Gauge = attrs.field(init=False)
    batch_rows: LoopHistogram = attrs.field(init=False)
    http_duration_s: LoopHistogram = attrs.field(init=False)
    fallbacks: Counter = attrs.field(init=False)
    ready: Gauge = attrs.field(init=False)
    rule_info: Gauge = attrs.field(init=False)
    remote_latency_s: Histogram = attrs.field(init=False)
    remote_requests: Counter = attrs.field(init=False)
    remote_endpoint_up: Gauge = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # python_gc_collections_total and friends
        self.select_latency_us = LoopHistogram(
            "model_router_latency_microseconds",
            "Time spent in select_model per request, microseconds",
            buckets=SELECT_BUCKETS_US,
            registry=r,
        )
        self.reload_duration_ms = Histogram(
            "model_router_reload_duration_ms",
            "Config reload duration (read, parse, validate, compile, swap), milliseconds",
            buckets=RELOAD_BUCKETS_MS,
            registry=r,
        )
        self.reloads_total = Counter(
            "model_router_reloads_total", "Config reload attempts", ["result"], registry=r
        )
        self.rule_matches = LoopCounter(
            "model_router_rule_matches_total",
            "Routed requests per matched rule (rule_index 'default' when no rule matched)",
            ["rule_index", "model"],
            registry=r,
        )
        self.active_model = Gauge(
            "model_router_active_model",
            "1 for the model that currently serves an (asset_class, horizon bucket) seen in traffic",
            ["asset_class", "horizon_bucket", "model"],
            registry=r,
        )
        self.inference_requests = LoopCounter(
            "inference_requests_total", "Predictions by model and outcome", ["model_name", "status"],
            registry=r,
        )
        self.inference_latency_s = LoopHistogram(
            "inference_latency_seconds",
            "Interpreter time per call (a batch counts once), seconds",
            ["model_name"],
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        # Remote versions (docs/remote-models.md): one series per endpoint of a loaded version.
        self.remote_latency_s = Histogram(
            "model_router_remote_latency_seconds",
            "Round trip of an Open Inference Protocol call to a remote endpoint, seconds",
            ["model", "version", "endpoint"],
            buckets=HTTP_BUCKETS_S,
            registry=r,
        )
        self.remote_requests = Counter(
            "model_router_remote_requests_total",
            "Calls to remote endpoints by outcome (ok, error, timeout, refused: breaker or health check)",
            ["model", "version", "endpoint", "outcome"],
            registry=r,
        )
        self.remote_endpoint_up = Gauge(
            "model_router_remote_endpoint_up",
            "1 when the last active health check of a remote endpoint passed",
            ["model", "version", "endpoint"],
            registry=r,
        )
        self.models_loaded = Gauge("model_router_models_loaded", "Model versions in memory", registry=r)
        self.model_cache_bytes = Gauge(
            "model_router_model_cache_bytes", "Estimated bytes held by loaded models", registry=r
        )
        self.model_load_failures = Counter(
            "model_router_model_load_failures_total", "Failed model loads", ["model_name"], registry=r
        )
        self.redis_dropped = Counter(
            "model_router_redis_dropped_total",
            "Redis messages dropped because the outbox was full while Redis was unreachable",
            ["kind"],
            registry=r,
        )
        self.access_refusals = Counter(
            "model_router_access_refusals_total",
            "Requests refused by access control, by workspace ('-' for none) and outcome code",
            ["workspace", "code"],
            registry=r,
        )
        self.redis_connected = Gauge(
            "model_router_redis_connected", "1 when the last Redis operation succeeded", registry=r
        )
        self._switching_metrics()
        self._service_metrics()

    def _switching_metrics(self) -> None:
        r = self.registry
        self.switch_total = Counter(
            "model_switch_total", "Switch events: a recently active symbol changed serving model version",
            ["reason"], registry=r)
        self.switch_triggers_dropped = Counter(
            "model_router_switch_triggers_dropped_total", "Change triggers dropped (feed queue full)", registry=r)
        self.switch_subscribers = Gauge(
            "model_router_switch_subscribers", "WebSocket subscribers of the switch feed", registry=r)
        self.switch_subscribers_dropped = Counter(
            "model_router_switch_subscribers_dropped_total", "Switch-feed subscribers dropped for being slow",
            registry=r)
        self.switch_feed_backlog = Gauge(
            "model_router_switch_feed_backlog",
            "Switch events the feed keeps for subscribers that have not taken them yet", registry=r)
        self.traffic_share = Gauge(
            "model_router_traffic_share", "Share of a model's traffic each version gets (0..1)",
            ["model", "version"], registry=r)
        self.breaker_state = Gauge(
            "model_router_breaker_state", "Circuit breaker per model version: 0 closed, 1 half-open, 2 open",
            ["model", "version"], registry=r)
        self.inflight = Gauge(
            "model_router_inflight_requests", "Requests holding a model version right now",
            ["model", "version"], registry=r)
        self.operations_total = Counter(
            "model_router_switch_operations_total", "Switch operations by strategy and final state",
            ["strategy", "state"], registry=r)
        self.batch_rows = LoopHistogram(
            "model_router_dynamic_batch_rows", "Rows per interpreter call formed by the dynamic batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.health_observations_dropped = Counter(
            "model_router_health_observations_dropped_total",
            "Request observations the health monitor could not take (queue full)", registry=r)
        self.feedback_index_entries = Gauge(
            "model_router_feedback_index_entries",
            "Recent predictions POST /feedback can refer to (bounded by switching.feedback_index_size)", registry=r)

    def _service_metrics(self) -> None:
        r = self.registry
        self.http_duration_s = LoopHistogram(
            "model_router_http_request_duration_seconds",
            "End-to-end HTTP request duration by route template (not raw path), method and status, seconds",
            ["route", "method", "status"], buckets=HTTP_BUCKETS_S, registry=r)
        self.fallbacks = Counter(
            "model_router_fallback_total",
            "Requests answered by another model than their first choice: model is the first choice, "
            "reason the error code that made it unusable",
            ["model", "reason"], registry=r)
        self.ready = Gauge(
            "model_router_ready", "1 while GET /health/ready would answer 200 (default model loaded), else 0",
            registry=r)
        self.rule_info = Gauge(
            "model_router_rule_info",
            "Always 1: what each rule_index of model_router_rule_matches_total matches, to join on rule_index "
            "(rule matches by asset class)",
            ["rule_index", "asset_class", "horizon_ms", "model"], registry=r)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One finished HTTP request. ``route`` must be the route template (``/models/<name>``),
        never the raw path, or every model name becomes a new time series."""
        self.http_duration_s.labels(route=route, method=method, status=str(status)).observe(seconds)

    def note_fallback(self, model: str, reason: str) -> None:
        """A request whose first-choice ``model`` could not answer (``reason``: an error code)."""
        self.fallbacks.labels(model=model, reason=reason).inc()

    def track_readiness(self, is_ready: Callable[[], bool]) -> None:
        """``model_router_ready`` is computed at scrape time from ``is_ready`` (cheap, no I/O),
        so it can never go stale between a readiness change and the next scrape."""
        self.ready.set_function(lambda: 1.0 if is_ready() else 0.0)

    def describe_rules(self, config: RouterConfig) -> None:
        """Publish ``model_router_rule_info`` for the rules now in force (call on every apply).

        The rule-match counter is labelled by rule_index only (seed contract); this info
        series lets PromQL group matches by the rule's asset-class pattern with
        ``* on (rule_index) group_left (asset_class)``. Old rules' series are dropped.
        """
        self.rule_info.clear()
        for rule in config.rules:
            self.rule_info.labels(rule_index=str(rule.index), asset_class=rule.asset_class,
                                  horizon_ms=rule.horizon.text, model=rule.model).set(1)
        self.rule_info.labels(rule_index="default", asset_class="*", horizon_ms="*",
                              model=config.settings.default_model).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
