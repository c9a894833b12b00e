"""model-router: the actors, and the packages they are thin loops around.

Layout (read top to bottom; each layer imports only the ones below it):

    app.py               options, main(), the worker supervisor, serve(): wiring only
    actors/web/          HTTP and WebSocket: routes by resource, the hot path, views,
                         and the one place that maps domain errors to HTTP statuses
    actors/<actor>.py    the actors, each ``async def run(..., *, task_status)`` started
                         with ``nursery.start``, plus the handle others hold:
                           config_watcher      file/signal/API reloads, one at a time
                           router              owns the rules snapshot requests read
                           model_cache         loads TFLite models off the loop, LRU
                           transition_manager  versions, switch operations, plans
                           health_monitor      windows, breakers, feedback
                           endpoint_health     remote versions' HTTP client, endpoint checks
                           switch_feed         switch events to Redis and WebSockets
                           redis_bus           the one Redis connection, buffered
                           control_bus         operator commands mirrored to workers
                           data_plane          the inference port: a Trio-native HTTP/1.1 server
                           budget              daily prediction budgets, leased from Redis
                           usage_flusher       usage counts persisted every few seconds
                           control_bus         operator commands on a Redis stream, replayed
                           cluster             heartbeats and the live replicas (GET /cluster)
                           rules_store         the rules as versioned data (file or Redis)
                           rollout_leader      one leader per rollout: lease, fencing, gate
    actors/mailbox.py    ask()/tell() and the supervision rule every actor follows
    actors/lifecycle.py  start actors in order, stop them in reverse
    actors/serving/      the request path both ports share: predictor, batcher, metrics
    actors/storage/      blocking I/O: model repository, TFLite backend, registry and
                         config files (callers run it in worker threads)
    actors/core/         pure logic, no trio, no I/O, no clock: rules, features,
                         assignment, switch policy, versions, breaker, statistics,
                         commands, domain errors
    actors/build/        build-only tools (demo models, TFLite writer); never imported
                         by the service

Each actor's ``run`` and handle are re-exported here by name (``actors.ModelCache``,
``actors.run_model_cache``). They resolve on first use, so importing the pure core or
the build tools does not start pulling in trio, Redis or the TFLite runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, str]] = {
    "ConfigWatcher": ("actors.config_watcher", "ConfigWatcher"),
    "run_config_watcher": ("actors.config_watcher", "run"),
    "RouterState": ("actors.router", "RouterState"),
    "run_router": ("actors.router", "run"),
    "ModelCache": ("actors.model_cache", "ModelCache"),
    "run_model_cache": ("actors.model_cache", "run"),
    "Transitions": ("actors.transition_manager", "Transitions"),
    "run_transition_manager": ("actors.transition_manager", "run"),
    "HealthMonitor": ("actors.health_monitor", "HealthMonitor"),
    "run_health_monitor": ("actors.health_monitor", "run"),
    "run_endpoint_health": ("actors.endpoint_health", "run"),
    "SwitchFeed": ("actors.switch_feed", "SwitchFeed"),
    "run_switch_feed": ("actors.switch_feed", "run"),
    "RedisOutbox": ("actors.redis_bus", "RedisOutbox"),
    "run_redis_bus": ("actors.redis_bus", "run"),
    "ControlBus": ("actors.control_bus", "ControlBus"),
    "run_control_bus": ("actors.control_bus", "run"),
    "run_data_plane": ("actors.data_plane", "run"),
    "BudgetActor": ("actors.budget", "BudgetActor"),
    "run_budget": ("actors.budget", "run"),
    "run_usage_flusher": ("actors.usage_flusher", "run"),
    "Cluster": ("actors.cluster", "Cluster"),
    "run_cluster": ("actors.cluster", "run"),
    "RulesStore": ("actors.rules_store", "RulesStore"),
    "run_rules_store": ("actors.rules_store", "run"),
    "Rollouts": ("actors.rollout_leader", "Rollouts"),
    "run_rollout_leader": ("actors.rollout_leader", "run"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'actors' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
