"""The local fallback: the service's own predictor, run in process (``REMOTE_INFERENCE_ENABLED=false``).

Nothing here re-implements the service. The config is loaded and validated by
``app.load_initial_config`` (the same checks a deploy gets, models checked against the
repository), routing is the router's compiled snapshot, models come from the model cache
actor (structure-checked, loaded in worker threads by the TFLite backend), and answers are
shaped by :class:`actors.predictor.Predictor` itself. So a body gives the same prediction
in process as from the service serving the same config and repository.

The version state the service persisted (pinned versions, running switches' weights and
salts) is read once, read-only, so a symbol lands on the same version locally as it does
remotely; nothing is written back. Rules and state are read at start: restart the client
to follow an edit (the service hot-reloads, the fallback does not).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

import app
from actors import health_monitor, model_cache
from actors.client.errors import ModelRouterError, api_error, single_error
from actors.core.errors import RouterError, bad_request
from actors.core.feedback_index import FeedbackIndex
from actors.health_monitor import BreakerBoard, HealthMonitor, switching_limits
from actors.mailbox import Envelope
from actors.model_cache import ModelCache, cache_limits
from actors.router import RouterState
from actors.serving.metrics import Metrics
from actors.serving.predictor import Predictor
from actors.serving.request_shape import parse_request
from actors.storage import registry_store
from actors.switch_feed import SwitchFeed, Trigger
from actors.transition_manager import InFlight, TrafficView, Transitions
from actors.web.errors import http_status, item_body

log = logging.getLogger("model_router.client.local")


class LocalStartupError(ModelRouterError):
    """The config cannot be served in process (invalid, unreadable, repository missing)."""


def read_traffic_view(path: Path) -> TrafficView:
    """The service's persisted plans, read-only; a missing or unreadable file means 'latest' everywhere."""
    try:
        state = registry_store.decode(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return TrafficView()
    except (OSError, ValueError) as exc:
        log.warning("version state %s unreadable (%s): serving each model's newest version", path, exc)
        return TrafficView()
    plans = {name: record.plan for name, record in state.models.items() if record.plan is not None}
    return TrafficView(plans, state)


@attrs.frozen
class LocalEngine:
    """The in-process predictor and what it was built from."""

    predictor: Predictor
    repository: Path
    config_path: Path

    async def predict_one(self, body: Any) -> dict[str, Any]:
        return await self.predictor.predict_one(body)

    async def predict_batch(self, body: Any) -> dict[str, Any]:
        return await self.predictor.predict_batch(body)

    async def route(self, body: Any) -> dict[str, Any]:
        """The ``/route/test`` answer, from the same snapshot the predictor routes with."""
        if not isinstance(body, dict):
            raise bad_request("body must be an object with asset_class and horizon_ms")
        probe = parse_request({"features": {}, **{k: v for k, v in body.items()
                                                  if k in ("asset_class", "horizon_ms", "symbol")}})
        router = self.predictor.router
        selection = router.select(probe.asset_class or "", probe.horizon_ms or 0.0, probe.symbol)
        snapshot = router.active.snapshot
        return {"model": selection.model, "rule_index": selection.rule_index, "description": selection.description,
                "fallback": selection.fallback, "config_hash": selection.config_hash,
                "horizon_bucket": snapshot.bucket_label(snapshot.horizon_bucket(probe.horizon_ms or 0.0))}

    async def call(self, name: str, body: Any) -> Any:
        """Run one engine method; service errors become the client's typed errors."""
        method: Callable[[Any], Awaitable[Any]] = getattr(self, name)
        try:
            return await method(body)
        except RouterError as error:
            raise api_error(http_status(error), error.to_body()) from None


async def run_engine(config: Path, *, models: Path | None = None, state_file: Path | None = None,
                     task_status: trio.TaskStatus[LocalEngine] = trio.TASK_STATUS_IGNORED) -> None:
    """Start the model cache and health monitor actors, build the predictor, report it, run until cancelled."""
    options = app.Options(config=config, models=models, state_file=state_file)
    try:
        router_config, _text, repository, _policy = await trio.to_thread.run_sync(app.load_initial_config, options)
    except app.StartupError as exc:
        raise LocalStartupError(str(exc)) from None
    metrics = Metrics()
    router = RouterState.from_config(router_config)
    # Switch triggers and transition commands have no consumer in process: nothing here switches.
    trigger_send, _trigger_recv = trio.open_memory_channel[Trigger](1)
    command_send, _command_recv = trio.open_memory_channel[Envelope[Any]](1)
    transitions = Transitions(command_send, InFlight(metrics))
    cache_send, cache_recv = trio.open_memory_channel[Envelope[Any]](1024)
    cache = ModelCache(cache_send, excluded=transitions.excluded)
    health_send, health_recv = trio.open_memory_channel[Any](8192)
    breakers, alerts = switching_limits(router_config.switching)
    health = HealthMonitor(health_send, metrics, BreakerBoard(breakers, metrics, clock=trio.current_time),
                           alerts=alerts, feedback_index=FeedbackIndex(router_config.switching.feedback_index_size))
    view = await trio.to_thread.run_sync(read_traffic_view, app.state_path(options))
    transitions.published(view)
    preload = app.preload_list(options, router_config)
    limits = cache_limits(router_config.settings.max_cached_models, router_config.settings.model_cache_mb)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(
            model_cache.run, repository, limits, metrics, cache, cache_recv,
            pinned=lambda: frozenset(preload), pinned_versions=transitions.pinned_versions,
            excluded=transitions.excluded, preload=preload,
            ttl_seconds=lambda: float(router_config.settings.cache_ttl_seconds),
            preferred=lambda name: plan.stable if (plan := transitions.plan(name)) is not None else None))
        await nursery.start(health_monitor.run, health, health_recv)
        predictor = Predictor(router, cache, metrics, transitions, health, SwitchFeed(trigger_send, metrics),
                              render_error=item_body)
        task_status.started(LocalEngine(predictor, repository, config))
        await trio.sleep_forever()


class LocalThread:
    """The engine on a trio loop in a daemon thread, for the blocking client.

    Calls cross into the loop with ``trio.from_thread.run``; ``close`` cancels the loop
    and joins the thread. Startup errors (an invalid config) are raised by the constructor.
    """

    def __init__(self, config: Path, *, models: Path | None = None, state_file: Path | None = None) -> None:
        self._ready = threading.Event()
        self._engine: LocalEngine | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(config, models, state_file),
                                        name="model-router-local", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def _main(self, config: Path, models: Path | None, state_file: Path | None) -> None:
        async def host() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self._engine = await nursery.start(partial(run_engine, config, models=models,
                                                               state_file=state_file))
                    self._ready.set()
        try:
            trio.run(host)
        except BaseException as exc:  # reported to the constructor's caller, not lost in the thread
            self._failure = single_error(exc)
        finally:
            self._ready.set()

    def call(self, name: str, body: Any) -> Any:
        if self._engine is None or self._token is None:
            raise ModelRouterError("the local engine is closed")
        return trio.from_thread.run(self._engine.call, name, body, trio_token=self._token)

    def close(self) -> None:
        if self._scope is not None and self._token is not None and self._thread.is_alive():
            scope = self._scope
            with contextlib.suppress(trio.RunFinishedError):  # the loop already stopped
                trio.from_thread.run_sync(scope.cancel, trio_token=self._token)
        self._engine = None
        self._thread.join()
