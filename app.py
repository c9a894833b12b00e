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
import functools
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors import config_watcher, model_cache, redis_bus, router
from actors.config_watcher import ConfigWatcher, ReloadCommand, read_config_text, resolve_repository
from actors.errors import ApiError, bad_request, not_found
from actors.metrics import Metrics
from actors.model_cache import CacheRequest, ModelCache, cache_limits
from actors.model_repo import list_repository, parse_metadata, version_dir
from actors.predictor import Predictor, parse_request
from actors.redis_bus import RedisMessage, RedisOutbox, disabled_outbox
from actors.router import ConfigUpdate, RouterState
from actors.rules import ConfigError, RouterConfig, parse_config

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
    started_at: float = attrs.field(factory=time.time)
    stop: trio.Event = attrs.field(factory=trio.Event)

    async def reload_config(self) -> bool:
        """Seed 000's programmatic reload: True when the new config is in force."""
        return await self.watcher.reload_config()

    def readiness(self) -> list[str]:
        default = self.router.config.settings.default_model
        if self.cache.lookup(default) is not None:
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


async def serve(options: Options, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
                ) -> None:
    config, text, repository = load_initial_config(options)
    metrics = Metrics()
    state = RouterState.from_config(config)
    cache_send, cache_recv = trio.open_memory_channel[CacheRequest](1024)
    cache = ModelCache(cache_send)
    command_send, command_recv = trio.open_memory_channel[ReloadCommand](64)
    watcher = ConfigWatcher(options.config, command_send)
    redis_url = options.redis_url or config.settings.redis_url
    outbox = disabled_outbox(metrics)
    preload = preload_list(options, config)
    unknown = sorted(set(options.preload) - set(list_repository(repository)))
    if unknown:
        log.warning("PRELOAD_MODELS names models not in the repository: %s", ", ".join(unknown))

    async with trio.open_nursery() as nursery:
        actors = ActorGroup(nursery)
        if redis_url:
            redis_send, redis_recv = trio.open_memory_channel[RedisMessage](4096)
            outbox = RedisOutbox(redis_send, metrics)
            await actors.start("redis_bus", partial(redis_bus.run, redis_url, redis_recv, metrics))
        limits = cache_limits(config.settings.max_cached_models, config.settings.model_cache_mb)
        await actors.start("model_cache", partial(
            model_cache.run, repository, limits, metrics, cache, cache_recv,
            pinned=lambda: frozenset({state.config.settings.default_model, *preload}),
            preload=preload, ttl_seconds=lambda: float(state.config.settings.cache_ttl_seconds)))
        update_send, update_recv = trio.open_memory_channel[ConfigUpdate](0)
        await actors.start("router", partial(router.run, state, update_recv, metrics))
        await actors.start("config_watcher", partial(
            config_watcher.run, watcher, command_recv, state, update_send, outbox, metrics,
            repository=repository, initial_text=text,
            on_applied=lambda c: cache.preload((c.settings.default_model,))))
        service = Service(options, metrics, state, cache, watcher, outbox,
                          Predictor(state, cache, metrics), repository)
        if options.handle_signals:
            nursery.start_soon(_stop_on_signals, service.stop)
        http_done = trio.Event()
        binds = await nursery.start(partial(_serve_http, service, http_done))
        url = binds[0]
        log.info("model-router %s serving %s on %s (rules %s, %d rules, repository %s)",
                 SERVICE_VERSION, options.config, url, config.config_hash, len(config.rules), repository)
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
        await hypercorn_serve(create_app(service), hypercorn_config(service.options),
                              shutdown_trigger=service.stop.wait, task_status=task_status)
    finally:
        done.set()


async def _stop_on_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: draining HTTP, then stopping actors", signal.Signals(signum).name)
            stop.set()
            return


def hypercorn_config(options: Options) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{options.host}:{options.port}"]
    config.accesslog = logging.getLogger("model_router.access") if options.access_log else None
    config.errorlog = logging.getLogger("model_router.http")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = 75.0
    config.include_server_header = False
    return config


# ------------------------------------------------------------------ HTTP ----


def _reject_constant(token: str) -> Any:
    raise ApiError(422, "non_finite_number", f"non-finite number {token} is not accepted", {"token": token})


async def json_body() -> Any:
    data = await request.get_data(cache=False)
    if not data:
        raise bad_request("request body must be JSON")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from exc


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
    view = service.cache.view
    loaded = view.models.get((name, version))
    if loaded is not None:
        status = "serving" if view.active.get(name) == version else "loaded"
    elif (name, version) in view.failures:
        status = "failed"
    else:
        status = "available"
    entry: dict[str, Any] = {"version": version, "status": status}
    if loaded is not None:
        entry.update(loaded_at=loaded.loaded_at, size_bytes=loaded.size_bytes)
    if status == "failed":
        entry["error"] = view.failures[(name, version)]
    return entry


def _read_metadata(root: Path, name: str, version: str) -> dict[str, Any] | None:
    try:
        return parse_metadata((version_dir(root, name, version) / "metadata.yml").read_text()).to_dict()
    except (OSError, ValueError):
        return None


def describe_model(service: Service, name: str, catalog: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    versions = catalog[name]
    active = service.cache.view.active.get(name)
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
        "versions": entries,
    }


async def _catalog(service: Service) -> dict[str, tuple[str, ...]]:
    return await trio.to_thread.run_sync(list_repository, service.repository)


def create_app(service: Service) -> QuartTrio:
    """The Quart-Trio app: thin handlers over the service's actors and predictor."""
    app = QuartTrio(SERVICE_NAME)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    admin = require_admin(service)
    max_batch = service.router.config.settings.max_batch_items

    @app.errorhandler(ApiError)
    async def on_api_error(error: ApiError) -> Response:
        level = logging.WARNING if error.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %s", request.method, request.path, error)
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        code = (error.name or "http_error").lower().replace(" ", "_")
        message = error.description or error.name or "HTTP error"
        response = error_response(ApiError(error.code or 400, code, message, {"path": request.path}))
        if error.code == 413:
            # The unread rest of the body makes this connection unusable: tell the client.
            response = error_response(ApiError(413, "payload_too_large",
                                               f"request body larger than {MAX_BODY_BYTES} bytes",
                                               {"limit_bytes": MAX_BODY_BYTES}))
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal error; see the service log",
                                       {"type": type(error).__name__}))

    @app.post("/predict")
    async def predict() -> Response:
        return json_response(await service.predictor.predict_one(await json_body()))

    @app.post("/predict/batch")
    async def predict_batch() -> Response:
        return json_response(await service.predictor.predict_batch(await json_body(), max_batch))

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
        return json_response({"model": name, "version": result.model.version,
                              "previous_version": result.previous_version, "status": "reloaded"})

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
    parser.add_argument("--log-level", default=environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    preload = tuple(n.strip() for n in environ.get("PRELOAD_MODELS", "").split(",") if n.strip())
    options = Options(
        config=Path(args.config).resolve(), host=args.host, port=args.port,
        models=Path(args.models).resolve() if args.models else None, redis_url=args.redis_url,
        admin_key=read_admin_key(environ), preload=preload, handle_signals=True,
        access_log=args.access_log,
    )
    return options, args.log_level


def main(argv: list[str] | None = None) -> int:
    options, level = parse_options(sys.argv[1:] if argv is None else argv, dict(os.environ))
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    if options.admin_key is None:
        log.warning("no admin key set: admin endpoints answer 403 (set MODEL_ROUTER_ADMIN_KEY)")
    try:
        trio.run(serve, options)
    except StartupError as exc:
        print(f"model-router: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
