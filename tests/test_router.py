"""The router actor: one immutable snapshot rebound per update, never mutated (actors/router.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trio

from actors import router
from actors.core.rules import RouterConfig, compile_snapshot, parse_config
from actors.router import ActiveRules, ConfigUpdate, RouterState
from actors.serving.metrics import Metrics
from tests.conftest import render_config

SHORT_TO_BACKUP = textwrap.dedent("""\
    - match: {asset_class: "crypto", horizon_ms: "<60000"}
      model: backup
      priority: 10
    """)


def config(rules: str | None = None, default: str = "backup") -> RouterConfig:
    return parse_config(render_config(Path("/nonexistent/models"), rules=rules, default=default))


def update_for(cfg: RouterConfig) -> ConfigUpdate:
    return ConfigUpdate(cfg, compile_snapshot(cfg))


def test_from_config_is_generation_one() -> None:
    """The initial state serves the given config as generation 1, with a compiled snapshot."""
    cfg = config()
    state = RouterState.from_config(cfg)
    assert state.active.generation == 1
    assert state.config is cfg
    assert state.active.snapshot.config is cfg
    assert state.active.activated_at > 0


def test_select_uses_the_active_snapshot() -> None:
    """``select`` routes with the rules in force, and unmatched requests go to the default."""
    state = RouterState.from_config(config())
    assert state.select("crypto", 1000).model == "fast"
    assert state.select("crypto", 120_000).model == "windowed"
    unmatched = state.select("equity", 10)
    assert unmatched.model == "backup" and unmatched.rule_index is None


def test_apply_rebinds_without_mutating_the_old_snapshot() -> None:
    """A reference taken before ``apply`` keeps seeing the old rules; the state sees the new ones."""
    metrics = Metrics()
    old_cfg, new_cfg = config(), config(SHORT_TO_BACKUP, default="fast")
    state = RouterState.from_config(old_cfg)
    before = state.active
    applied = router.apply(state, update_for(new_cfg), metrics)
    assert applied is state.active and applied is not before
    assert before.config is old_cfg and before.generation == 1
    assert before.snapshot.select("crypto", 1000).model == "fast"
    assert state.select("crypto", 1000).model == "backup"
    assert state.select("equity", 1).model == "fast"
    assert state.config.config_hash == new_cfg.config_hash != old_cfg.config_hash


def test_generation_increments_per_apply_even_for_same_hash() -> None:
    """Each applied update is a new generation, including a re-apply of identical content."""
    metrics = Metrics()
    cfg = config()
    state = RouterState.from_config(cfg)
    for expected in (2, 3, 4):
        active = router.apply(state, update_for(cfg), metrics)
        assert isinstance(active, ActiveRules)
        assert active.generation == expected


def test_apply_clears_active_model_gauges() -> None:
    """Gauges describing the old rules are forgotten on apply."""
    metrics = Metrics()
    metrics.active_model.labels(asset_class="crypto", horizon_bucket="b", model="fast").set(1)
    state = RouterState.from_config(config())
    router.apply(state, update_for(config(SHORT_TO_BACKUP)), metrics)
    assert b"model_router_active_model{" not in metrics.exposition()[0]


async def test_run_applies_updates_from_channel_and_sets_applied() -> None:
    """The actor applies each ``ConfigUpdate`` in order and sets ``applied`` once it serves."""
    metrics = Metrics()
    state = RouterState.from_config(config())
    send, recv = trio.open_memory_channel[ConfigUpdate](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run, state, recv, metrics)
        first = update_for(config(SHORT_TO_BACKUP))
        second = update_for(config(default="fast"))
        assert not first.applied.is_set()
        with trio.fail_after(2):
            await send.send(first)
            await first.applied.wait()
        assert state.active.generation == 2
        assert state.select("crypto", 1000).model == "backup"
        with trio.fail_after(2):
            await send.send(second)
            await second.applied.wait()
        assert state.active.generation == 3
        assert state.config is second.config
        assert state.select("equity", 1).model == "fast"
        await send.aclose()  # the actor returns when the channel closes


async def test_run_closes_receive_channel_on_exit() -> None:
    """After the actor exits its receive end is closed, so senders see BrokenResourceError."""
    state = RouterState.from_config(config())
    send, recv = trio.open_memory_channel[ConfigUpdate](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run, state, recv, Metrics())
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(update_for(config()))
