"""The router actor: owns the active routing snapshot and swaps it on reload.

Request handlers call :meth:`RouterState.select` — one attribute read of an immutable
:class:`ActiveRules` plus a memoised lookup inside the snapshot: no lock, no await. The
actor is the only writer: it receives :class:`ConfigUpdate` messages from the config
watcher, rebinds ``state.active`` in a single assignment (so a handler sees either the
old or the new rules, never a mix), and confirms through the update's event so the
watcher can measure reload latency up to the moment the new rules serve.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import attrs
import trio

from actors.core.rules import RouterConfig, RoutingSnapshot, Selection, compile_snapshot
from actors.serving.metrics import Metrics

log = logging.getLogger("model_router.router")


@attrs.frozen
class ActiveRules:
    """The rules in force: config, compiled snapshot, and when they took effect."""

    config: RouterConfig
    snapshot: RoutingSnapshot
    generation: int
    activated_at: float


@attrs.frozen(eq=False)
class ConfigUpdate:
    """A validated config for the router to put in force; ``applied`` is set once it serves."""

    config: RouterConfig
    snapshot: RoutingSnapshot
    started_at: float = 0.0  # perf_counter when the reload began, for switch-event latency
    applied: trio.Event = attrs.field(factory=trio.Event)


# Told (synchronously, without waiting) each time new rules are in force: the owners of
# state that follows the rules (breaker limits, the default model, the switch feed) get
# a message and apply it themselves.
Listener = Callable[[RouterConfig, float], None]


@attrs.define
class RouterState:
    """The handle shared with request handlers; ``active`` is rebound, never mutated."""

    active: ActiveRules

    @classmethod
    def from_config(cls, config: RouterConfig) -> RouterState:
        return cls(ActiveRules(config, compile_snapshot(config), 1, time.time()))

    def select(self, asset_class: str, horizon_ms: float, symbol: str | None = None) -> Selection:
        return self.active.snapshot.select(asset_class, horizon_ms, symbol)

    @property
    def config(self) -> RouterConfig:
        return self.active.config


def apply(state: RouterState, update: ConfigUpdate, metrics: Metrics) -> ActiveRules:
    """Put ``update`` in force with one rebinding; forget gauges of the old rules."""
    previous = state.active
    state.active = ActiveRules(update.config, update.snapshot, previous.generation + 1, time.time())
    metrics.active_model.clear()
    metrics.describe_rules(update.config)
    if previous.config.config_hash != update.config.config_hash:
        log.info("rules %s -> %s (%d rules, generation %d)", previous.config.config_hash,
                 update.config.config_hash, len(update.config.rules), state.active.generation)
    return state.active


async def run(
    state: RouterState,
    updates: trio.MemoryReceiveChannel[ConfigUpdate],
    metrics: Metrics,
    *,
    listeners: Sequence[Listener] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply updates in arrival order, then tell the listeners, until the channel closes."""
    async with updates:
        task_status.started()
        async for update in updates:
            apply(state, update, metrics)
            update.applied.set()
            for listener in listeners:
                try:
                    listener(update.config, update.started_at)
                except Exception as exc:  # supervision: a listener's bug never stops routing
                    log.error("a rules listener failed", exc_info=exc)
