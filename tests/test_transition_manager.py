"""The transition manager actor with the real cache, health monitor and switch feed (actors/transition_manager.py).

Every test runs the real actors in a nursery against a private model repository and a
state file in ``tmp_path``. Waiting is event-driven: ``Transitions.wait_until`` on the
published view, subscriber channels of the switch feed, and trio's autojump clock for
switch intervals and drain timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
import trio.testing

from actors import health_monitor, model_cache, switch_feed, transition_manager
from actors.build.demo_models import build_random_model
from actors.build.tflite_writer import build_mlp_tflite
from actors.core.breaker import BreakerSettings
from actors.core.commands import ReloadModel
from actors.core.errors import RouterError
from actors.core.recent_symbols import SymbolRoute
from actors.core.rules import parse_config
from actors.core.switch_policy import Operation
from actors.health_monitor import BreakerBoard, HealthMessage, HealthMonitor, Observation
from actors.model_cache import CacheLimits, CacheRequest, ModelCache
from actors.redis_bus import disabled_outbox
from actors.serving.metrics import Metrics
from actors.storage import registry_store
from actors.storage.model_repo import ModelMetadata, version_dir, write_model_version
from actors.switch_feed import FeedFilter, Subscriber, SwitchFeed, Trigger
from actors.transition_manager import Command, InFlight, TrafficView, Transitions
from actors.web.errors import http_status
from tests.conftest import render_config

FEATURES = ("a", "b", "c")
LABELS = ("SELL", "HOLD", "BUY")
OLD = ("fast", "1")
NEW = ("fast", "2")


def guard() -> trio.CancelScope:
    """A deadline for event-driven waits that will not fire falsely.

    Under the autojump clock virtual time races ahead whenever every task waits, including
    while a worker thread loads a model (the cache's idle sweep sleeps 30 s in a loop), so a
    virtual deadline there must be huge; a real hang still ends within about a second.
    """
    autojump = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    return trio.fail_after(10**6 if autojump else 20)


@attrs.define
class Actors:
    transitions: Transitions
    cache: ModelCache
    health: HealthMonitor
    feed: SwitchFeed
    metrics: Metrics

    def op(self, operation_id: str) -> Operation:
        return self.transitions.view.state.operations[operation_id]

    async def wait_op(self, operation_id: str, predicate: Callable[[Operation], bool]) -> Operation:
        with guard():
            view = await self.transitions.wait_until(
                lambda v: operation_id in v.state.operations and predicate(v.state.operations[operation_id]))
        return view.state.operations[operation_id]

    async def wait_finished(self, operation_id: str) -> Operation:
        """The operation is terminal and its losing version has been drained (and unloaded)."""
        op = await self.wait_op(operation_id, lambda o: o.is_terminal)
        loser = (op.model, op.from_version if op.state == "completed" else op.to_version)
        with guard():
            await self.transitions.wait_until(
                lambda v: loser not in v.draining and loser not in self.cache.view.models)
        return self.op(operation_id)


@asynccontextmanager
async def running_actors(repo: Path, state_path: Path, *, preload: tuple[str, ...] = ("1",),
                         routed_by: Callable[[str], tuple[dict[str, Any], ...]] = lambda name: ()
                         ) -> AsyncIterator[Actors]:
    """Start cache, health monitor, switch feed and transition manager like ``app.serve`` does."""
    metrics = Metrics()
    cache_send, cache_recv = trio.open_memory_channel[CacheRequest](64)
    health_send, health_recv = trio.open_memory_channel[HealthMessage](1024)
    trigger_send, trigger_recv = trio.open_memory_channel[Trigger](256)
    command_send, command_recv = trio.open_memory_channel[Command](64)
    cache = ModelCache(cache_send)
    feed = SwitchFeed(trigger_send, metrics)
    transitions = Transitions(command_send, InFlight(metrics))
    health = HealthMonitor(health_send, metrics, BreakerBoard(
        BreakerSettings(), metrics, lambda key, old, new: transitions.breaker_changed(key, new)))

    def serve(route: SymbolRoute) -> str | None:
        name = route.model_name or ""
        plan = transitions.plan(name)
        version = plan.pick(route.symbol) if plan is not None else cache.view.active.get(name)
        return f"{name}@{version}" if version else None

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(model_cache.run, repo, CacheLimits(), metrics, cache, cache_recv,
                                    pinned=frozenset, pinned_versions=transitions.pinned_versions,
                                    excluded=transitions.excluded))
        await nursery.start(health_monitor.run, health, health_recv)
        await nursery.start(switch_feed.run, feed, trigger_recv, disabled_outbox(metrics), serve)
        await nursery.start(partial(transition_manager.run, transitions, command_recv, cache, health, feed, metrics,
                                    repository=repo, state_path=state_path, thresholds=lambda name: None,
                                    routed_by=routed_by))
        for version in preload:
            await cache.get("fast", version)  # what serves "fast" before any switch
        yield Actors(transitions, cache, health, feed, metrics)
        nursery.cancel_scope.cancel()


async def next_event(feed: SwitchFeed, subscriber: Subscriber) -> dict[str, Any]:
    """The subscriber's next switch event (one frame per turn)."""
    frames = await feed.next_frames(subscriber)
    assert frames is not None
    return frames[0].message


def write_nonfinite_model(root: Path, name: str, version: str) -> Path:
    """Loads and warms up fine (zero input is finite) but answers inf/NaN for positive inputs."""
    w1 = np.full((len(FEATURES), 4), 3e38, dtype=np.float32)
    w2 = np.full((4, len(LABELS)), 3e38, dtype=np.float32)
    content = build_mlp_tflite(w1, np.zeros(4, np.float32), w2, np.zeros(len(LABELS), np.float32))
    return write_model_version(root, name, version, content, ModelMetadata(features=FEATURES, labels=LABELS))


def write_broken_model(root: Path, name: str, version: str) -> Path:
    return write_model_version(root, name, version, b"this is not a tflite flatbuffer" * 4,
                               ModelMetadata(features=FEATURES, labels=LABELS))


REAL_SAVE = registry_store.save
REAL_ENCODE = registry_store.encode


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "registry.json"


@pytest.fixture
def repo2(repo: Path) -> Path:
    """The repository with a healthy ``fast`` version 2."""
    build_random_model(repo, "fast", "2", FEATURES, seed=11)
    return repo


async def expect_error(call: Any, status: int, code: str) -> RouterError:
    with pytest.raises(RouterError) as info:
        await call
    assert (http_status(info.value), info.value.code) == (status, code), info.value
    return info.value


def drained(actors: Actors, key: tuple[str, str]) -> Callable[[TrafficView], bool]:
    return lambda v: key not in v.draining and key not in actors.cache.view.models


# --------------------------------------------------------------------------- immediate


async def test_immediate_switch_moves_the_plan_completes_announces_and_unloads_the_old_version(
    repo2: Path, state_path: Path
) -> None:
    """Plan goes to the target, the operation completes, a switch event names it, fast@1 is unloaded."""
    async with running_actors(repo2, state_path) as actors:
        actors.feed.recent.note(SymbolRoute("BTC", "crypto", 1000.0, "fast", "fast@1"))
        events = actors.feed.subscribe(FeedFilter(model="fast"))
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "immediate"})
        assert (op.state, op.from_version, op.to_version) == ("loading", "1", "2")
        done = await actors.wait_finished(op.id)
        with guard():
            event = await next_event(actors.feed, events)
        assert NEW in actors.cache.view.models
        plan = actors.transitions.plan("fast")
        record = actors.transitions.view.state.record("fast")
        metrics = actors.metrics
    assert done.state == "completed" and done.weight_bp == 10_000
    assert (plan.stable, plan.candidate) == ("2", None)
    assert OLD not in actors.cache.view.models
    assert record.policy == "pinned"
    assert record.history[-1]["version"] == "2" and record.history[-1]["previous"] == "1"
    assert (event["symbol"], event["old_model"], event["new_model"]) == ("BTC", "fast@1", "fast@2")
    assert (event["reason"], event["operation_id"]) == ("switch_complete", op.id)
    sample = metrics.registry.get_sample_value
    assert sample("model_router_switch_operations_total", {"strategy": "immediate", "state": "completed"}) == 1
    assert sample("model_router_traffic_share", {"model": "fast", "version": "2"}) == 1.0


async def test_the_old_version_waits_for_in_flight_requests_before_unloading(repo2: Path, state_path: Path) -> None:
    """While a request holds fast@1 it stays loaded and draining; its exit lets the unload happen."""
    async with running_actors(repo2, state_path) as actors:
        actors.transitions.inflight.enter(OLD)
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "immediate"})
        with guard():
            await actors.transitions.wait_until(lambda v: OLD in v.draining)
        await trio.testing.wait_all_tasks_blocked()
        assert OLD in actors.transitions.view.draining
        assert OLD in actors.cache.view.models
        assert actors.op(op.id).state == "completed"
        assert actors.transitions.plan("fast").stable == "2"
        actors.transitions.inflight.exit(OLD)
        with guard():
            await actors.transitions.wait_until(drained(actors, OLD))
        assert NEW in actors.cache.view.models
        assert actors.transitions.inflight.count(OLD) == 0


async def test_the_old_version_is_unloaded_after_max_transition_s_even_if_still_held(
    repo2: Path, state_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A request that never finishes cannot keep a drained version in memory past max_transition_s."""
    async with running_actors(repo2, state_path) as actors:
        actors.transitions.inflight.enter(OLD)
        await actors.transitions.switch("fast", {"version": "2", "strategy": "immediate", "max_transition_s": 45})
        with guard():
            await actors.transitions.wait_until(lambda v: OLD in v.draining)
        began = trio.current_time()
        with guard():
            await actors.transitions.wait_until(drained(actors, OLD))
        waited = trio.current_time() - began
        assert 45 <= waited < 60
        assert actors.transitions.inflight.count(OLD) == 1


# --------------------------------------------------------------------------- gradual, canary, A/B


async def test_gradual_walks_its_steps_on_interval_ticks_to_completion(
    repo2: Path, state_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """10 % -> 50 % -> 100 %, one step per interval_s, then completed with fast@1 drained."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch(
            "fast", {"version": "2", "strategy": "gradual", "steps": [10, 50, 100], "interval_s": 30})
        first = await actors.wait_op(op.id, lambda o: o.state == "running")
        t0 = trio.current_time()
        plan = actors.transitions.plan("fast")
        assert (plan.stable, plan.candidate, plan.weight_bp, plan.operation_id) == ("1", "2", 1000, op.id)
        assert first.weight_bp == 1000
        assert actors.transitions.pinned_versions() == {OLD, NEW}
        second = await actors.wait_op(op.id, lambda o: o.weight_bp == 5000)
        t1 = trio.current_time()
        assert second.state == "running"
        assert actors.transitions.plan("fast").weight_bp == 5000
        done = await actors.wait_finished(op.id)
        t2 = trio.current_time()
    assert 30 <= t1 - t0 < 31 and 30 <= t2 - t1 < 31
    assert done.state == "completed"
    assert [e["weight_bp"] for e in done.log if e["event"] == "step"] == [5000, 10000]
    assert actors.transitions.plan("fast").stable == "2"


async def test_canary_with_a_non_finite_candidate_rolls_back_on_failing_observations(
    repo: Path, state_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Predictions of the candidate are inf/NaN; the failures reach the health window; the next tick rolls back."""
    write_nonfinite_model(repo, "fast", "2")
    async with running_actors(repo, state_path) as actors:
        op = await actors.transitions.switch(
            "fast", {"version": "2", "strategy": "canary", "canary_weight": 10, "interval_s": 20})
        await actors.wait_op(op.id, lambda o: o.state == "running")
        candidate = await actors.cache.get("fast", "2")
        zero = candidate.predict(np.zeros((1, 3), np.float32))
        assert np.all(np.isfinite(zero))  # why its warm-up passed
        for i in range(30):
            output = candidate.predict(np.full((1, 3), 0.1 + i, np.float32))
            actors.health.observe(Observation("fast", "2", 0.001, bool(np.all(np.isfinite(output))),
                                              operation_id=op.id))
        done = await actors.wait_finished(op.id)
        plan = actors.transitions.plan("fast")
    assert done.state == "rolled_back"
    assert done.reason.startswith("health breach: error_rate 1 > 0.05")
    assert (plan.stable, plan.candidate) == ("1", None)
    assert NEW not in actors.cache.view.models


async def test_canary_rolls_back_when_the_candidates_breaker_opens(repo: Path, state_path: Path) -> None:
    """Five failures on the candidate open its breaker, which rolls back at once (no interval tick needed)."""
    write_nonfinite_model(repo, "fast", "2")
    async with running_actors(repo, state_path) as actors:
        op = await actors.transitions.switch(
            "fast", {"version": "2", "strategy": "canary", "interval_s": 3600})
        await actors.wait_op(op.id, lambda o: o.state == "running")
        for _ in range(5):
            actors.health.breakers.failure(OLD)  # the stable version breaking is not the candidate's fault
        await trio.testing.wait_all_tasks_blocked()
        assert actors.op(op.id).state == "running"
        for _ in range(5):
            actors.health.breakers.failure(NEW)
        done = await actors.wait_finished(op.id)
    assert done.state == "rolled_back"
    assert done.reason == "circuit breaker opened on fast@2"
    assert actors.transitions.plan("fast").stable == "1"
    assert actors.transitions.plan("fast").candidate is None


async def test_abort_restores_the_previous_plan(repo2: Path, state_path: Path) -> None:
    """abort puts all traffic back on the stable version, drains the candidate, and cannot be repeated."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual", "interval_s": 3600})
        await actors.wait_op(op.id, lambda o: o.state == "running")
        assert actors.transitions.plan("fast").candidate == "2"
        aborted = await actors.transitions.abort(op.id)
        assert aborted.state == "aborted" and aborted.reason == "aborted by operator"
        plan = actors.transitions.plan("fast")
        assert (plan.stable, plan.candidate, plan.weight_bp) == ("1", None, 0)
        await actors.wait_finished(op.id)
        assert OLD in actors.cache.view.models
        await expect_error(actors.transitions.abort(op.id), 409, "operation_finished")
        await expect_error(actors.transitions.abort("sw-nope"), 404, "operation_not_found")


async def test_promote_completes_an_ab_test(repo2: Path, state_path: Path) -> None:
    """An A/B split stays put until promoted; promote moves all traffic to the treatment."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "ab", "split": 30})
        running = await actors.wait_op(op.id, lambda o: o.state == "running")
        assert running.weight_bp == 3000
        promoted = await actors.transitions.promote(op.id)
        assert promoted.state == "completed"
        assert actors.transitions.plan("fast").stable == "2"
        await actors.wait_finished(op.id)
        await expect_error(actors.transitions.promote(op.id), 409, "operation_finished")


async def test_operator_rollback_of_a_running_switch(repo2: Path, state_path: Path) -> None:
    """rollback without a version stops the running switch; with a version it is refused meanwhile."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "canary", "interval_s": 3600})
        await actors.wait_op(op.id, lambda o: o.state == "running")
        await expect_error(actors.transitions.rollback("fast", "1"), 409, "switch_in_progress")
        stopped = await actors.transitions.rollback("fast", None)
        assert (stopped.id, stopped.state, stopped.reason) == (op.id, "rolled_back", "rolled back by operator")
        assert actors.transitions.plan("fast").stable == "1"


# --------------------------------------------------------------------------- refusals


async def test_a_second_switch_while_one_runs_is_409(repo2: Path, state_path: Path) -> None:
    """One running switch per model."""
    build_random_model(repo2, "fast", "3", FEATURES, seed=12)
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual", "interval_s": 3600})
        error = await expect_error(actors.transitions.switch("fast", {"version": "3"}), 409, "switch_in_progress")
        assert error.details == {"operation_id": op.id}


async def test_switching_to_the_serving_version_is_409(repo2: Path, state_path: Path) -> None:
    """Nothing to do: the target already serves all traffic (both before and after a plan exists)."""
    async with running_actors(repo2, state_path) as actors:
        await expect_error(actors.transitions.switch("fast", {"version": "1"}), 409, "already_serving")
        op = await actors.transitions.switch("fast", {"version": "2"})
        await actors.wait_finished(op.id)
        await expect_error(actors.transitions.switch("fast", {"version": "2"}), 409, "already_serving")
        await expect_error(actors.transitions.switch("fast", {"version": "latest"}), 409, "already_serving")


async def test_unknown_model_or_version_is_404_and_invalid_params_422(repo2: Path, state_path: Path) -> None:
    """Validation errors leave no operation behind."""
    async with running_actors(repo2, state_path) as actors:
        await expect_error(actors.transitions.switch("nope", {"version": "1"}), 404, "model_not_found")
        await expect_error(actors.transitions.switch("fast", {"version": "9"}), 404, "version_not_found")
        await expect_error(actors.transitions.switch("fast", {}), 400, "bad_request")
        for body in ({"version": "2", "strategy": "teleport"}, {"version": "2", "interval_s": -1},
                     {"version": "2", "steps": [50, 20, 100]}, {"version": "2", "colour": "red"}):
            error = await expect_error(actors.transitions.switch("fast", body), 422, "invalid_switch")
            assert error.message
        assert actors.transitions.view.state.operations == {}
        assert actors.transitions.plan("fast") is None


async def test_a_target_that_fails_to_load_fails_the_operation_and_keeps_the_plan(
    repo: Path, state_path: Path
) -> None:
    """No traffic moves to a version that does not load; the operation says why."""
    write_broken_model(repo, "fast", "2")
    async with running_actors(repo, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual"})
        done = await actors.wait_op(op.id, lambda o: o.is_terminal)
        plan = actors.transitions.plan("fast")
        assert done.state == "failed"
        assert done.reason.startswith("target version failed to load")
        assert (plan.stable, plan.candidate) == ("1", None)
        assert OLD in actors.cache.view.models
        assert NEW in actors.cache.view.failures
        # a later switch is possible again (nothing is left running)
        await expect_error(actors.transitions.switch("fast", {"version": "1"}), 409, "already_serving")


# --------------------------------------------------------------------------- rollback to history


async def test_rollback_without_a_running_switch_returns_to_the_previous_stable(
    repo2: Path, state_path: Path
) -> None:
    """After 1 -> 2 completed, a plain rollback switches immediately back to 1 (from history)."""
    async with running_actors(repo2, state_path) as actors:
        await expect_error(actors.transitions.rollback("fast", None), 409, "nothing_to_roll_back")
        op = await actors.transitions.switch("fast", {"version": "2"})
        await actors.wait_finished(op.id)
        back = await actors.transitions.rollback("fast", None)
        assert (back.from_version, back.to_version, back.params.strategy) == ("2", "1", "immediate")
        done = await actors.wait_finished(back.id)
        assert done.state == "completed"
        assert actors.transitions.plan("fast").stable == "1"
        history = actors.transitions.view.state.record("fast").history
        assert [(h["previous"], h["version"]) for h in history] == [("1", "2"), ("2", "1")]
        assert NEW not in actors.cache.view.models


async def test_a_rollback_carries_its_cause_in_the_operation_history_event_and_metric(
    repo2: Path, state_path: Path
) -> None:
    """Regression: a rollback was recorded as switch_complete everywhere."""
    async with running_actors(repo2, state_path) as actors:
        actors.feed.recent.note(SymbolRoute("BTC", "crypto", 1000.0, "fast", "fast@1"))
        op = await actors.transitions.switch("fast", {"version": "2"})
        await actors.wait_finished(op.id)
        assert actors.op(op.id).cause == "switch"
        events = actors.feed.subscribe(FeedFilter(model="fast"))
        back = await actors.transitions.rollback("fast", None)
        done = await actors.wait_finished(back.id)
        assert (done.state, done.cause, done.to_dict()["cause"]) == ("completed", "rollback", "rollback")
        history = actors.transitions.view.state.record("fast").history
        assert [h["reason"] for h in history] == ["completed", "rollback"]
        with trio.fail_after(5):
            event = await next_event(actors.feed, events)
        assert event["reason"] == "rollback"
        assert actors.metrics.registry.get_sample_value("model_switch_total", {"reason": "rollback"}) == 1
        assert actors.metrics.registry.get_sample_value("model_switch_total", {"reason": "switch_complete"}) == 1


async def test_a_move_after_a_model_reload_is_announced_as_model_reload(repo2: Path, state_path: Path) -> None:
    """A model on policy "latest" that moves after POST /reload/{model} says so (not switch_complete)."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "latest", "strategy": "immediate"})
        assert op.cause == "switch"
        await actors.wait_finished(op.id)
        actors.feed.recent.note(SymbolRoute("BTC", "crypto", 1000.0, "fast", "fast@2"))
        build_random_model(repo2, "fast", "3", FEATURES, seed=12)
        events = actors.feed.subscribe(FeedFilter(model="fast"))
        result = await actors.transitions.execute(ReloadModel("fast"))
        assert result["version"] == "3"
        follow = await actors.wait_finished(result["operation_id"])
        assert (follow.cause, follow.to_version) == ("model_reload", "3")
        with trio.fail_after(5):
            event = await next_event(actors.feed, events)
        assert event["reason"] == "model_reload"
        assert actors.transitions.view.state.record("fast").history[-1]["reason"] == "model_reload"


async def test_a_bug_while_handling_one_command_fails_that_command_only(
    repo2: Path, state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Supervision: an unexpected exception answers InternalError; the actor serves the next command."""
    async with running_actors(repo2, state_path) as actors:
        def explode(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("a bug")

        monkeypatch.setattr(transition_manager, "list_repository", explode)
        await expect_error(actors.transitions.deregister("fast", "2"), 500, "internal_error")
        monkeypatch.undo()
        result = await actors.transitions.deregister("fast", "2")
        assert result["status"] == "deregistered"


# --------------------------------------------------------------------------- registration


async def test_register_an_existing_folder(repo2: Path, state_path: Path) -> None:
    """A version folder dropped into the repository is loaded on registration."""
    async with running_actors(repo2, state_path) as actors:
        result = await actors.transitions.register({"name": "fast", "version": "2"})
        assert result == {"name": "fast", "version": "2", "status": "registered", "input_dim": 3,
                          "operation_id": None}
        assert NEW in actors.cache.view.models
        await expect_error(actors.transitions.register({"name": "fast", "version": "7"}), 404, "version_not_found")
        for name in ("../x", "..", ".", "...", "_x", "-x", "a/b", ""):
            await expect_error(actors.transitions.register({"name": name, "version": "1"}), 400, "bad_request")
        await expect_error(actors.transitions.register({"name": "fast", "version": "01"}), 400, "bad_request")
        await expect_error(actors.transitions.register({"name": "fast", "version": "2", "x": 1}), 400,
                           "bad_request")


async def test_register_an_upload_loads_it_and_follows_latest(repo2: Path, state_path: Path) -> None:
    """Uploaded bytes + metadata become a new version; a model on policy "latest" switches to it."""
    content = (repo2 / "fast" / "2" / "model.tflite").read_bytes()
    body = {"name": "fast", "version": "3", "model_base64": base64.b64encode(content).decode(),
            "metadata": {"features": list(FEATURES), "labels": list(LABELS)}}
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "latest"})
        await actors.wait_finished(op.id)
        assert actors.transitions.view.state.record("fast").policy == "latest"
        result = await actors.transitions.register(body)
        assert result["status"] == "registered" and result["input_dim"] == 3
        assert (repo2 / "fast" / "3" / "model.tflite").read_bytes() == content
        follow = actors.op(result["operation_id"])
        assert (follow.from_version, follow.to_version) == ("2", "3")
        await actors.wait_finished(follow.id)
        assert actors.transitions.plan("fast").stable == "3"
        await expect_error(actors.transitions.register(body), 409, "version_exists")


async def test_an_upload_that_does_not_load_is_422_and_its_files_are_removed(repo: Path, state_path: Path) -> None:
    """A broken upload never stays in the repository."""
    metadata = {"features": list(FEATURES), "labels": list(LABELS)}
    async with running_actors(repo, state_path) as actors:
        body = {"name": "fast", "version": "5", "metadata": metadata,
                "model_base64": base64.b64encode(b"garbage, not a model" * 10).decode()}
        error = await expect_error(actors.transitions.register(body), 422, "model_invalid")
        assert error.details["reasons"]
        assert not version_dir(repo, "fast", "5").exists()
        bad_b64 = {"name": "fast", "version": "6", "metadata": metadata, "model_base64": "not base64!!"}
        await expect_error(actors.transitions.register(bad_b64), 422, "invalid_model_upload")
        bad_meta = {"name": "fast", "version": "6", "metadata": {"features": []},
                    "model_base64": base64.b64encode(b"x").decode()}
        await expect_error(actors.transitions.register(bad_meta), 422, "invalid_model_upload")
        assert not version_dir(repo, "fast", "6").exists()
        model = (version_dir(repo, "fast", "1") / "model.tflite").read_bytes()
        wrong_digest = {"name": "fast", "version": "6", "metadata": {**metadata, "sha256": "0" * 64},
                        "model_base64": base64.b64encode(model).decode()}
        error = await expect_error(actors.transitions.register(wrong_digest), 422, "invalid_model_upload")
        assert "sha256" in error.message and not version_dir(repo, "fast", "6").exists()
        right = {**wrong_digest, "metadata": {**metadata, "sha256": hashlib.sha256(model).hexdigest()}}
        assert (await actors.transitions.register(right))["status"] == "registered"


async def test_deregister_is_refused_while_serving_and_excludes_the_version_otherwise(
    repo2: Path, state_path: Path
) -> None:
    """A serving version cannot be deregistered; another one can, and is then excluded from switching."""
    async with running_actors(repo2, state_path) as actors:
        await expect_error(actors.transitions.deregister("fast", "1"), 409, "version_serving")
        await expect_error(actors.transitions.deregister("fast", "9"), 404, "version_not_found")
        await actors.cache.get("fast", "2")
        result = await actors.transitions.deregister("fast", "2")
        assert result == {"name": "fast", "version": "2", "status": "deregistered"}
        assert actors.transitions.excluded("fast") == frozenset({"2"})
        assert NEW not in actors.cache.view.models
        await expect_error(actors.transitions.switch("fast", {"version": "2"}), 409, "version_deregistered")
        await expect_error(actors.transitions.switch("fast", {"version": "latest"}), 409, "already_serving")
        await actors.transitions.register({"name": "fast", "version": "2"})  # registering again re-includes it
        assert actors.transitions.excluded("fast") == frozenset()


async def test_deregister_is_refused_for_a_version_in_a_running_switch(repo2: Path, state_path: Path) -> None:
    """The candidate of a running switch is part of the plan and cannot be deregistered."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual", "interval_s": 3600})
        await actors.wait_op(op.id, lambda o: o.state == "running")
        await expect_error(actors.transitions.deregister("fast", "2"), 409, "version_serving")
        await expect_error(actors.transitions.deregister("fast", "1"), 409, "version_serving")


async def test_deregister_refuses_the_last_version_of_a_routed_model(repo: Path, state_path: Path) -> None:
    """backup is rule 0's fallback and the default model: its only version stays until another exists."""
    config = parse_config(render_config(repo))
    async with running_actors(repo, state_path, routed_by=config.routes_to) as actors:
        error = await expect_error(actors.transitions.deregister("backup", "1"), 409, "version_routed")
        assert error.details["rules"] == [
            {"index": 0, "description": "crypto short", "as": "fallback"},
            {"index": None, "description": "default model", "as": "default_model"},
        ]
        assert "rule 0 (crypto short) as fallback" in error.message and "default model" in error.message
        error = await expect_error(actors.transitions.deregister("windowed", "1"), 409, "version_routed")
        assert error.details["rules"] == [{"index": 1, "description": "crypto long", "as": "model"}]
        assert actors.transitions.excluded("backup") == frozenset()
        build_random_model(repo, "backup", "2", FEATURES, seed=5)  # another version would remain
        result = await actors.transitions.deregister("backup", "1")
        assert result["status"] == "deregistered"
        await expect_error(actors.transitions.deregister("backup", "2"), 409, "version_routed")


# --------------------------------------------------------------------------- persistence


async def test_plan_and_policy_survive_a_restart(repo2: Path, state_path: Path) -> None:
    """Stopping and starting the actors on the same state file brings back the plan, policy and history."""
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2"})
        await actors.wait_finished(op.id)
        await actors.cache.get("fast", "1")
        deregistered = await actors.transitions.deregister("fast", "1")
        assert deregistered["status"] == "deregistered"
    saved = json.loads(state_path.read_text())
    assert saved["models"]["fast"]["plan"]["stable"] == "2"
    async with running_actors(repo2, state_path, preload=()) as again:
        plan = again.transitions.plan("fast")
        record = again.transitions.view.state.record("fast")
        assert (plan.stable, plan.candidate) == ("2", None)
        assert record.policy == "pinned"
        assert record.deregistered == frozenset({"1"})
        assert again.op(op.id).state == "completed"
        assert record.previous_stable() == "1"
        await expect_error(again.transitions.switch("fast", {"version": "2"}), 409, "already_serving")


async def test_a_running_gradual_switch_resumes_after_a_restart_and_completes(
    repo2: Path, state_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A switch interrupted at its first step continues from there after a restart."""
    body = {"version": "2", "strategy": "gradual", "steps": [10, 50, 100], "interval_s": 30}
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", body)
        await actors.wait_op(op.id, lambda o: o.state == "running")
    saved = {o["id"]: o for o in json.loads(state_path.read_text())["operations"]}
    assert (saved[op.id]["state"], saved[op.id]["weight_bp"]) == ("running", 1000)
    async with running_actors(repo2, state_path, preload=()) as again:
        plan = again.transitions.plan("fast")
        assert (plan.stable, plan.candidate, plan.weight_bp, plan.salt) == ("1", "2", 1000, op.salt)
        done = await again.wait_op(op.id, lambda o: o.is_terminal)
        assert done.state == "completed"
        assert [e["weight_bp"] for e in done.log if e["event"] == "step"] == [5000, 10000]
        assert again.transitions.plan("fast").stable == "2"


async def test_shutdown_save_never_overlaps_a_background_save(
    repo2: Path, state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most one state write at a time, including the one made on the way out.

    The background writer's save is held in its worker thread while the actors stop; a
    correct shutdown waits for it (the hold then times out after 1 s) before the final save.
    """
    lock = threading.Lock()
    active = [0, 0]  # running now, most at once
    held = threading.Event()
    overlap = threading.Event()

    def save(path: Path, text: str) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            if active[0] > 1:
                overlap.set()
        try:
            if not held.is_set():
                held.set()
                overlap.wait(timeout=1.0)  # keep the first save in flight while shutdown happens
            REAL_SAVE(path, text)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(registry_store, "save", save)
    errors: list[BaseException] = []
    try:
        async with running_actors(repo2, state_path) as actors:
            op = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual", "interval_s": 3600})
            await actors.wait_op(op.id, lambda o: o.state == "running")
            assert await trio.to_thread.run_sync(held.wait, 5)
    except Exception as exc:  # a racing os.replace of the shared temp file may fail outright
        errors.append(exc)
    assert active[1] == 1, f"{active[1]} state saves ran at once (errors on shutdown: {errors!r})"
    assert errors == []
    assert registry_store.decode(state_path.read_text()).operations[op.id].state == "running"


def test_inflight_counts_are_published_as_a_gauge() -> None:
    """``model_router_inflight_requests`` follows enter/exit per version (it was never set before)."""
    from actors.serving.metrics import Metrics
    from actors.transition_manager import InFlight

    metrics = Metrics()
    inflight = InFlight(metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("model_router_inflight_requests", {"model": "m", "version": "1"})

    inflight.enter(("m", "1"))
    inflight.enter(("m", "1"))
    assert gauge() == 2 and inflight.count(("m", "1")) == 2
    inflight.exit(("m", "1"))
    inflight.exit(("m", "1"))
    assert gauge() == 0 and inflight.count(("m", "1")) == 0


async def test_every_operator_command_is_on_disk_before_it_is_answered(
    repo2: Path, state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk (each save takes 50 ms) must not let an answer overtake its write.

    Before, commands were answered at once and a background task wrote the state later, so a
    kill -9 right after a 202 lost the switch.
    """
    completed: list[str] = []

    def slow_save(path: Path, text: str) -> None:
        time.sleep(0.05)  # stands for a slow disk, not for synchronisation
        REAL_SAVE(path, text)
        completed.append(text)

    def on_disk() -> registry_store.RegistryState:
        return registry_store.decode(completed[-1])

    monkeypatch.setattr(registry_store, "save", slow_save)
    async with running_actors(repo2, state_path) as actors:
        op = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual", "interval_s": 3600})
        assert op.id in on_disk().operations
        await actors.wait_op(op.id, lambda o: o.state == "running")
        aborted = await actors.transitions.abort(op.id)
        assert on_disk().operations[op.id].state == aborted.state == "aborted"
        await actors.wait_finished(op.id)
        second = await actors.transitions.switch("fast", {"version": "2", "strategy": "gradual",
                                                         "interval_s": 3600})
        await actors.wait_op(second.id, lambda o: o.state == "running")
        await actors.transitions.promote(second.id)
        assert on_disk().operations[second.id].state == "completed"
        await actors.wait_finished(second.id)
        back = await actors.transitions.rollback("fast", None)
        assert back.id in on_disk().operations
        await actors.wait_finished(back.id)
        await actors.transitions.deregister("fast", "2")
        assert on_disk().models["fast"].deregistered == frozenset({"2"})
        await actors.transitions.register({"name": "fast", "version": "2"})
        assert on_disk().models["fast"].deregistered == frozenset()
