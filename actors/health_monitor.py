"""The health monitor actor: per-version windows, feedback accuracy, breakers, A/B arms.

The request path sends one :class:`Observation` per model call (``send_nowait``; a full
queue drops and counts, it never slows a request). ``POST /feedback`` sends a
:class:`FeedbackCommand` down the same channel, so feedback can never overtake the
prediction it refers to. The actor keeps a sliding window per model version (requests,
errors, latency percentiles, accuracy) and, for A/B operations, per-arm totals for the
significance tests.

Circuit breakers must act inside the request that fails, so they live on a
:class:`BreakerBoard` the request path calls synchronously (the event loop is the only
thread touching it); the board reports every state change to a callback, which the
composition root wires to the switch feed and the transition manager.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import attrs
import trio

from actors import mailbox
from actors.core.breaker import STATE_CODES, Breaker, BreakerSettings, allow, on_failure, on_success, release_probe
from actors.core.errors import InvalidInput, not_found
from actors.core.feedback_index import FeedbackIndex
from actors.core.health_stats import (
    AlertThresholds,
    HealthSnapshot,
    RunningMoments,
    SlidingWindow,
    WindowSettings,
    judge,
    two_proportion_test,
    welch_t_test,
)
from actors.core.rollout import pool_snapshots
from actors.core.rules import RouterConfig, SwitchingSettings
from actors.core.switch_policy import Verdict
from actors.core.versions import ModelKey
from actors.mailbox import Envelope, ask
from actors.serving.metrics import Metrics

log = logging.getLogger("model_router.health")


class Observation(NamedTuple):
    """One model call: who answered, how long it took, whether it worked.

    A batched call is one observation of ``count`` predictions; ``predicted`` holds the
    (correlation id, label) of each so feedback can find them. A named tuple, not a frozen
    attrs class: one is sent per request, and it is as immutable at a third of the cost.
    """

    name: str
    version: str
    latency_s: float
    ok: bool
    predicted: tuple[tuple[str, str], ...] = ()
    labels: tuple[str, ...] = ()
    operation_id: str | None = None
    count: int = 1


@attrs.frozen
class Feedback:
    """The true outcome of an earlier prediction, by its correlation id (asked, answered)."""

    correlation_id: str
    outcome: str


@attrs.frozen
class LimitsChanged:
    """New breaker and alert limits (and feedback index size) from a rules reload; the actor applies them."""

    breakers: BreakerSettings
    alerts: AlertThresholds
    feedback_index_size: int | None = None


HealthMessage = Observation | Envelope[Feedback] | LimitsChanged


def switching_limits(switching: SwitchingSettings) -> tuple[BreakerSettings, AlertThresholds]:
    """The breaker and alert limits a config's ``switching:`` section asks for."""
    return (BreakerSettings(failure_threshold=switching.breaker_failures,
                            open_seconds=switching.breaker_open_seconds),
            AlertThresholds(error_rate=switching.alert_error_rate, latency_p95_ms=switching.alert_latency_p95_ms,
                            min_requests=switching.min_requests))


@attrs.define
class ArmStats:
    """Totals of one arm of an A/B operation, since it started."""

    requests: int = 0
    errors: int = 0
    latency_ms: RunningMoments = attrs.field(factory=RunningMoments)
    outcomes: int = 0
    correct: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else None,
            "latency_mean_ms": round(self.latency_ms.mean, 6) if self.latency_ms.count else None,
            "outcomes": self.outcomes,
            "accuracy": round(self.correct / self.outcomes, 6) if self.outcomes else None,
        }


@attrs.define
class BreakerBoard:
    """Breakers per model version; synchronous, event-loop only, changes reported to ``on_change``."""

    settings: BreakerSettings
    metrics: Metrics
    on_change: Callable[[ModelKey, str, str], None] = lambda key, old, new: None
    breakers: dict[ModelKey, Breaker] = attrs.field(factory=dict)
    # The service passes trio.current_time (so tests can drive it with autojump_clock);
    # the default reads the monotonic clock at call time.
    clock: Callable[[], float] = attrs.field(default=lambda: time.monotonic())

    def _set(self, key: ModelKey, breaker: Breaker) -> None:
        old = self.breakers.get(key, Breaker())
        self.breakers[key] = breaker
        if old.state != breaker.state:
            self.metrics.breaker_state.labels(model=key[0], version=key[1]).set(STATE_CODES[breaker.state])
            log.warning("breaker %s@%s: %s -> %s", key[0], key[1], old.state, breaker.state)
            self.on_change(key, old.state, breaker.state)

    def allow(self, key: ModelKey) -> bool:
        breaker = self.breakers.get(key)
        if breaker is None:
            return True
        allowed, updated = allow(breaker, self.clock(), self.settings)
        if updated is not breaker:
            self._set(key, updated)
        return allowed

    def is_open(self, key: ModelKey) -> bool:
        """Read-only: would a request be refused right now (no probe is claimed)?"""
        breaker = self.breakers.get(key)
        if breaker is None or breaker.state == "closed":
            return False
        if breaker.state == "open":
            opened = breaker.opened_at or 0.0
            return self.clock() - opened < self.settings.open_seconds
        return breaker.probes_in_flight >= self.settings.half_open_probes

    def success(self, key: ModelKey) -> None:
        breaker = self.breakers.get(key)
        if breaker is not None:
            self._set(key, on_success(breaker, self.clock(), self.settings))

    def failure(self, key: ModelKey) -> None:
        self._set(key, on_failure(self.breakers.get(key, Breaker()), self.clock(), self.settings))

    def abandon(self, key: ModelKey) -> None:
        breaker = self.breakers.get(key)
        if breaker is not None and breaker.probes_in_flight:
            self._set(key, release_probe(breaker))

    def state(self, key: ModelKey) -> str:
        breaker = self.breakers.get(key)
        return breaker.state if breaker is not None else "closed"


@attrs.define
class HealthMonitor:
    """The handle: observe (request path), feedback, and read-only views for decisions and HTTP."""

    inbox: trio.MemorySendChannel[HealthMessage]
    metrics: Metrics
    breakers: BreakerBoard
    window_settings: WindowSettings = attrs.field(factory=WindowSettings)
    alerts: AlertThresholds = attrs.field(factory=AlertThresholds)
    windows: dict[ModelKey, SlidingWindow] = attrs.field(factory=dict)
    arms: dict[tuple[str, str], ArmStats] = attrs.field(factory=dict)
    #: Predictions feedback may still refer to (``switching.feedback_index_size``); actor side only.
    feedback_index: FeedbackIndex = attrs.field(factory=FeedbackIndex)

    def __attrs_post_init__(self) -> None:
        self.metrics.feedback_index_entries.set_function(lambda: float(len(self.feedback_index)))

    def observe(self, observation: Observation) -> None:
        try:
            self.inbox.send_nowait(observation)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.metrics.health_observations_dropped.inc()

    async def feedback(self, correlation_id: str, outcome: str) -> dict[str, Any]:
        """Fold an outcome into the answering version's window; NotFound/InvalidInput when it cannot."""
        return await ask(self.inbox, Feedback(correlation_id, outcome))

    def rules_applied(self, config: RouterConfig, started_at: float) -> None:
        """A router listener: the reloaded rules' ``switching:`` limits go in force."""
        self.limits_changed(*switching_limits(config.switching),
                            feedback_index_size=config.switching.feedback_index_size)

    def limits_changed(self, breakers: BreakerSettings, alerts: AlertThresholds, *,
                       feedback_index_size: int | None = None) -> None:
        """From a rules reload (non-blocking): the actor applies the new limits in order with observations."""
        try:
            self.inbox.send_nowait(LimitsChanged(breakers, alerts, feedback_index_size))
        except trio.WouldBlock:
            log.error("health monitor queue full: new switching limits not delivered")

    def snapshot(self, name: str, version: str) -> HealthSnapshot:
        window = self.windows.get((name, version))
        if window is None:
            window = SlidingWindow(self.window_settings)
        return window.snapshot(time.monotonic())

    def verdict(self, name: str, version: str, *, max_latency_ms: float | None, min_accuracy: float | None,
                min_samples: int, peers: Sequence[HealthSnapshot] = ()) -> Verdict:
        """Judge the version on this replica's window, pooled with other replicas' (``peers``) if any."""
        snapshot = self.snapshot(name, version)
        if peers:
            snapshot = pool_snapshots([snapshot, *peers])
        verdict = judge(snapshot, max_latency_ms=max_latency_ms,
                        min_accuracy=min_accuracy, min_samples=min_samples, alerts=self.alerts)
        if self.breakers.state((name, version)) != "closed":
            breaches = (*verdict.breaches, f"circuit breaker {self.breakers.state((name, version))}")
            return Verdict(healthy=False, enough_data=verdict.enough_data, breaches=breaches)
        return verdict

    def ab_report(self, operation_id: str, control: str, treatment: str) -> dict[str, Any]:
        """Per-arm totals and the two significance tests (accuracy: z-test; latency: Welch's t)."""
        a = self.arms.get((operation_id, control), ArmStats())
        b = self.arms.get((operation_id, treatment), ArmStats())
        return {
            "arms": {control: a.to_dict(), treatment: b.to_dict()},
            "accuracy_test": two_proportion_test(a.correct, a.outcomes, b.correct, b.outcomes).to_dict(),
            "latency_test": welch_t_test(a.latency_ms, b.latency_ms).to_dict(),
        }

    def known_versions(self) -> set[ModelKey]:
        return set(self.windows) | set(self.breakers.breakers)

    # -- actor side -------------------------------------------------------------------

    def take(self, observation: Observation) -> None:
        key = (observation.name, observation.version)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = SlidingWindow(self.window_settings)
        window.record(time.monotonic(), observation.latency_s, observation.ok, observation.count)
        if observation.operation_id is not None:
            arm = self.arms.setdefault((observation.operation_id, observation.version), ArmStats())
            arm.requests += observation.count
            arm.errors += 0 if observation.ok else observation.count
            arm.latency_ms = arm.latency_ms.add(observation.latency_s * 1000)
        if observation.ok and observation.predicted:
            self.feedback_index.add(observation.name, observation.version, observation.labels,
                                    observation.operation_id, observation.predicted)

    async def take_feedback(self, command: Feedback) -> dict[str, Any]:
        entry = self.feedback_index.get(command.correlation_id)
        if entry is None:
            raise not_found("unknown_correlation_id", "no recent prediction has this correlation_id",
                            correlation_id=command.correlation_id)
        name, version, label, labels, operation_id = attrs.astuple(entry, recurse=False)
        if command.outcome not in labels:
            raise InvalidInput("invalid_outcome", "outcome must be one of the model's labels",
                               {"labels": list(labels)})
        correct = command.outcome == label
        self.windows[(name, version)].record_outcome(time.monotonic(), correct)
        if operation_id is not None:
            arm = self.arms.setdefault((operation_id, version), ArmStats())
            arm.outcomes += 1
            arm.correct += 1 if correct else 0
        self.feedback_index.forget(command.correlation_id)
        return {"model": {"name": name, "version": version}, "predicted": label,
                "outcome": command.outcome, "correct": correct}


#: Messages taken per wake-up before the actor yields to the scheduler (fairness under load).
DRAIN_LIMIT = 512


async def run(
    monitor: HealthMonitor,
    inbox: trio.MemoryReceiveChannel[HealthMessage],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Fold observations and feedback into the windows until cancelled.

    One wake-up takes every message already queued (up to ``DRAIN_LIMIT``): ``async for``
    would yield to the scheduler once per message, and under load there is one message per
    request, so the actor's scheduling cost would grow with traffic instead of with wake-ups.
    """
    async with inbox:
        task_status.started()
        while True:
            try:
                message = await inbox.receive()
            except trio.EndOfChannel:
                return
            taken = 0
            while True:
                await take_message(monitor, message)
                taken += 1
                if taken >= DRAIN_LIMIT:
                    break
                try:
                    message = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break


async def take_message(monitor: HealthMonitor, message: HealthMessage) -> None:
    """One message, under the supervision rule: a bad observation is logged and dropped."""
    if isinstance(message, Observation):
        try:
            monitor.take(message)
        except Exception as exc:  # supervision: one bad observation is dropped, the actor goes on
            log.error("health monitor: dropping an observation", exc_info=exc)
    elif isinstance(message, LimitsChanged):
        monitor.breakers.settings = message.breakers
        monitor.alerts = message.alerts
        if message.feedback_index_size is not None:
            monitor.feedback_index.resize(message.feedback_index_size)
    else:
        await mailbox.handle("health_monitor", message, monitor.take_feedback)
