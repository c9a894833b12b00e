"""model-router: the composition root and the HTTP layer.

``serve()`` loads the config, starts the actors in dependency order inside one nursery
(Redis bus, model cache, router, config watcher), each through ``nursery.start`` so the
HTTP server binds only once every actor is ready, then runs Hypercorn with the
Quart-Trio app in the same nursery. Shutdown (SIGINT/SIGTERM, or ``Service.stop``)
drains HTTP first, then stops the actors in reverse order.

Run: ``python app.py --config conf/model_router_rules.yml --host 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, has_request_context, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors import (
    config_watcher,
    control_bus,
    health_monitor,
    model_cache,
    redis_bus,
    router,
    switch_feed,
    transition_manager,
)
from actors.batcher import Batcher, BatchSettings
from actors.breaker import BreakerSettings
from actors.config_watcher import ConfigWatcher, ReloadCommand, read_config_text, resolve_repository
from actors.control_bus import ControlBus
from actors.core.rules import ConfigError, RouterConfig, parse_config
from actors.errors import ApiError, bad_request, not_found
from actors.health_monitor import BreakerBoard, HealthMessage, HealthMonitor
from actors.health_stats import AlertThresholds
from actors.metrics import Metrics
from actors.model_cache import CacheRequest, ModelCache, cache_limits
from actors.model_repo import list_repository, parse_metadata, version_dir
from actors.predictor import Predictor, parse_request
from actors.redis_bus import BusState, RedisMessage, RedisOutbox, disabled_outbox
from actors.router import ConfigUpdate, RouterState
from actors.switch_feed import STREAM_ID, FeedFilter, SwitchFeed, Trigger
from actors.transition_manager import Command, InFlight, Transitions

SERVICE_NAME = "model-router"
SERVICE_VERSION = "0.1.0"
MAX_BODY_BYTES = 4 * 1024 * 1024
log = logging.getLogger("model_router")


class StartupError(Exception):
    """The service cannot start (config invalid or unreadable); the message says why."""


@attrs.frozen
class Options:
    config: Path
    host: str = "127.0.0.1"
    port: int = 8000
    models: Path | None = None
    redis_url: str | None = None
    admin_key: str | None = None
    preload: tuple[str, ...] = ()
    handle_signals: bool = False
    access_log: bool = False
    state_file: Path | None = None
    workers: int = 1
    worker_index: int = 0
    batch_max_size: int = 32
    batch_delay_us: float = 500.0
    batch_min_call_us: float = 20.0


@attrs.define
class Service:
    """Everything the HTTP layer reads; built once by ``serve()``."""

    options: Options
    metrics: Metrics
    router: RouterState
    cache: ModelCache
    watcher: ConfigWatcher
    outbox: RedisOutbox
    predictor: Predictor
    repository: Path
    transitions: Transitions
    health: HealthMonitor
    feed: SwitchFeed
    control: ControlBus
    started_at: float = attrs.field(factory=time.time)
    stop: trio.Event = attrs.field(factory=trio.Event)

    async def reload_config(self) -> bool:
        """Seed 000's programmatic reload: True when the new config is in force."""
        return await self.watcher.reload_config()

    def readiness(self) -> list[str]:
        default = self.router.config.settings.default_model
        if self.cache.lookup(default, self.predictor.serving_version(default)) is not None:
            return []
        failures = [f"{n}@{v}: {r}" for (n, v), r in self.cache.view.failures.items() if n == default]
        return [f"default model {default!r} is not loaded yet", *failures]


@attrs.frozen
class Running:
    """What ``serve`` reports once it listens: the base URL and the service."""

    url: str
    service: Service


# ---------------------------------------------------------------- actors ----


@attrs.define
class ActorGroup:
    """Starts actors in order and stops them in reverse order."""

    nursery: trio.Nursery
    running: list[tuple[str, trio.CancelScope, trio.Event]] = attrs.field(factory=list)

    async def start(self, name: str, actor: Callable[..., Awaitable[Any]]) -> None:
        await self.nursery.start(self._supervise, name, actor)

    async def _supervise(self, name: str, actor: Callable[..., Awaitable[Any]],
                         *, task_status: trio.TaskStatus[None]) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(actor)
                    self.running.append((name, scope, done))
                    log.debug("actor %s ready", name)
                    task_status.started()
        finally:
            done.set()

    async def stop_all(self) -> None:
        for name, scope, done in reversed(self.running):
            scope.cancel()
            await done.wait()
            log.debug("actor %s stopped", name)


def load_initial_config(options: Options) -> tuple[RouterConfig, str, Path]:
    """Parse and fully validate the config before anything starts: fail fast on a bad deploy."""
    path = options.config
    try:
        text = read_config_text(path)
        draft = parse_config(text)
        repository = resolve_repository(path, draft, options.models)
        config = parse_config(text, known_models=frozenset(list_repository(repository)))
    except ConfigError as exc:
        lines = [f"  {d['path']}: {d['message']}" for d in exc.details]
        raise StartupError("\n".join([f"invalid config {path}: {exc.message}", *lines])) from exc
    except (OSError, UnicodeError, ValueError) as exc:
        raise StartupError(f"cannot read config {path}: {exc}") from exc
    return config, text, repository


def preload_list(options: Options, config: RouterConfig) -> tuple[str, ...]:
    names = [config.settings.default_model, *config.settings.preload_models, *options.preload]
    return tuple(dict.fromkeys(names))


def state_path(options: Options) -> Path:
    """Where version state persists: ``--state-file``, else ``state/`` beside the config's folder."""
    if options.state_file is not None:
        return options.state_file
    return options.config.parent.parent / "state" / f"{options.config.stem}.state.json"


async def serve(options: Options, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
                ) -> None:
    config, text, repository = load_initial_config(options)
    metrics = Metrics()
    state = RouterState.from_config(config)
    cache_send, cache_recv = trio.open_memory_channel[CacheRequest](1024)
    cache = ModelCache(cache_send)
    command_send, command_recv = trio.open_memory_channel[ReloadCommand](64)
    watcher = ConfigWatcher(options.config, command_send)
    health_send, health_recv = trio.open_memory_channel[HealthMessage](8192)
    trigger_send, trigger_recv = trio.open_memory_channel[Trigger](1024)
    transition_send, transition_recv = trio.open_memory_channel[Command](256)
    redis_url = options.redis_url or config.settings.redis_url
    feed = SwitchFeed(trigger_send, metrics, redis_url=redis_url)
    transitions = Transitions(transition_send, InFlight(metrics))

    def breaker_changed(key: tuple[str, str], old: str, new: str) -> None:
        feed.trigger(f"breaker_{'open' if new == 'open' else 'closed' if new == 'closed' else 'half_open'}")
        transitions.breaker_changed(key, new)

    health = HealthMonitor(health_send, metrics,
                           BreakerBoard(BreakerSettings(), metrics, breaker_changed, clock=trio.current_time))
    apply_switching_settings(health, config)
    outbox = disabled_outbox(metrics)
    preload = preload_list(options, config)
    unknown = sorted(set(options.preload) - set(list_repository(repository)))
    if unknown:
        log.warning("PRELOAD_MODELS names models not in the repository: %s", ", ".join(unknown))

    def pinned_names() -> frozenset[str]:
        return frozenset({state.config.settings.default_model, *preload})

    def config_applied(applied: RouterConfig, started_at: float) -> None:
        apply_switching_settings(health, applied)
        cache.preload((applied.settings.default_model,))
        feed.trigger("rules_reload", started_at=started_at)

    control = ControlBus(outbox)
    async with trio.open_nursery() as nursery:
        actors = ActorGroup(nursery)
        if redis_url:
            redis_send, redis_recv = trio.open_memory_channel[RedisMessage](4096)
            outbox = RedisOutbox(redis_send, metrics, BusState())
            control = ControlBus(outbox, enabled=options.workers > 1)
            await actors.start("redis_bus", partial(redis_bus.run, redis_url, redis_recv, metrics,
                                                    state=outbox.state))
        elif options.workers > 1:
            log.warning("%d workers without Redis: operator commands reach only the worker that takes them",
                        options.workers)
        limits = cache_limits(config.settings.max_cached_models, config.settings.model_cache_mb)
        await actors.start("model_cache", partial(
            model_cache.run, repository, limits, metrics, cache, cache_recv,
            pinned=pinned_names, pinned_versions=transitions.pinned_versions, excluded=transitions.excluded,
            preload=preload, ttl_seconds=lambda: float(state.config.settings.cache_ttl_seconds)))
        await actors.start("health_monitor", partial(health_monitor.run, health, health_recv))
        batcher = None
        if options.batch_max_size > 1:
            batcher = Batcher(BatchSettings(options.batch_max_size, options.batch_delay_us,
                                            options.batch_min_call_us), metrics)
        predictor = Predictor(state, cache, metrics, transitions, health, feed, batcher)
        await actors.start("switch_feed", partial(switch_feed.run, feed, trigger_recv, outbox,
                                                  predictor.serving_for))
        await actors.start("transition_manager", partial(
            transition_manager.run, transitions, transition_recv, cache, health, feed, metrics,
            repository=repository, state_path=state_path(options),
            thresholds=lambda name: state.config.threshold_for(name),
            on_auto_rollback=lambda op: control.publish("rollback_operation", operation_id=op.id,
                                                        reason=op.reason or "rolled back")))
        update_send, update_recv = trio.open_memory_channel[ConfigUpdate](0)
        await actors.start("router", partial(router.run, state, update_recv, metrics))
        await actors.start("config_watcher", partial(
            config_watcher.run, watcher, command_recv, state, update_send, outbox, metrics,
            repository=repository, initial_text=text, on_applied=config_applied))
        service = Service(options, metrics, state, cache, watcher, outbox, predictor, repository,
                          transitions, health, feed, control)
        if control.enabled and redis_url:
            await actors.start("control_bus", partial(control_bus.run, control, redis_url,
                                                      mirror_handlers(service)))
        if options.handle_signals:
            nursery.start_soon(_stop_on_signals, service.stop)
        http_done = trio.Event()
        binds = await nursery.start(partial(_serve_http, service, http_done))
        url = binds[0]
        log.info("model-router %s serving %s on %s (rules %s, %d rules, repository %s)",
                 SERVICE_VERSION, options.config, url, config.config_hash, len(config.rules), repository)
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's walks, so collections during requests and reloads stay short.
        gc.collect()
        gc.freeze()
        task_status.started(Running(url, service))
        await service.stop.wait()
        # Hypercorn returns once in-flight requests are answered (bounded by graceful_timeout);
        # only then do the actors stop, last started first.
        await http_done.wait()
        await actors.stop_all()
        nursery.cancel_scope.cancel()
    log.info("model-router stopped")


async def _serve_http(service: Service, done: trio.Event,
                      *, task_status: trio.TaskStatus[list[str]]) -> None:
    try:
        await hypercorn_serve(HotPath(create_app(service), service), hypercorn_config(service.options),
                              shutdown_trigger=service.stop.wait, task_status=task_status)
    finally:
        done.set()


async def _stop_on_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: draining HTTP, then stopping actors", signal.Signals(signum).name)
            stop.set()
            return


def apply_switching_settings(health: HealthMonitor, config: RouterConfig) -> None:
    """Put the config's ``switching:`` limits in force (rebinding two immutable values)."""
    switching = config.switching
    health.breakers.settings = BreakerSettings(failure_threshold=switching.breaker_failures,
                                               open_seconds=switching.breaker_open_seconds)
    health.alerts = AlertThresholds(error_rate=switching.alert_error_rate,
                                    latency_p95_ms=switching.alert_latency_p95_ms,
                                    min_requests=switching.min_requests)


def mirror_handlers(service: Service) -> dict[str, control_bus.Handler]:
    """How a worker applies a command another worker took (see ``actors/control_bus.py``)."""
    transitions = service.transitions

    async def config_reload(args: dict[str, Any]) -> None:
        await service.watcher.reload("control")

    async def model_reload(args: dict[str, Any]) -> None:
        result = await service.cache.reload(args["name"])
        if result.model is not None:
            await transitions.model_reloaded(args["name"], result.model.version)

    async def switch(args: dict[str, Any]) -> None:
        await transitions.switch(args["name"], args["body"], args["operation_id"])

    async def abort(args: dict[str, Any]) -> None:
        await transitions.abort(args["operation_id"])

    async def promote(args: dict[str, Any]) -> None:
        await transitions.promote(args["operation_id"])

    async def rollback(args: dict[str, Any]) -> None:
        await transitions.rollback(args["name"], args.get("version"), args["operation_id"])

    async def rollback_operation(args: dict[str, Any]) -> None:
        await transitions.rollback_operation(args["operation_id"], args.get("reason", "rolled back"))

    async def register(args: dict[str, Any]) -> None:
        await transitions.register({"name": args["name"], "version": args["version"]})

    async def deregister(args: dict[str, Any]) -> None:
        await transitions.deregister(args["name"], args["version"])

    return {"config_reload": config_reload, "model_reload": model_reload, "switch": switch, "abort": abort,
            "promote": promote, "rollback": rollback, "rollback_operation": rollback_operation,
            "register": register, "deregister": deregister}


def listening_socket(options: Options) -> socket.socket:
    """Bound with SO_REUSEPORT so every worker process listens on the same port."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((options.host, options.port))
    return sock


def hypercorn_config(options: Options) -> HypercornConfig:
    config = HypercornConfig()
    if options.workers > 1:
        sock = listening_socket(options)
        sock.set_inheritable(True)
        config.bind = [f"fd://{sock.detach()}"]
    else:
        config.bind = [f"{options.host}:{options.port}"]
    config.accesslog = logging.getLogger("model_router.access") if options.access_log else None
    config.errorlog = logging.getLogger("model_router.http")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = 75.0
    config.include_server_header = False
    config.websocket_max_message_size = MAX_BODY_BYTES
    return config


# ------------------------------------------------------------------ HTTP ----


def _reject_constant(token: str) -> Any:
    raise ApiError(422, "non_finite_number", f"non-finite number {token} is not accepted", {"token": token})


async def json_body() -> Any:
    return parse_json(await request.get_data(cache=False))


def log_api_error(where: str, error: ApiError) -> None:
    """Client errors at INFO, service-side ones at WARNING: one rule for every layer."""
    log.log(logging.WARNING if error.status >= 500 else logging.INFO, "%s -> %s", where, error)


def internal_error(where: str, exc: BaseException) -> ApiError:
    """Log an unexpected exception with its traceback; the client gets no internals."""
    log.exception("unhandled error on %s", where)
    return ApiError(500, "internal_error", "internal error; see the service log", {"type": type(exc).__name__})


def payload_too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"request body larger than {MAX_BODY_BYTES} bytes",
                    {"limit_bytes": MAX_BODY_BYTES})


def current_path() -> str:
    """The path being served, in an HTTP request or a WebSocket."""
    if has_request_context():
        return request.path
    if has_websocket_context():
        return websocket.path
    return "?"


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status,
                    content_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.to_body(), error.status)


def require_admin(service: Service) -> Callable:
    """Admin endpoints need ``X-Admin-Key`` (or ``Authorization: Bearer``) equal to the admin key."""

    def decorate(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(handler)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            expected = service.options.admin_key
            if not expected:
                raise ApiError(403, "admin_disabled",
                               "admin API disabled: set MODEL_ROUTER_ADMIN_KEY (or _FILE) to enable it")
            given = request.headers.get("X-Admin-Key", "")
            auth = request.headers.get("Authorization", "")
            if not given and auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), expected.encode()):
                log.warning("admin request to %s refused: %s admin key", request.path,
                            "wrong" if given else "missing")
                raise ApiError(401, "unauthorized", "missing or wrong admin key",
                               {"header": "X-Admin-Key"})
            return await handler(*args, **kwargs)

        return guarded

    return decorate


def _version_entry(service: Service, name: str, version: str) -> dict[str, Any]:
    """A version's lifecycle state: loading, ready, serving, draining, unloaded, failed, deregistered."""
    view = service.cache.view
    traffic = service.transitions.view
    key = (name, version)
    plan = traffic.plans.get(name)
    share = plan.share(version) if plan is not None else (1.0 if view.active.get(name) == version else 0.0)
    loaded = view.models.get(key)
    loading_op = next((op for op in traffic.state.operations.values()
                       if op.model == name and op.to_version == version and op.state == "loading"), None)
    if version in service.transitions.excluded(name):
        status = "deregistered"
    elif key in traffic.draining:
        status = "draining"
    elif loaded is not None:
        status = "serving" if share > 0 else "ready"
    elif loading_op is not None:
        status = "loading"
    elif key in view.failures:
        status = "failed"
    else:
        status = "unloaded"
    entry: dict[str, Any] = {
        "version": version, "status": status, "traffic_share": round(share if loaded else 0.0, 6),
        "in_flight": service.transitions.inflight.count(key),
        "breaker": service.health.breakers.state(key),
    }
    if loaded is not None:
        entry.update(loaded_at=loaded.loaded_at, size_bytes=loaded.size_bytes)
    if key in view.failures:
        entry["error"] = view.failures[key]
    return entry


def _read_metadata(root: Path, name: str, version: str) -> dict[str, Any] | None:
    try:
        return parse_metadata((version_dir(root, name, version) / "metadata.yml").read_text()).to_dict()
    except (OSError, ValueError):
        return None


def describe_model(service: Service, name: str, catalog: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    versions = catalog[name]
    active = service.predictor.serving_version(name)
    entries = []
    for version in sorted(versions, key=int, reverse=True):
        entry = _version_entry(service, name, version)
        entry["metadata"] = _read_metadata(service.repository, name, version)
        entries.append(entry)
    current = next((e for e in entries if e["version"] == active), entries[0] if entries else None)
    meta = (current or {}).get("metadata") or {}
    return {
        "name": name,
        "active_version": active,
        "latest_version": entries[0]["version"] if entries else None,
        "status": (current or {}).get("status", "available"),
        "features": meta.get("features"),
        "window": meta.get("window"),
        "labels": meta.get("labels"),
        "accuracy": meta.get("accuracy"),
        "training_date": meta.get("training_date"),
        "policy": service.transitions.view.state.record(name).policy,
        "plan": plan.to_dict() if (plan := service.transitions.plan(name)) is not None else None,
        "versions": entries,
    }


async def _catalog(service: Service) -> dict[str, tuple[str, ...]]:
    return await trio.to_thread.run_sync(list_repository, service.repository)


JSON_HEADERS = [(b"content-type", b"application/json")]
HOT_PATHS = frozenset({"/predict", "/predict/batch"})


class HotPath:
    """A lean ASGI route for ``POST /predict`` and ``POST /predict/batch``; Quart serves the rest.

    Quart's request and context machinery costs several times what a prediction does, and
    these two endpoints need none of it: this reads the body (bounded), runs the predictor
    and writes the JSON answer straight through ASGI. Errors keep the service's one shape,
    ``{"error": {code, message, details}}``, and are logged as in Quart's handlers.
    """

    def __init__(self, app: QuartTrio, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        path = scope.get("path")
        if scope["type"] == "http" and path in HOT_PATHS:
            await self.predict(path, scope["method"], receive, send)
        else:
            await self.app(scope, receive, send)

    async def predict(self, path: str, method: str, receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        headers = JSON_HEADERS
        try:
            if method != "POST":
                headers = [*JSON_HEADERS, (b"allow", b"POST")]
                raise ApiError(405, "method_not_allowed", f"{path} takes POST", {"path": path, "method": method})
            body = await _read_body(receive)
            if path == "/predict":
                answer = await self.service.predictor.predict_one(body)
            else:
                answer = await self.service.predictor.predict_batch(body)
            status, payload = 200, orjson.dumps(answer)
        except ApiError as error:
            log_api_error(f"{method} {path}", error)
            status, payload = error.status, orjson.dumps(error.to_body())
            if error.status == 413:
                headers = [*headers, (b"connection", b"close")]
        except Exception as exc:
            failure = internal_error(f"{method} {path}", exc)
            status, payload = failure.status, orjson.dumps(failure.to_body())
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> Any:
    """The request body as JSON: bounded by MAX_BODY_BYTES, NaN/Infinity refused."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise bad_request("client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise payload_too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return parse_json(b"".join(chunks))


def parse_json(data: bytes) -> Any:
    """orjson for speed; the stdlib parser for what orjson refuses, to phrase the error exactly.

    Numbers beyond float range (``1e999``) parse to infinity there and are then refused by
    feature validation with a 422 naming the feature; NaN/Infinity tokens get a 422 here.
    """
    if not data:
        raise bad_request("request body must be JSON")
    with contextlib.suppress(orjson.JSONDecodeError):  # the stdlib below phrases the error
        return orjson.loads(data)
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from exc


def create_app(service: Service) -> QuartTrio:
    """The Quart-Trio app: thin handlers over the service's actors and predictor."""
    app = QuartTrio(SERVICE_NAME)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    admin = require_admin(service)

    @app.errorhandler(ApiError)
    async def on_api_error(error: ApiError) -> Response:
        log_api_error(current_path(), error)
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        code = (error.name or "http_error").lower().replace(" ", "_")
        message = error.description or error.name or "HTTP error"
        if error.code == 413:
            # The unread rest of the body makes this connection unusable: tell the client.
            response = error_response(payload_too_large())
            response.headers["Connection"] = "close"
            return response
        return error_response(ApiError(error.code or 400, code, message, {"path": current_path()}))

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        return error_response(internal_error(current_path(), error))

    @app.get("/models")
    async def models() -> Response:
        catalog = await _catalog(service)
        described = await trio.to_thread.run_sync(
            lambda: [describe_model(service, name, catalog) for name in sorted(catalog)])
        return json_response({"models": described, "count": len(described)})

    async def detail_of(name: str) -> dict[str, Any]:
        catalog = await _catalog(service)
        if name not in catalog:
            raise not_found("model_not_found", f"model {name!r} is not in the repository",
                            model=name, available=sorted(catalog))
        return await trio.to_thread.run_sync(describe_model, service, name, catalog)

    @app.get("/models/<name>")
    async def model_detail(name: str) -> Response:
        return json_response(await detail_of(name))

    @app.get("/models/<name>/versions")
    async def model_versions(name: str) -> Response:
        detail = await detail_of(name)
        return json_response({"model_name": name, "active_version": detail["active_version"],
                              "versions": detail["versions"]})

    @app.post("/reload/<name>")
    @admin
    async def reload_model(name: str) -> Response:
        result = await service.cache.reload(name)
        assert result.model is not None
        log.info("model %s reloaded: version %s (was %s)", name, result.model.version,
                 result.previous_version)
        service.control.publish("model_reload", name=name)
        operation = await service.transitions.model_reloaded(name, result.model.version)
        body = {"model": name, "version": result.model.version, "previous_version": result.previous_version,
                "status": "reloaded"}
        if operation is not None:
            body["operation_id"] = operation.id
        return json_response(body)

    @app.post("/models")
    @admin
    async def register_model() -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            raise bad_request("body must be an object with name and version")
        registered = await service.transitions.register(body)
        service.control.publish("register", name=registered["name"], version=registered["version"])
        return json_response(registered, 201)

    @app.delete("/models/<name>/versions/<version>")
    @admin
    async def deregister_model(name: str, version: str) -> Response:
        result = await service.transitions.deregister(name, version)
        service.control.publish("deregister", name=name, version=version)
        return json_response(result)

    @app.post("/models/<name>/switch")
    @admin
    async def switch_model(name: str) -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            raise bad_request("body must be an object: {version, strategy, ...}")
        operation = await service.transitions.switch(name, body)
        service.control.publish("switch", name=name, body=body, operation_id=operation.id)
        return json_response({"operation_id": operation.id, "operation": operation.to_dict()}, 202)

    @app.post("/models/<name>/rollback")
    @admin
    async def rollback_model(name: str) -> Response:
        data = await request.get_data(cache=False)
        body = await _optional_body(data)
        version = body.get("version")
        operation = await service.transitions.rollback(name, None if version is None else str(version))
        service.control.publish("rollback", name=name, version=None if version is None else str(version),
                                operation_id=operation.id)
        return json_response({"operation_id": operation.id, "operation": operation.to_dict()}, 202)

    @app.get("/switches")
    async def switches() -> Response:
        operations = sorted(service.transitions.view.state.operations.values(), key=lambda o: o.created_at,
                            reverse=True)
        return json_response({"operations": [o.to_dict() for o in operations[:100]], "count": len(operations)})

    @app.get("/switches/<operation_id>")
    async def switch_status(operation_id: str) -> Response:
        op = service.transitions.operation(operation_id)
        body = op.to_dict()
        body["candidate_health"] = service.health.snapshot(op.model, op.to_version).to_dict()
        body["stable_health"] = service.health.snapshot(op.model, op.from_version).to_dict()
        if op.params.strategy == "ab":
            body["ab"] = service.health.ab_report(op.id, op.from_version, op.to_version)
        return json_response(body)

    @app.post("/switches/<operation_id>/<any(abort, promote):action>")
    @admin
    async def switch_stop(operation_id: str, action: str) -> Response:
        """Abort (back to the old version) or promote (on to the new one) a running switch."""
        stop = service.transitions.abort if action == "abort" else service.transitions.promote
        operation = await stop(operation_id)
        service.control.publish(action, operation_id=operation_id)
        return json_response(operation.to_dict())

    @app.post("/feedback")
    async def feedback() -> Response:
        body = await json_body()
        if not isinstance(body, dict) or not isinstance(body.get("correlation_id"), str) \
                or not isinstance(body.get("outcome"), str):
            raise bad_request("body must be {\"correlation_id\": str, \"outcome\": label}")
        result = await service.health.feedback(body["correlation_id"][:128], body["outcome"][:64])
        if result["status"] == 404:
            raise not_found("unknown_correlation_id", "no recent prediction has this correlation_id",
                            correlation_id=body["correlation_id"][:128])
        if result["status"] == 422:
            raise ApiError(422, "invalid_outcome", "outcome must be one of the model's labels",
                           {"labels": result["labels"]})
        return json_response({k: v for k, v in result.items() if k != "status"})

    @app.get("/health/detailed")
    async def health_detailed() -> Response:
        return json_response(detailed_health(service))

    @app.websocket("/ws/switches")
    async def ws_switches() -> None:
        await stream_switches(service)

    @app.websocket("/ws/predict")
    async def ws_predict() -> None:
        await stream_predictions(service)

    @app.get("/rules")
    async def rules() -> Response:
        active = service.router.active
        return json_response({**active.config.to_dict(), "generation": active.generation,
                              "activated_at": active.activated_at})

    @app.post("/route/test")
    async def route_test() -> Response:
        body = await json_body()
        if not isinstance(body, dict):
            raise bad_request("body must be an object with asset_class and horizon_ms")
        probe = parse_request({"features": {}, **{k: v for k, v in body.items()
                                                  if k in ("asset_class", "horizon_ms", "symbol")}})
        selection = service.router.select(probe.asset_class or "", probe.horizon_ms or 0.0, probe.symbol)
        snapshot = service.router.active.snapshot
        return json_response({
            "model": selection.model, "rule_index": selection.rule_index,
            "description": selection.description, "fallback": selection.fallback,
            "config_hash": selection.config_hash,
            "horizon_bucket": snapshot.bucket_label(snapshot.horizon_bucket(probe.horizon_ms or 0.0)),
        })

    @app.post("/config/reload")
    @admin
    async def config_reload() -> Response:
        event = await service.watcher.reload("api")
        service.control.publish("config_reload")
        if event.success:
            return json_response({"status": "reloaded", "event": event.to_dict()})
        raise ApiError(422, "invalid_config", event.error or "reload failed",
                       {"kept_config_hash": event.config_hash, "problems": list(event.details)})

    @app.get("/stats")
    async def stats() -> Response:
        rules_count = len(service.router.config.rules)
        return json_response(service.watcher.history.stats(rules_count))

    @app.get("/reload/events")
    async def reload_events() -> Response:
        raw = request.args.get("limit", "20")
        limit_max = service.watcher.history.limit
        if not raw.isdigit() or not 1 <= int(raw) <= limit_max:
            raise bad_request(f"'limit' must be an integer 1..{limit_max}", limit=raw)
        events = service.watcher.history.recent(int(raw))
        return json_response({"events": [e.to_dict() for e in events], "count": len(events)})

    @app.get("/health")
    async def health() -> Response:
        view = service.cache.view
        return json_response({
            "status": "ok", "service": SERVICE_NAME, "version": SERVICE_VERSION,
            "models_loaded": sorted(f"{n}@{v}" for n, v in view.models),
            "config_hash": service.router.config.config_hash,
            "uptime_s": round(time.time() - service.started_at, 3),
            "worker": service.options.worker_index, "pid": os.getpid(),
        })

    @app.get("/health/ready")
    async def ready() -> Response:
        reasons = service.readiness()
        if reasons:
            return json_response({"status": "not_ready", "reasons": reasons}, 503)
        return json_response({"status": "ready", "config_hash": service.router.config.config_hash})

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    return app


async def _optional_body(data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}
    body = parse_json(data)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def detailed_health(service: Service) -> dict[str, Any]:
    """Every known model version: window statistics, breaker, in-flight count, traffic share."""
    keys = set(service.cache.view.models) | service.health.known_versions()
    for plan in service.transitions.view.plans.values():
        keys |= {(plan.model, v) for v in plan.versions()}
    versions = []
    for name, version in sorted(keys):
        entry = _version_entry(service, name, version)
        entry.update(model=name, health=service.health.snapshot(name, version).to_dict())
        versions.append(entry)
    running = [op.to_dict() for op in service.transitions.view.state.operations.values() if not op.is_terminal]
    return {"status": "ok", "versions": versions, "running_switches": running,
            "redis": {"configured": service.outbox.enabled, "connected": service.outbox.state.connected},
            "switch_subscribers": len(service.feed.subscribers)}


async def stream_switches(service: Service) -> None:
    """``/ws/switches``: live switch events as JSON, filtered, resumable from a stream id with Redis."""
    args = websocket.args
    since = args.get("since")
    feed_filter = FeedFilter(args.get("symbol"), args.get("asset_class"), args.get("model"))
    if since is not None and (not STREAM_ID.match(since) or service.feed.redis_url is None):
        reason = ("since needs Redis" if service.feed.redis_url is None
                  else "since must be a stream id like 1700000000000-0")
        await websocket.accept()
        await websocket.send(json.dumps({"type": "error", "error": {"code": "bad_since", "message": reason}}))
        await websocket.close(1008, reason)
        return
    subscription, receive = service.feed.subscribe(feed_filter)
    try:
        await websocket.accept()
        await websocket.send(json.dumps({"type": "subscribed", "filters": attrs.asdict(feed_filter),
                                         "since": since, "redis": service.feed.redis_url is not None}))
        last_replayed = None
        if since is not None:
            try:
                replay = await trio.to_thread.run_sync(service.feed.read_since, since)
            except Exception as exc:  # Redis down: say so, then continue live
                await websocket.send(json.dumps({"type": "error", "error": {
                    "code": "replay_unavailable", "message": f"could not read the switch log: {exc}"}}))
                replay = []
            for message in replay:
                if feed_filter.matches(message):
                    await websocket.send(json.dumps(message))
                last_replayed = message["id"]
        async with receive:
            async for message in receive:
                if last_replayed is not None and message["id"] is not None and \
                        _stream_id_key(message["id"]) <= _stream_id_key(last_replayed):
                    continue
                await websocket.send(json.dumps(message))
        if subscription.dropped:
            await websocket.close(1013, "too slow: reconnect with ?since=<last id>")
    finally:
        service.feed.unsubscribe(subscription)


WS_QUEUE = 32
WS_WORKERS = 4


async def stream_predictions(service: Service) -> None:
    """``/ws/predict``: each message is one request, a list of requests, or ``{"requests": [...]}``.

    One answer message per request message: ``{"type": "prediction", ...}`` (or
    ``{"type": "error", "correlation_id", "error"}``) for a single request, and
    ``{"type": "predictions", "predictions": [...]}`` for a list, each item carrying its
    ``correlation_id``. Up to WS_WORKERS messages are answered concurrently, so answers
    may come out of order (a model that must load first does not hold the others up).
    At most WS_QUEUE messages wait; past that the socket is not read, and TCP pushes back
    on the client. A bad message gets an error answer; the connection stays open.
    """
    await websocket.accept()
    inbound_send, inbound_recv = trio.open_memory_channel[bytes | str](WS_QUEUE)
    outbound_send, outbound_recv = trio.open_memory_channel[bytes](WS_QUEUE)

    async def read() -> None:
        async with inbound_send:
            while True:
                await inbound_send.send(await websocket.receive())

    async def answer_messages(messages: trio.MemoryReceiveChannel[bytes | str],
                              out: trio.MemorySendChannel[bytes]) -> None:
        async with messages, out:
            async for raw in messages:
                await out.send(orjson.dumps(await _answer_ws(service, raw)))

    async def write() -> None:
        async with outbound_recv:
            async for payload in outbound_recv:
                await websocket.send(payload.decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        async with inbound_recv, outbound_send:
            for _ in range(WS_WORKERS):
                nursery.start_soon(answer_messages, inbound_recv.clone(), outbound_send.clone())
        await read()


async def _answer_ws(service: Service, raw: bytes | str) -> dict[str, Any]:
    try:
        body = parse_json(raw.encode() if isinstance(raw, str) else raw)
        if isinstance(body, list):
            body = {"requests": body}
        if isinstance(body, dict) and "requests" in body:
            return {"type": "predictions", **await service.predictor.predict_batch(body)}
        return {"type": "prediction", **await service.predictor.predict_one(body)}
    except ApiError as error:
        correlation_id = None
        with contextlib.suppress(orjson.JSONDecodeError):
            candidate = orjson.loads(raw)
            correlation_id = candidate.get("correlation_id") if isinstance(candidate, dict) else None
        return {"type": "error", "correlation_id": correlation_id, **error.to_body(), "status": error.status}


def _stream_id_key(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)


# ------------------------------------------------------------------- CLI ----


def read_admin_key(environ: dict[str, str]) -> str | None:
    """From MODEL_ROUTER_ADMIN_KEY, or the file named by MODEL_ROUTER_ADMIN_KEY_FILE."""
    key = environ.get("MODEL_ROUTER_ADMIN_KEY", "").strip()
    if key:
        return key
    path = environ.get("MODEL_ROUTER_ADMIN_KEY_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            log.warning("cannot read MODEL_ROUTER_ADMIN_KEY_FILE: %s", exc.strerror)
    return None


def parse_options(argv: list[str], environ: dict[str, str]) -> tuple[Options, str]:
    parser = argparse.ArgumentParser(prog="model-router", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=environ.get("MODEL_ROUTER_CONFIG", "conf/model_router_rules.yml"))
    parser.add_argument("--host", default=environ.get("MODEL_ROUTER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(environ.get("MODEL_ROUTER_PORT", "8000")))
    parser.add_argument("--models", default=environ.get("MODEL_REPOSITORY"),
                        help="model repository folder (default: config.model_repository)")
    parser.add_argument("--redis-url", default=environ.get("MODEL_ROUTER_REDIS_URL") or environ.get("REDIS_URL"),
                        help="overrides config.redis_url (env MODEL_ROUTER_REDIS_URL or REDIS_URL)")
    parser.add_argument("--state-file", default=environ.get("MODEL_ROUTER_STATE_FILE"),
                        help="version registry state (default: state/<config stem>.state.json beside conf/)")
    parser.add_argument("--workers", type=int, default=int(environ.get("MODEL_ROUTER_WORKERS", "1")),
                        help="worker processes sharing the port (SO_REUSEPORT); Redis keeps them in step")
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch-max-size", type=int, default=int(environ.get("MODEL_ROUTER_BATCH_MAX_SIZE", "32")),
                        help="dynamic batching: most rows per call (1 disables)")
    parser.add_argument("--batch-delay-us", type=float,
                        default=float(environ.get("MODEL_ROUTER_BATCH_DELAY_US", "500")),
                        help="dynamic batching: longest a request waits for others, microseconds")
    parser.add_argument("--batch-min-call-us", type=float,
                        default=float(environ.get("MODEL_ROUTER_BATCH_MIN_CALL_US", "20")),
                        help="dynamic batching: only for model versions whose single call costs this much")
    parser.add_argument("--log-level", default=environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    preload = tuple(n.strip() for n in environ.get("PRELOAD_MODELS", "").split(",") if n.strip())
    options = Options(
        config=Path(args.config).resolve(), host=args.host, port=args.port,
        models=Path(args.models).resolve() if args.models else None, redis_url=args.redis_url,
        admin_key=read_admin_key(environ), preload=preload, handle_signals=True,
        access_log=args.access_log, state_file=Path(args.state_file).resolve() if args.state_file else None,
        workers=max(1, args.workers), worker_index=args.worker_index,
        batch_max_size=args.batch_max_size, batch_delay_us=max(0.0, args.batch_delay_us),
        batch_min_call_us=max(0.0, args.batch_min_call_us),
    )
    return options, args.log_level


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    options, level = parse_options(arguments, dict(os.environ))
    prefix = f"w{options.worker_index} " if options.worker_index else ""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    if options.workers > 1 and options.worker_index == 0:
        return supervise_workers(arguments, options)
    if options.admin_key is None:
        log.warning("no admin key set: admin endpoints answer 403 (set MODEL_ROUTER_ADMIN_KEY)")
    try:
        trio.run(serve, options)
    except StartupError as exc:
        print(f"model-router: {exc}", file=sys.stderr)
        return 2
    return 0


RESTARTS_PER_MINUTE = 5


def supervise_workers(arguments: list[str], options: Options) -> int:
    """Run ``options.workers`` copies of the service on one port; forward signals; restart crashes.

    Each worker is a full service (its own actors). SIGTERM/SIGINT stop them all (each
    drains its HTTP requests); SIGHUP reaches every worker, so all reload together. A
    worker that exits with an error is restarted, at most RESTARTS_PER_MINUTE times a
    minute; past that the supervisor stops everything and exits 1. A worker that exits
    with code 2 (invalid config) stops everything at once.
    """
    load_initial_config(options)  # fail fast, once, before starting anything
    port = options.port or _free_port(options.host)
    base = [sys.executable, str(Path(__file__).resolve()), *arguments, "--port", str(port)]
    stopping = False
    workers: dict[int, subprocess.Popen[bytes]] = {}
    restarts: dict[int, list[float]] = {i: [] for i in range(1, options.workers + 1)}

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for worker in workers.values():
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in restarts:
        workers[index] = subprocess.Popen([*base, "--worker-index", str(index)])
    log.info("supervising %d workers on %s:%d", options.workers, options.host, port)
    failed = False
    while workers:
        time.sleep(0.2)  # the supervisor only polls its children; it serves nothing itself
        for index, worker in list(workers.items()):
            code = worker.poll()
            if code is None:
                continue
            del workers[index]
            if stopping:
                failed = failed or code != 0
                continue
            recent = [t for t in restarts[index] if time.monotonic() - t < 60]
            if code == 2 or len(recent) >= RESTARTS_PER_MINUTE:
                log.error("worker %d exited with %d; stopping all workers", index, code)
                failed = True
                forward(signal.SIGTERM, None)
                continue
            log.error("worker %d exited with %d; restarting it", index, code)
            restarts[index] = [*recent, time.monotonic()]
            workers[index] = subprocess.Popen([*base, "--worker-index", str(index)])
    log.info("all workers stopped")
    return 1 if failed else 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
