"""model-router: options, the composition root, and the worker supervisor.

``serve()`` wires the actors (``actors/``) and the web layer (``actors/web/``) together:
it loads and validates the config, opens the channels, starts every actor in dependency
order through ``nursery.start`` (so the ports open only once every actor is ready), then
serves until a signal or ``Service.stop``. Shutdown drains HTTP first, then stops the
actors in reverse order. ``main()`` parses options and, with ``--workers N``, supervises
N copies of the service on one port.

Run: ``python app.py --config conf/model_router_rules.yml --host 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import (
    cluster,
    config_watcher,
    control_bus,
    endpoint_health,
    health_monitor,
    lifecycle,
    model_cache,
    redis_bus,
    rollout_leader,
    router,
    rules_store,
    switch_feed,
    transition_manager,
)
from actors.config_watcher import ConfigWatcher
from actors.control_bus import ControlBus
from actors.core.access import AccessConfigError, AccessPolicy
from actors.core.commands import Command, ReloadConfig, RollbackOperation
from actors.core.feedback_index import FeedbackIndex
from actors.core.gc_policy import DEFAULT_GC_THRESHOLDS
from actors.core.rules import ConfigError, RouterConfig, parse_config
from actors.health_monitor import BreakerBoard, HealthMonitor, switching_limits
from actors.mailbox import Envelope
from actors.model_cache import ModelCache, cache_limits
from actors.redis_bus import BusState, RedisMessage, RedisOutbox, disabled_outbox
from actors.router import ConfigUpdate, RouterState
from actors.serving.batcher import Batcher, BatchSettings
from actors.serving.metrics import Metrics
from actors.serving.predictor import Predictor
from actors.serving.remote_model import RemoteCaller
from actors.storage.access_file import keys_main, read_configured_policy
from actors.storage.admin_key import read_admin_key
from actors.storage.atomic import sweep as sweep_temp_files
from actors.storage.config_files import read_config_text, resolve_repository
from actors.storage.model_repo import list_repository
from actors.switch_feed import SwitchFeed, Trigger
from actors.transition_manager import InFlight, Transitions
from actors.web.access_wiring import start_access
from actors.web.cluster_view import replica_report
from actors.web.data_port import DEFAULT_DATA_PORT, chosen_port, serve_data_port, tls_context
from actors.web.errors import item_body
from actors.web.server import hypercorn_config, serve_main_port
from actors.web.service import SERVICE_VERSION, Service, WebSettings

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
    # None: the config's data_plane.port, else DEFAULT_DATA_PORT; 0: no data plane.
    data_port: int | None = 0
    #: TLS for the main port (both or neither); the data plane takes the same pair.
    certfile: Path | None = None
    keyfile: Path | None = None
    rules_source: str | None = None  # None: the config's config.rules_source
    replica_id: str | None = None
    advertise_url: str | None = None
    log_format: str = "plain"
    #: Seconds between active health checks of remote versions' endpoints (docs/remote-models.md).
    endpoint_check_seconds: float = 2.0
    #: The cyclic collector's thresholds, applied once serving (actors/core/gc_policy.py).
    gc_thresholds: tuple[int, int, int] = DEFAULT_GC_THRESHOLDS


@attrs.frozen
class Running:
    """What ``serve`` reports once it listens: the base URLs (data plane: None when off) and the service."""

    url: str
    service: Service
    data_url: str | None = None


def load_initial_config(options: Options) -> tuple[RouterConfig, str, Path, AccessPolicy | None]:
    """Parse and fully validate the config (and its access file) before anything starts: fail fast."""
    path = options.config
    try:
        text = read_config_text(path)
        draft = parse_config(text)
        repository = resolve_repository(path, draft, options.models)
        config = parse_config(text, known_models=frozenset(list_repository(repository)))
        policy = read_configured_policy(path, config.access)
    except (ConfigError, AccessConfigError) as exc:
        lines = [f"  {d['path']}: {d['message']}" for d in exc.details]
        raise StartupError("\n".join([f"invalid config {path}: {exc.message}", *lines])) from exc
    except (OSError, UnicodeError, ValueError) as exc:
        raise StartupError(f"cannot read config {path}: {exc}") from exc
    return config, text, repository, policy


def preload_list(options: Options, config: RouterConfig) -> tuple[str, ...]:
    names = [config.settings.default_model, *config.settings.preload_models, *options.preload]
    return tuple(dict.fromkeys(names))


def state_path(options: Options) -> Path:
    """Where version state persists: ``--state-file``, else ``state/`` beside the config's folder."""
    if options.state_file is not None:
        return options.state_file
    return options.config.parent.parent / "state" / f"{options.config.stem}.state.json"


def atomic_folders(options: Options, config: RouterConfig, repository: Path) -> list[tuple[Path, int]]:
    """(folder, depth) of every folder written through actors/storage/atomic.py (swept at start)."""
    access_file, _ = config.access.resolve(options.config)
    folders = [(state_path(options).parent, 0), (options.config.parent, 0), (repository, 2)]
    return folders + ([(access_file.parent, 0)] if access_file is not None else [])


async def serve(options: Options, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
                ) -> None:
    config, text, repository, policy = load_initial_config(options)
    swept = await trio.to_thread.run_sync(sweep_temp_files, atomic_folders(options, config, repository))
    if swept:
        log.warning("removed %d temp file(s) left by interrupted writes (kill -9 mid-write)", swept)
    metrics = Metrics()
    state = RouterState.from_config(config)
    metrics.describe_rules(config)
    redis_url = options.redis_url or config.settings.redis_url
    transition_send, transition_recv = trio.open_memory_channel[Envelope[Any]](256)
    transitions = Transitions(transition_send, InFlight(metrics))
    cache_send, cache_recv = trio.open_memory_channel[Envelope[Any]](1024)
    cache = ModelCache(cache_send, excluded=transitions.excluded)
    reload_send, reload_recv = trio.open_memory_channel[Envelope[Any]](64)
    watcher = ConfigWatcher(options.config, reload_send)
    rules_source = options.rules_source or config.settings.rules_source
    if rules_source == "redis" and not redis_url:
        raise StartupError("rules_source redis needs a Redis URL (--redis-url or config.redis_url)")
    watcher.source = rules_store.source_for(rules_source, options.config, redis_url)
    trigger_send, trigger_recv = trio.open_memory_channel[Trigger](1024)
    feed = SwitchFeed(trigger_send, metrics, redis_url=redis_url)
    health_send, health_recv = trio.open_memory_channel[Any](8192)

    def breaker_changed(key: tuple[str, str], old: str, new: str) -> None:
        feed.trigger(f"breaker_{'open' if new == 'open' else 'closed' if new == 'closed' else 'half_open'}")
        transitions.breaker_changed(key, new)

    breakers, alerts = switching_limits(config.switching)
    health = HealthMonitor(health_send, metrics, BreakerBoard(breakers, metrics, breaker_changed,
                                                              clock=trio.current_time), alerts=alerts,
                           feedback_index=FeedbackIndex(config.switching.feedback_index_size))
    preload = preload_list(options, config)
    unknown = sorted(set(options.preload) - set(list_repository(repository)))
    if unknown:
        log.warning("PRELOAD_MODELS names models not in the repository: %s", ", ".join(unknown))

    async def execute(command: Command) -> Any:
        """Route an operator command to the actor that owns it."""
        if isinstance(command, ReloadConfig):
            return await watcher.reload(command.trigger)
        return await transitions.execute(command)

    outbox = disabled_outbox(metrics)
    control = ControlBus(outbox, execute)
    members = cluster.Cluster(options.replica_id or cluster.default_id(options.port, options.worker_index), dict)
    rollouts = rollout_leader.Rollouts(members)
    async with trio.open_nursery() as nursery:
        actors = lifecycle.ActorGroup(nursery)
        if redis_url:
            redis_send, redis_recv = trio.open_memory_channel[RedisMessage](4096)
            outbox = RedisOutbox(redis_send, metrics, BusState())
            control = ControlBus(outbox, execute, enabled=True)
            await actors.start("redis_bus", partial(redis_bus.run, redis_url, redis_recv, metrics,
                                                    state=outbox.state))
            rollouts.bus = control
            await actors.start("rollout_leader", partial(rollout_leader.run, rollouts, redis_url))
        elif options.workers > 1:
            log.warning("%d workers without Redis: operator commands reach only the worker that takes them",
                        options.workers)
        # The registry state is restored first, so the cache never preloads a version that
        # was deregistered, and loads the version a plan pins rather than the newest.
        await actors.start("transition_manager", partial(
            transition_manager.run, transitions, transition_recv, cache, health, feed, metrics,
            repository=repository, state_path=state_path(options),
            thresholds=lambda name: state.config.threshold_for(name),
            routed_by=lambda name: state.config.routes_to(name),
            on_auto_rollback=lambda op: control.automatic(RollbackOperation(op.id, op.reason or "rolled back")),
            rollouts=rollouts))
        limits = cache_limits(config.settings.max_cached_models, config.settings.model_cache_mb)
        await actors.start("model_cache", partial(
            model_cache.run, repository, limits, metrics, cache, cache_recv,
            pinned=lambda: frozenset({state.config.settings.default_model, *preload}),
            pinned_versions=transitions.pinned_versions, excluded=transitions.excluded, preload=preload,
            ttl_seconds=lambda: float(state.config.settings.cache_ttl_seconds),
            preferred=lambda name: plan.stable if (plan := transitions.plan(name)) is not None else None))
        await actors.start("health_monitor", partial(health_monitor.run, health, health_recv))
        batcher = None
        if options.batch_max_size > 1:
            batcher = Batcher(BatchSettings(options.batch_max_size, options.batch_delay_us,
                                            options.batch_min_call_us), metrics)
        remote = RemoteCaller(metrics, check_seconds=options.endpoint_check_seconds)
        await actors.start("endpoint_health", partial(endpoint_health.run, remote, cache))
        predictor = Predictor(state, cache, metrics, transitions, health, feed, batcher, render_error=item_body,
                              remote=remote)
        await actors.start("switch_feed", partial(switch_feed.run, feed, trigger_recv, outbox,
                                                  predictor.serving_for))
        update_send, update_recv = trio.open_memory_channel[ConfigUpdate](0)
        await actors.start("router", partial(router.run, state, update_recv, metrics,
                                             listeners=(health.rules_applied, cache.rules_applied,
                                                        feed.rules_applied)))
        gate = await start_access(actors, config_path=options.config, config=config, policy=policy, metrics=metrics,
                                  outbox=outbox, redis_url=redis_url, admin_key=options.admin_key,
                                  state_folder=state_path(options).parent, host=options.host)
        control.audit = gate.auditor.command
        watcher.access_loader = lambda new: read_configured_policy(options.config, new.access)
        watcher.access_apply = lambda new, loaded: gate.apply(loaded, new.access.cors_origins)
        watcher.on_event = partial(gate.auditor.reload_event, options.config)
        await actors.start("config_watcher", partial(
            config_watcher.run, watcher, reload_recv, state, update_send, outbox, metrics,
            repository=repository, initial_text=text))
        rules = rules_store.RulesStore(watcher, state, repository, lambda command: control.announce(command))
        if rules_source == "redis":
            await actors.start("rules_store", partial(rules_store.run, rules, text))
        service = Service(WebSettings(options.admin_key, options.worker_index), metrics, state, cache, watcher,
                          outbox, predictor, repository, transitions, health, feed, control, gate, rules, members,
                          rollouts)
        members.describe = partial(replica_report, service)
        metrics.track_readiness(lambda: not service.readiness())
        if control.enabled and redis_url:
            await actors.start("control_bus", partial(control_bus.run, control, redis_url,
                      cursor_path=control_bus.cursor_file(state_path(options), options.worker_index)))
        if options.handle_signals:
            nursery.start_soon(lifecycle.stop_on_signals, service.stop)
        http_done = trio.Event()
        http_config = hypercorn_config(options.host, options.port, shared_port=options.workers > 1,
                                       access_log=options.access_log, certfile=options.certfile,
                                       keyfile=options.keyfile)
        binds = await nursery.start(serve_main_port, service, http_config, http_done)
        url = binds[0]
        data_done, data_url = trio.Event(), None
        data_port = chosen_port(options.data_port, config.data_plane.port)
        if data_port:
            bound = await nursery.start(partial(
                serve_data_port, service, options.host, data_port, config.data_plane,
                reuse_port=options.workers > 1, main_port=url.rsplit(":", 1)[-1], done=data_done,
                tls=tls_context(options.certfile, options.keyfile) if options.certfile and options.keyfile else None))
            data_url = f"{url.split(':', 1)[0]}://{options.host}:{bound}"
        else:
            data_done.set()
        members.address = options.advertise_url or url
        if redis_url:
            await actors.start("cluster", partial(cluster.run, members, redis_url))
        log.info("model-router %s serving %s on %s%s (rules %s, %d rules, repository %s)",
                 SERVICE_VERSION, options.config, url, f", data plane on {data_url}" if data_url else "",
                 config.config_hash, len(config.rules), repository)
        lifecycle.settle_heap(options.gc_thresholds)
        task_status.started(Running(url, service, data_url))
        await service.stop.wait()
        # Both ports drain at once: Hypercorn returns once in-flight requests are answered
        # (bounded by graceful_timeout), the data plane once what it read is answered (bounded
        # by its drain deadline); only then do the actors stop, last started first.
        await http_done.wait()
        await data_done.wait()
        await actors.stop_all()
        nursery.cancel_scope.cancel()
    log.info("model-router stopped")


# ------------------------------------------------------------------- CLI ----


def parse_options(argv: list[str], environ: dict[str, str]) -> tuple[Options, str]:
    parser = argparse.ArgumentParser(prog="model-router", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=environ.get("MODEL_ROUTER_CONFIG", "conf/model_router_rules.yml"))
    parser.add_argument("--host", default=environ.get("MODEL_ROUTER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(environ.get("MODEL_ROUTER_PORT", "8000")))
    data_port = environ.get("MODEL_ROUTER_DATA_PORT")
    parser.add_argument("--data-port", type=int, default=int(data_port) if data_port else None,
                        help="the data plane for inference (env MODEL_ROUTER_DATA_PORT, config data_plane.port; "
                             f"default {DEFAULT_DATA_PORT}); 0 turns it off")
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
    parser.add_argument("--certfile", default=environ.get("MODEL_ROUTER_CERTFILE"),
                        help="TLS certificate (PEM) for both ports; needs --keyfile")
    parser.add_argument("--keyfile", default=environ.get("MODEL_ROUTER_KEYFILE"), help="TLS private key (PEM)")
    parser.add_argument("--rules-source", choices=("file", "redis"),
                        help="rules document: the file, or Redis (default: config.rules_source, else file)",
                        default=environ.get("MODEL_ROUTER_RULES_SOURCE") or None)
    parser.add_argument("--replica-id", default=environ.get("MODEL_ROUTER_REPLICA_ID"), help="id in GET /cluster")
    parser.add_argument("--advertise-url", default=environ.get("MODEL_ROUTER_ADVERTISE_URL"),
                        help="this replica's URL in GET /cluster")
    parser.add_argument("--log-level", default=environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument("--access-log", action="store_true")
    log_format = environ.get("MODEL_ROUTER_LOG_FORMAT", "").strip().lower() or "plain"
    parser.add_argument("--log-format", choices=lifecycle.LOG_FORMATS, default=log_format,
                        help="plain text, or one JSON object per line (env MODEL_ROUTER_LOG_FORMAT)")
    parser.add_argument("--gc-thresholds", type=lifecycle.gc_thresholds_option,
                        default=environ.get("MODEL_ROUTER_GC_THRESHOLDS", "default"),
                        help="young,middle,old or 'python' (env MODEL_ROUTER_GC_THRESHOLDS)")
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    if args.log_format not in lifecycle.LOG_FORMATS:  # argparse checks choices given as options, not defaults
        formats = ", ".join(lifecycle.LOG_FORMATS)
        parser.error(f"MODEL_ROUTER_LOG_FORMAT must be one of {formats}, not {args.log_format!r}")
    preload = tuple(n.strip() for n in environ.get("PRELOAD_MODELS", "").split(",") if n.strip())
    options = Options(
        config=Path(args.config).resolve(), host=args.host, port=args.port,
        models=Path(args.models).resolve() if args.models else None, redis_url=args.redis_url,
        admin_key=read_admin_key(environ), preload=preload, handle_signals=True,
        access_log=args.access_log, state_file=Path(args.state_file).resolve() if args.state_file else None,
        workers=max(1, args.workers), worker_index=args.worker_index,
        batch_max_size=args.batch_max_size, batch_delay_us=max(0.0, args.batch_delay_us),
        batch_min_call_us=max(0.0, args.batch_min_call_us), data_port=args.data_port, log_format=args.log_format,
        certfile=Path(args.certfile).resolve() if args.certfile else None,
        keyfile=Path(args.keyfile).resolve() if args.keyfile else None, rules_source=args.rules_source,
        replica_id=args.replica_id, advertise_url=args.advertise_url, gc_thresholds=args.gc_thresholds,
    )
    return options, args.log_level


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["keys"]:  # `app.py keys create|list|revoke ...` edits the access file
        return keys_main(arguments[1:])
    options, level = parse_options(arguments, dict(os.environ))
    lifecycle.configure_logging(level, options.log_format, options.worker_index)
    if options.workers > 1 and options.worker_index == 0:
        load_initial_config(options)  # fail fast, once, before starting anything
        command = [sys.executable, str(Path(__file__).resolve()), *arguments]
        return lifecycle.supervise_workers(command, options.workers, options.host, options.port)
    if options.admin_key is None:
        log.warning("no admin key set: without an access file, admin endpoints answer 403 "
                    "(set MODEL_ROUTER_ADMIN_KEY)")
    try:
        trio.run(serve, options)
    except StartupError as exc:
        print(f"model-router: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
