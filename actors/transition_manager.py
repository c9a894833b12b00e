"""The transition manager actor: versions, switch operations, traffic plans, draining.

It owns the version registry (policy, traffic plan, deregistered versions, history per
model) and every switch operation. The request path reads ``transitions.view.plans``
(an immutable mapping, rebound on every change) to pick a version per request: the
candidate when the request's key (symbol, else correlation id) hashes under the
candidate's weight, the stable version otherwise (see ``actors/core/assignment.py``).

Each operation runs as a task in the actor's nursery and is a thin loop around the pure
state machine in ``actors/core/switch_policy.py``: load and warm the target version (the
model cache does both in a worker thread), take the first step, then every
``interval_s`` ask the health monitor for a verdict and advance. Operator commands
(abort, promote, rollback) and breaker alerts apply a transition at once and wake the
loop. When an operation ends, the version that lost its traffic is marked draining and
unloaded once no request holds it (the in-flight count reaches zero) or after
``max_transition_s``, whichever comes first.

State is written to a JSON file (atomic, fsynced), so a restart comes back on the same
versions and weights, and running operations resume. An operator command (switch, abort,
promote, rollback, register, deregister, reload) is written before its answer is sent: a
202 for a switch means the switch survives a kill -9 right after it. Step updates of running
operations are written by a background writer that coalesces bursts into one write.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import mailbox
from actors.core.commands import (
    AbortSwitch,
    Command,
    DeregisterVersion,
    PromoteSwitch,
    RecordStep,
    RegisterVersion,
    ReloadModel,
    RollbackModel,
    RollbackOperation,
    SwitchModel,
    register_command,
)
from actors.core.errors import Conflict, InvalidInput, RouterError, bad_request, not_found
from actors.core.rollout import newer, wait_before_step
from actors.core.rules import ModelThreshold
from actors.core.switch_policy import (
    Operation,
    TrafficPlan,
    abort,
    advance,
    begin,
    fail,
    new_operation,
    parse_switch_params,
    plan_for,
    promote,
    resolve_stable,
    rollback,
)
from actors.core.versions import ModelKey, is_model_name, is_version_name
from actors.health_monitor import HealthMonitor
from actors.mailbox import Envelope, Mailbox, ask, tell
from actors.model_cache import ModelCache
from actors.rollout_leader import FOLLOW_CHECK_S, GATE_CHECK_S, Rollouts
from actors.serving.metrics import Metrics
from actors.storage import registry_store
from actors.storage.model_repo import list_repository, version_dir
from actors.storage.registry_store import RegistryState
from actors.storage.version_upload import write_upload
from actors.switch_feed import SwitchFeed

log = logging.getLogger("model_router.transitions")


@attrs.frozen
class TrafficView:
    """What the request path and the HTTP layer read; replaced whole on every change."""

    plans: Mapping[str, TrafficPlan] = attrs.field(factory=dict)
    state: RegistryState = attrs.field(factory=RegistryState)
    draining: Mapping[ModelKey, float] = attrs.field(factory=dict)


@attrs.define
class InFlight:
    """Requests holding each model version; the request path enters and exits synchronously."""

    metrics: Metrics
    counts: dict[ModelKey, int] = attrs.field(factory=dict)
    idle: dict[ModelKey, trio.Event] = attrs.field(factory=dict)

    gauges: set[ModelKey] = attrs.field(factory=set)

    def enter(self, key: ModelKey) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if key not in self.gauges:
            # Read at scrape time from ``counts``: the request path touches no metric lock.
            self.gauges.add(key)
            child = self.metrics.inflight.labels(model=key[0], version=key[1])
            child.set_function(lambda counts=self.counts, key=key: counts.get(key, 0))

    def exit(self, key: ModelKey) -> None:
        remaining = self.counts.get(key, 1) - 1
        if remaining > 0:
            self.counts[key] = remaining
            return
        self.counts.pop(key, None)
        event = self.idle.pop(key, None)
        if event is not None:
            event.set()

    def count(self, key: ModelKey) -> int:
        return self.counts.get(key, 0)

    async def wait_idle(self, key: ModelKey) -> None:
        if self.counts.get(key, 0) == 0:
            return
        event = self.idle.setdefault(key, trio.Event())
        await event.wait()


@attrs.frozen
class BreakerOpened:
    """From the breaker board: a version's breaker opened (roll back a canary or gradual switch to it)."""

    key: ModelKey


@attrs.define
class Transitions:
    """The handle the request path and HTTP layer hold."""

    mailbox: Mailbox
    inflight: InFlight
    view: TrafficView = attrs.field(factory=TrafficView)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def published(self, view: TrafficView) -> None:
        """Actor only: rebind the view and wake whoever waits for a change."""
        self.view = view
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[TrafficView], bool]) -> TrafficView:
        """Wait (event-driven) until ``predicate(view)`` holds; for tests and tooling."""
        while not predicate(self.view):
            await self._changed.wait()
        return self.view

    def plan(self, name: str) -> TrafficPlan | None:
        return self.view.plans.get(name)

    def excluded(self, name: str) -> frozenset[str]:
        record = self.view.state.models.get(name)
        return record.deregistered if record is not None else frozenset()

    def pinned_versions(self) -> frozenset[ModelKey]:
        return frozenset((p.model, v) for p in self.view.plans.values() for v in p.versions())

    def operation(self, operation_id: str) -> Operation:
        op = self.view.state.operations.get(operation_id)
        if op is None:
            raise not_found("operation_not_found", f"no switch operation {operation_id!r}",
                            operation_id=operation_id)
        return op

    async def execute(self, command: Command | BreakerOpened) -> Any:
        """Run one command in the actor and return its result (or raise its domain error)."""
        return await ask(self.mailbox, command)

    async def switch(self, name: str, body: Mapping[str, Any], operation_id: str | None = None) -> Operation:
        """Start a switch; ``operation_id`` is given when mirroring another worker's switch."""
        return await self.execute(SwitchModel(name, body, operation_id))

    async def abort(self, operation_id: str) -> Operation:
        return await self.execute(AbortSwitch(operation_id))

    async def promote(self, operation_id: str) -> Operation:
        return await self.execute(PromoteSwitch(operation_id))

    async def rollback(self, name: str, version: str | None, operation_id: str | None = None) -> Operation:
        return await self.execute(RollbackModel(name, version, operation_id))

    async def rollback_operation(self, operation_id: str, reason: str) -> None:
        """Mirror another worker's automatic rollback (ignored if not running here)."""
        await self.execute(RollbackOperation(operation_id, reason))

    async def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.execute(register_command(body))

    async def deregister(self, name: str, version: str) -> dict[str, Any]:
        return await self.execute(DeregisterVersion(name, version))

    async def model_reloaded(self, name: str, version: str) -> Operation | None:
        return await self.execute(_FollowLatest(name, version, "model_reload"))

    def breaker_changed(self, key: ModelKey, new_state: str) -> None:
        """From the breaker board (synchronous): roll back a running switch whose candidate broke."""
        if new_state == "open" and not tell(self.mailbox, BreakerOpened(key)):
            log.error("transition manager queue full: breaker alert for %s@%s not delivered", *key)


@attrs.frozen
class _FollowLatest:
    """A new version of ``model`` is loaded: follow it if the model's policy is "latest"."""

    model: str
    version: str
    cause: str


def completion_trigger(op: Operation) -> str:
    """The event a finished move announces: its cause when automatic or a rollback, else a completion."""
    return "switch_complete" if op.cause == "switch" else op.cause


def step_trigger(before: Operation, after: Operation) -> str | None:
    """The event a step announces: a completion, a rollback, a weight change, or none."""
    if after.state == "completed" and before.state != "completed":
        return completion_trigger(after)
    if after.state == "rolled_back" and before.state != "rolled_back":
        return "rollback"
    if after.state == "running" and (before.state != "running" or after.weight_bp != before.weight_bp):
        return "switch_step"
    return None


def _history_reason(op: Operation) -> str:
    """Why the stable version changed, for the version history."""
    if op.state == "completed" and op.cause != "switch":
        return op.cause
    return op.state


def _stable_version(manager: _Manager, name: str) -> str | None:
    plan = manager.handle.view.plans.get(name)
    return plan.stable if plan is not None else manager.cache.view.active.get(name)


@attrs.define
class _Manager:
    """State owned by the actor task."""

    handle: Transitions
    cache: ModelCache
    health: HealthMonitor
    feed: SwitchFeed
    metrics: Metrics
    repository: Path
    thresholds: Callable[[str], ModelThreshold | None]
    nursery: trio.Nursery
    on_auto_rollback: Callable[[Operation], None] = lambda op: None
    # The rules (index, description, role) that send requests to a model; see RouterConfig.routes_to.
    routed_by: Callable[[str], tuple[dict[str, Any], ...]] = lambda name: ()
    state_path: Path | None = None
    rollouts: Rollouts = attrs.field(factory=Rollouts)
    dirty: trio.Event = attrs.field(factory=trio.Event)
    save_lock: trio.Lock = attrs.field(factory=trio.Lock)  # one writer of the state file at a time
    saved: RegistryState | None = None  # the state last written (compared by identity)
    wake: dict[str, trio.CancelScope] = attrs.field(factory=dict)

    # -- publishing ----------------------------------------------------------------------

    def publish(self, state: RegistryState, *, draining: Mapping[ModelKey, float] | None = None) -> None:
        plans = {name: r.plan for name, r in state.models.items() if r.plan is not None}
        old = self.handle.view
        self.handle.published(TrafficView(plans, state, old.draining if draining is None else draining))
        for plan in plans.values():
            for version in plan.versions():
                self.metrics.traffic_share.labels(model=plan.model, version=version).set(plan.share(version))
        for name, plan in old.plans.items():
            for version in plan.versions():
                if version not in plans.get(name, plan).versions():
                    self.metrics.traffic_share.labels(model=name, version=version).set(0)
        self.dirty.set()

    def put(self, op: Operation, *, trigger: str | None, started_at: float | None = None) -> Operation:
        """Record ``op``, derive the model's plan from it, publish, announce the change."""
        state = self.handle.view.state
        record = state.record(op.model)
        plan = plan_for(op)
        previous_stable = record.plan.stable if record.plan else op.from_version
        if plan.stable != previous_stable:
            record = record.with_history({"at": time.time(), "version": plan.stable, "previous": previous_stable,
                                          "operation_id": op.id, "reason": _history_reason(op)})
        record = attrs.evolve(record, plan=plan)
        self.publish(state.with_record(op.model, record).with_operation(op))
        if op.is_terminal:
            self.metrics.operations_total.labels(strategy=op.params.strategy, state=op.state).inc()
            log.info("switch %s %s: %s %s -> %s%s", op.id, op.state, op.model, op.from_version, op.to_version,
                     f" ({op.reason})" if op.reason else "")
        if trigger is not None:
            self.feed.trigger(trigger, op.id, started_at)
        return op

    def current(self, operation_id: str) -> Operation:
        return self.handle.view.state.operations[operation_id]

    def active_operation(self, name: str) -> Operation | None:
        for op in self.handle.view.state.operations.values():
            if op.model == name and not op.is_terminal:
                return op
        return None

    # -- commands ------------------------------------------------------------------------

    async def save(self) -> bool:
        """Write the current state now (atomic + fsync); False, logged, when the disk refuses."""
        if self.state_path is None:
            return True
        async with self.save_lock:
            state = self.handle.view.state
            try:
                await trio.to_thread.run_sync(registry_store.save, self.state_path, registry_store.encode(state))
            except OSError as exc:
                log.error("could not save registry state to %s: %s", self.state_path, exc)
                self.dirty.set()  # the background writer tries again
                return False
            self.saved = state
        return True

    async def apply(self, message: Command | BreakerOpened | _FollowLatest) -> Any:
        """Run one message; an operator command's change is on disk before its answer goes out."""
        result = await self.dispatch(message)
        if isinstance(message, _DURABLE_COMMANDS) and self.handle.view.state is not self.saved:
            await self.save()
        return result

    async def dispatch(self, message: Command | BreakerOpened | _FollowLatest) -> Any:
        """One message, matched on its type: the whole command surface of the actor."""
        match message:
            case SwitchModel(model=name, params=body, operation_id=operation_id, reason=cause):
                return await self.start_switch(name, body, reason=cause, operation_id=operation_id)
            case AbortSwitch(operation_id=operation_id):
                return await self.stop(operation_id, "abort")
            case PromoteSwitch(operation_id=operation_id):
                return await self.stop(operation_id, "promote")
            case RollbackModel(model=name, version=version, operation_id=operation_id):
                return await self.rollback_model(name, version, operation_id)
            case RollbackOperation(operation_id=operation_id, reason=reason):
                return await self.mirror_rollback(operation_id, reason)
            case RecordStep(operation_id=operation_id, operation=data, fence=fence):
                return self.follow_step(operation_id, data, fence)
            case RegisterVersion():
                return await self.register(message)
            case DeregisterVersion(model=name, version=version):
                return await self.deregister(name, version)
            case ReloadModel(model=name, operation_id=operation_id):
                return await self.reload_model(name, operation_id)
            case BreakerOpened(key=key):
                return self.candidate_broke(key)
            case _FollowLatest(model=name, version=version, cause=cause):
                return await self.follow_latest(name, version, reason=cause)
        raise TypeError(f"the transition manager takes no {type(message).__name__}")

    async def reload_model(self, name: str, operation_id: str | None = None) -> dict[str, Any]:
        """Load the newest version afresh; a model that follows "latest" moves to it."""
        result = await self.cache.reload(name)
        assert result.model is not None
        log.info("model %s reloaded: version %s (was %s)", name, result.model.version, result.previous_version)
        operation = await self.follow_latest(name, result.model.version, reason="model_reload",
                                             operation_id=operation_id)
        body: dict[str, Any] = {"model": name, "version": result.model.version,
                                "previous_version": result.previous_version, "status": "reloaded"}
        if operation is not None:
            body["operation_id"] = operation.id
        return body

    # -- switching -----------------------------------------------------------------------

    async def resolve_target(self, name: str, requested: Any) -> tuple[str, str]:
        catalog = await trio.to_thread.run_sync(list_repository, self.repository)
        if name not in catalog:
            raise not_found("model_not_found", f"model {name!r} is not in the repository",
                            model=name, available=sorted(catalog))
        record = self.handle.view.state.record(name)
        versions = [v for v in catalog[name] if v not in record.deregistered]
        if requested is None:
            raise bad_request("'version' is required (a version number or \"latest\")", field="version")
        text = str(requested)
        if text == "latest":
            failed = [v for (n, v) in self.cache.view.failures if n == name]
            newest = resolve_stable("latest", versions, None, failed)
            if newest is None:
                raise Conflict("no_loadable_version", f"model {name!r} has no loadable version", {"model": name})
            return newest, "latest"
        if text in record.deregistered:
            raise Conflict("version_deregistered", f"{name}@{text} is deregistered",
                           {"model": name, "version": text})
        if text not in versions:
            raise not_found("version_not_found", f"model {name!r} has no version {text!r}",
                            model=name, version=text, available=versions)
        return text, "pinned"

    async def start_switch(self, name: str, body: Mapping[str, Any], *, reason: str,
                           operation_id: str | None = None) -> Operation:
        started_at = time.perf_counter()
        known = self.handle.view.state.operations.get(operation_id) if operation_id else None
        if known is not None:  # a replayed command: the operation exists here already (exactly once)
            return known
        running = self.active_operation(name)
        if running is not None:
            raise Conflict("switch_in_progress", f"{name} already has a running switch {running.id}",
                           {"operation_id": running.id})
        target, policy = await self.resolve_target(name, body.get("version"))
        try:
            params = parse_switch_params(body)
        except ValueError as exc:
            raise InvalidInput("invalid_switch", str(exc), {}) from exc
        stable = _stable_version(self, name)
        if stable is None:
            stable = (await self.cache.get(name)).version
        if stable == target and operation_id is None:  # replayed: record it anyway, it completes at once
            raise Conflict("already_serving", f"{name}@{target} already serves all traffic",
                           {"model": name, "version": target})
        op = new_operation(operation_id or f"sw-{uuid.uuid4().hex[:12]}", name, stable, target, params, time.time(),
                           cause=reason)
        state = self.handle.view.state
        self.publish(state.with_record(name, attrs.evolve(state.record(name), policy=policy)))
        self.put(op, trigger=None)
        log.info("switch %s started (%s): %s %s -> %s, %s", op.id, reason, name, stable, target, params.strategy)
        await self.save()  # on disk before it is answered, and before it starts to move traffic
        self.nursery.start_soon(self.run_operation, op.id, started_at)
        return op

    async def run_operation(self, operation_id: str, started_at: float | None = None) -> None:
        """Drive one operation to its end; a bug while driving it fails that operation only."""
        try:
            await self.drive_operation(operation_id, started_at)
        except Exception as exc:
            log.error("switch %s: driving it failed; marking it failed", operation_id, exc_info=exc)
            op = self.current(operation_id)
            if not op.is_terminal:
                self.put(fail(op, time.time(), f"internal error: {type(exc).__name__}"), trigger="rollback")

    async def drive_operation(self, operation_id: str, started_at: float | None = None) -> None:
        """Load the target here, then step the rollout while this replica leads it, else follow.

        Every replica loads and warms the target. Only the lease holder (always this
        replica without Redis) takes steps: the first once the target is ready on every
        live replica, then one verdict per interval on the pooled health; each step is
        recorded (fenced) before it is put in force here. Followers apply recorded steps
        (:meth:`follow_step`) and try the lease every ``FOLLOW_CHECK_S``.
        """
        op = self.current(operation_id)
        if op.state == "loading":
            try:
                await self.cache.get(op.model, op.to_version, force=True)  # loaded and warmed before any traffic
            except RouterError as exc:
                reason = f"target version failed to load: {exc.details.get('reasons') or exc.message}"
                if not self.rollouts.shared:
                    self.put(fail(self.current(operation_id), time.time(), reason), trigger=None)
                    await self.finish(operation_id)
                    return
                log.error("switch %s: %s here; the leader's readiness gate reports it", operation_id, reason)
        leading = False
        while not (op := self.current(operation_id)).is_terminal:
            fence = await self.rollouts.lead(operation_id)
            if fence is None:
                leading = False
                await self.pause(operation_id, FOLLOW_CHECK_S)
                continue
            if not leading and self.rollouts.shared:  # just took the lease: continue from the record
                leading = True
                recorded = await self.rollouts.recorded(operation_id)
                if recorded is not None and newer(recorded, op):
                    self.put(recorded, trigger=None)
                    continue
                wait = min(wait_before_step(op, time.time()), op.params.interval_s)
                if op.state == "running" and wait > 0:
                    await self.pause(operation_id, wait)
                    continue
            elif op.state == "running" and await self.pause(operation_id, op.params.interval_s):
                continue
            await self.step(operation_id, fence, started_at)
        await self.rollouts.release(operation_id)
        await self.finish(operation_id)

    async def pause(self, operation_id: str, seconds: float) -> bool:
        """Sleep, unless an operator command or a recorded step wakes us; True when woken."""
        with trio.CancelScope() as scope:
            self.wake[operation_id] = scope
            await trio.sleep(seconds)
        self.wake.pop(operation_id, None)
        return scope.cancelled_caught

    async def step(self, operation_id: str, fence: int, started_at: float | None) -> None:
        """The leader's move: begin behind the readiness gate, or advance on the pooled verdict."""
        op = self.current(operation_id)
        if op.is_terminal:
            return
        if op.state == "loading":
            waiting = self.rollouts.waiting(op.model, op.to_version)
            if waiting and time.time() - op.created_at < self.rollouts.gate_timeout_s:
                self.rollouts.gates[operation_id] = waiting
                await self.pause(operation_id, GATE_CHECK_S)
                return
            self.rollouts.gates.pop(operation_id, None)
            if waiting:
                why = "; ".join(f"{replica}: {reason}" for replica, reason in sorted(waiting.items()))
                after, trigger = fail(op, time.time(), f"readiness gate: {why}"), None
            else:
                after = begin(op, time.time())
                trigger = completion_trigger(op) if op.params.strategy == "immediate" else "switch_step"
            decided_at = started_at
        else:
            threshold = self.thresholds(op.model)
            verdict = self.health.verdict(
                op.model, op.to_version,
                max_latency_ms=threshold.max_latency_ms if threshold else None,
                min_accuracy=threshold.min_accuracy if threshold else None,
                min_samples=threshold.min_samples if threshold else 100,
                peers=self.rollouts.peer_health(op.model, op.to_version))
            decided_at = time.perf_counter()
            after = advance(op, verdict, time.time())
            trigger = step_trigger(op, after)
        if not await self.rollouts.record(after, fence):
            await self.pause(operation_id, GATE_CHECK_S)
            return
        if self.current(operation_id).is_terminal:  # an operator ended it while we recorded
            return
        op = self.put(after, trigger=trigger, started_at=decided_at)
        if op.state == "rolled_back":
            self.on_auto_rollback(op)

    def follow_step(self, operation_id: str, data: Mapping[str, Any], fence: int) -> None:
        """Apply a step the rollout's leader recorded (ignored from an older fence or when behind)."""
        local = self.handle.view.state.operations.get(operation_id)
        if local is None or not self.rollouts.accept(operation_id, fence):
            log.info("step of %s (fence %d) ignored here", operation_id, fence)
            return
        recorded = Operation.from_dict(data)
        if not newer(recorded, local):
            return
        self.put(recorded, trigger=step_trigger(local, recorded), started_at=time.perf_counter())
        self.wake_up(operation_id)

    async def finish(self, operation_id: str) -> None:
        """Drain the version that lost its traffic, then unload it."""
        op = self.current(operation_id)
        loser = op.from_version if op.state == "completed" else op.to_version
        plan = self.handle.view.plans.get(op.model)
        if plan is not None and loser in plan.versions():
            return
        key = (op.model, loser)
        draining = {**self.handle.view.draining, key: time.time()}
        self.publish(self.handle.view.state, draining=draining)
        with trio.move_on_after(op.params.max_transition_s) as scope:
            await self.handle.inflight.wait_idle(key)
        if scope.cancelled_caught:
            log.warning("%s@%s still had %d request(s) in flight after %.0f s; unloading anyway", *key,
                        self.handle.inflight.count(key), op.params.max_transition_s)
        plan = self.handle.view.plans.get(op.model)
        if plan is None or loser not in plan.versions():
            await self.cache.unload(*key)
        draining = {k: v for k, v in self.handle.view.draining.items() if k != key}
        self.publish(self.handle.view.state, draining=draining)

    async def stop(self, operation_id: str, how: str) -> Operation:
        op = self.handle.operation(operation_id)
        if op.is_terminal:
            raise Conflict("operation_finished", f"switch {operation_id} already {op.state}",
                           {"operation_id": operation_id, "state": op.state})
        started_at = time.perf_counter()
        if how == "promote":
            if op.state != "running":
                raise Conflict("not_running", f"switch {operation_id} is {op.state}; promote needs running",
                               {"operation_id": operation_id, "state": op.state})
            op = self.put(promote(op, time.time()), trigger="switch_complete", started_at=started_at)
        else:
            op = self.put(abort(op, time.time()), trigger="abort", started_at=started_at)
        self.wake_up(operation_id)
        return op

    def wake_up(self, operation_id: str) -> None:
        scope = self.wake.get(operation_id)
        if scope is not None:
            scope.cancel()

    def candidate_broke(self, key: ModelKey) -> None:
        op = self.active_operation(key[0])
        if op is None or op.to_version != key[1] or op.params.strategy not in ("gradual", "canary"):
            return
        started_at = time.perf_counter()
        op = self.put(rollback(op, time.time(), f"circuit breaker opened on {key[0]}@{key[1]}"),
                      trigger="rollback", started_at=started_at)
        self.on_auto_rollback(op)
        self.wake_up(op.id)

    async def mirror_rollback(self, operation_id: str, reason: str) -> None:
        op = self.handle.view.state.operations.get(operation_id)
        if op is None or op.is_terminal:
            return
        self.put(rollback(op, time.time(), f"{reason} (decided by another worker)"), trigger="rollback",
                 started_at=time.perf_counter())
        self.wake_up(operation_id)

    async def rollback_model(self, name: str, version: str | None, operation_id: str | None = None) -> Operation:
        running = self.active_operation(name)
        if running is not None and version is None:
            started_at = time.perf_counter()
            op = self.put(rollback(running, time.time(), "rolled back by operator"),
                          trigger="rollback", started_at=started_at)
            self.wake_up(op.id)
            return op
        if running is not None:
            raise Conflict("switch_in_progress", f"{name} has a running switch {running.id}; "
                           "roll it back without a version first", {"operation_id": running.id})
        target = version or self.handle.view.state.record(name).previous_stable()
        if target is None:
            raise Conflict("nothing_to_roll_back", f"{name} has no earlier version to return to",
                           {"model": name})
        return await self.start_switch(name, {"version": target, "strategy": "immediate"}, reason="rollback",
                                       operation_id=operation_id)

    async def follow_latest(self, name: str, version: str, *, reason: str,
                            operation_id: str | None = None) -> Operation | None:
        """A new version arrived: move to it if the model follows "latest", else just announce it."""
        record = self.handle.view.state.record(name)
        if record.plan is None:
            self.feed.trigger(reason)
            return None
        if record.policy != "latest" or record.plan.stable == version or self.active_operation(name):
            return None
        return await self.start_switch(name, {"version": version, "strategy": "immediate"}, reason=reason,
                                       operation_id=operation_id)

    # -- registration ----------------------------------------------------------------------

    async def register(self, command: RegisterVersion) -> dict[str, Any]:
        name, version = command.model, command.version
        if not is_model_name(name) or not is_version_name(version):
            raise bad_request("invalid model name or version", name=name[:80], version=version[:20])
        folder = version_dir(self.repository, name, version)
        uploaded = command.model_base64 is not None
        if uploaded:
            await trio.to_thread.run_sync(write_upload, self.repository, command)
        elif not (folder / "model.tflite").exists():
            raise not_found("version_not_found", f"{name}/{version} has no model.tflite in the repository; "
                            "upload it with model_base64",
                            model=name, version=version)
        state = self.handle.view.state
        record = state.record(name)
        self.publish(state.with_record(name, attrs.evolve(record, deregistered=record.deregistered - {version})))
        try:
            model = await self.cache.get(name, version, force=True)
        except RouterError as exc:
            if uploaded:
                await trio.to_thread.run_sync(shutil.rmtree, folder)
            raise InvalidInput("model_invalid", f"{name}@{version} does not load",
                           {"model": name, "version": version, "reasons": exc.details.get("reasons", exc.message)}
                           ) from exc
        log.info("registered %s@%s%s", name, version, " (uploaded)" if uploaded else "")
        operation = await self.follow_latest(name, version, reason="model_registered",
                                             operation_id=command.operation_id)
        return {"name": name, "version": version, "status": "registered", "input_dim": model.input_dim,
                "operation_id": operation.id if operation else None}

    async def deregister(self, name: str, version: str) -> dict[str, Any]:
        key = (name, version)
        plan = self.handle.view.plans.get(name)
        serving = (plan is not None and plan.share(version) > 0) or (
            plan is None and self.cache.view.active.get(name) == version)
        if serving or self.handle.inflight.count(key) or (plan is not None and version in plan.versions()):
            raise Conflict("version_serving", f"{name}@{version} serves traffic; switch away from it first",
                           {"model": name, "version": version, "in_flight": self.handle.inflight.count(key)})
        catalog = await trio.to_thread.run_sync(list_repository, self.repository)
        if version not in catalog.get(name, ()):
            raise not_found("version_not_found", f"model {name!r} has no version {version!r}",
                            model=name, version=version)
        state = self.handle.view.state
        record = state.record(name)
        remaining = [v for v in catalog[name] if v != version and v not in record.deregistered]
        routes = self.routed_by(name)
        if routes and not remaining:
            named = "; ".join("the default model" if r["index"] is None else
                              f"rule {r['index']} ({r['description'] or 'no description'}) as {r['as']}"
                              for r in routes)
            raise Conflict("version_routed", f"{name}@{version} is the last registered version of a model "
                           f"that routes send requests to: {named}; change those rules first",
                           {"model": name, "version": version, "rules": list(routes)})
        self.publish(state.with_record(name, attrs.evolve(record, deregistered=record.deregistered | {version})))
        await self.cache.unload(name, version)
        log.info("deregistered %s@%s", name, version)
        return {"name": name, "version": version, "status": "deregistered"}


# Operator commands whose effect is written before they are answered.
_DURABLE_COMMANDS = (SwitchModel, AbortSwitch, PromoteSwitch, RollbackModel, RollbackOperation, RegisterVersion,
                     DeregisterVersion, ReloadModel)


async def _persist(manager: _Manager) -> None:
    """Write the state after changes (operation steps, breaker rollbacks), coalescing bursts."""
    while True:
        await manager.dirty.wait()
        manager.dirty = trio.Event()
        await manager.save()


async def run(
    handle: Transitions,
    commands: trio.MemoryReceiveChannel[Envelope[Any]],
    cache: ModelCache,
    health: HealthMonitor,
    feed: SwitchFeed,
    metrics: Metrics,
    *,
    repository: Path,
    state_path: Path,
    thresholds: Callable[[str], ModelThreshold | None],
    on_auto_rollback: Callable[[Operation], None] = lambda op: None,
    routed_by: Callable[[str], tuple[dict[str, Any], ...]] = lambda name: (),
    rollouts: Rollouts | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Restore state, resume running operations, then serve commands until cancelled."""
    state = await trio.to_thread.run_sync(registry_store.load, state_path)
    try:
        async with commands, trio.open_nursery() as nursery:
            manager = _Manager(handle, cache, health, feed, metrics, repository, thresholds, nursery,
                               on_auto_rollback, routed_by, state_path, rollouts or Rollouts())
            manager.publish(state)
            manager.dirty = trio.Event()
            for plan in handle.view.plans.values():
                cache.preload((plan.model,))
            for op in state.operations.values():
                if not op.is_terminal:
                    log.info("resuming switch %s (%s %s -> %s, %s)", op.id, op.model, op.from_version,
                             op.to_version, op.state)
                    nursery.start_soon(manager.run_operation, op.id)
            nursery.start_soon(_persist, manager)
            task_status.started()
            async for envelope in commands:
                await mailbox.handle("transition_manager", envelope, manager.apply)
    finally:
        # Outside the nursery: the background writer has finished (its thread is not
        # abandoned on cancel), so this final save is the only writer and the newest state wins.
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await trio.to_thread.run_sync(registry_store.save, state_path, registry_store.encode(handle.view.state))
