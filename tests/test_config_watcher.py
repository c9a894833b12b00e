"""The config watcher: safe hot reloads from file edits and calls, backups, ``param.reload`` notices.

Pure helpers are tested directly; the actor runs in-process together with the real router
actor (and, for the Redis test, the real Redis bus actor). Waiting is event-driven through
``ConfigWatcher.wait_for_attempt`` under ``trio.fail_after``.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import trio
import trio.testing

from actors import config_watcher, redis_bus, router
from actors.config_watcher import ConfigWatcher
from actors.core.reload_history import ReloadEvent
from actors.core.rules import RouterConfig, parse_config
from actors.mailbox import Envelope
from actors.redis_bus import RedisMessage, RedisOutbox, disabled_outbox
from actors.router import ConfigUpdate, RouterState
from actors.serving.metrics import Metrics
from actors.storage.model_repo import list_repository
from tests.conftest import RedisServer, Subscriber, render_config

SEED_KEYS = {"component", "timestamp", "config_hash", "rules_count", "latency_ms", "success"}
NO_WATCH = "    enabled: false\n"
ONE_RULE = textwrap.dedent("""\
    - match: {asset_class: "fx", horizon_ms: "<1000"}
      model: fast
      priority: 1
    """)


def hash_of(text: str) -> str:
    return parse_config(text).config_hash


# ------------------------------------------------------------------ pure helpers ----


@attrs.define
class Watching:
    handle: ConfigWatcher
    state: RouterState
    metrics: Metrics
    applied: list[RouterConfig]


@asynccontextmanager
async def running_watcher(config_path: Path, repo: Path, *, redis_url: str | None = None
                          ) -> AsyncIterator[Watching]:
    """Router + config watcher (+ Redis bus) started in dependency order, as ``app.serve`` does."""
    text = config_path.read_text()
    config = parse_config(text, known_models=frozenset(list_repository(repo)))
    metrics = Metrics()
    state = RouterState.from_config(config)
    update_send, update_recv = trio.open_memory_channel[ConfigUpdate](0)
    command_send, command_recv = trio.open_memory_channel[Envelope](64)
    handle = ConfigWatcher(config_path, command_send)
    applied: list[RouterConfig] = []
    async with trio.open_nursery() as nursery:
        outbox = disabled_outbox(metrics)
        if redis_url is not None:
            redis_send, redis_recv = trio.open_memory_channel[RedisMessage](64)
            outbox = RedisOutbox(redis_send, metrics)
            await nursery.start(partial(redis_bus.run, redis_url, redis_recv, metrics))
        await nursery.start(partial(router.run, state, update_recv, metrics,
                                    listeners=(lambda config, _started: applied.append(config),)))
        await nursery.start(partial(
            config_watcher.run, handle, command_recv, state, update_send, outbox, metrics,
            repository=repo, initial_text=text))
        await trio.testing.wait_all_tasks_blocked()  # the file watcher is armed
        yield Watching(handle, state, metrics, applied)
        nursery.cancel_scope.cancel()


async def wait_for(handle: ConfigWatcher, seen: int, *, success: bool, config_hash: str | None = None
                   ) -> ReloadEvent:
    """The first attempt after ``seen`` with the wanted outcome (a save may cause several events)."""
    with trio.fail_after(2):
        while True:
            event = await handle.wait_for_attempt(seen)
            seen = handle.attempts
            if event.success == success and (config_hash is None or event.config_hash == config_hash):
                return event


async def test_startup_is_recorded(config_path: Path, repo: Path) -> None:
    """The config in force at start is the first history event (trigger "startup")."""
    async with running_watcher(config_path, repo) as w:
        assert w.handle.attempts == 1
        event = w.handle.history.events[0]
        assert event.trigger == "startup" and event.success
        assert event.config_hash == hash_of(config_path.read_text())
        assert event.rules_count == 2


async def test_file_edit_triggers_reload(config_path: Path, repo: Path) -> None:
    """Editing the file in place puts the new rules in force and records a "file" attempt."""
    async with running_watcher(config_path, repo) as w:
        seen = w.handle.attempts
        new_text = render_config(repo, rules=ONE_RULE, default="fast")
        config_path.write_text(new_text)
        event = await wait_for(w.handle, seen, success=True, config_hash=hash_of(new_text))
        assert event.trigger == "file" and event.rules_count == 1
        assert w.state.config.config_hash == hash_of(new_text)
        assert w.state.select("fx", 10).model == "fast"
        assert w.state.active.generation >= 2
        assert w.applied and w.applied[-1].config_hash == hash_of(new_text)
        success = w.metrics.registry.get_sample_value("model_router_reloads_total", {"result": "success"})
        assert success is not None and success >= 1


async def test_atomic_save_triggers_reload(config_path: Path, repo: Path) -> None:
    """Write-temp-then-rename (as editors and deploy tools do) is seen and reloaded."""
    async with running_watcher(config_path, repo) as w:
        seen = w.handle.attempts
        new_text = render_config(repo, default="fast")
        tmp = config_path.parent / ".rules.yml.swp"
        tmp.write_text(new_text)
        os.replace(tmp, config_path)
        event = await wait_for(w.handle, seen, success=True, config_hash=hash_of(new_text))
        assert event.trigger == "file"
        assert w.state.config.settings.default_model == "fast"


async def test_invalid_edit_is_rejected_and_old_rules_keep_serving(config_path: Path, repo: Path) -> None:
    """A config naming an unknown model is rejected with details; the previous hash stays in force."""
    original = hash_of(config_path.read_text())
    async with running_watcher(config_path, repo) as w:
        seen = w.handle.attempts
        config_path.write_text(render_config(repo, default="ghost_model"))
        event = await wait_for(w.handle, seen, success=False)
        assert event.error and event.details
        assert any("ghost_model" in d["message"] for d in event.details)
        assert event.config_hash == original
        assert w.state.config.config_hash == original
        assert w.state.active.generation == 1
        assert w.applied == []
        failures = w.metrics.registry.get_sample_value("model_router_reloads_total", {"result": "failure"})
        assert failures is not None and failures >= 1
        seen = w.handle.attempts
        fixed = render_config(repo, default="fast")
        config_path.write_text(fixed)
        await wait_for(w.handle, seen, success=True, config_hash=hash_of(fixed))


async def test_broken_yaml_is_rejected(config_path: Path, repo: Path) -> None:
    """Unparseable YAML is rejected without touching the rules in force."""
    original = hash_of(config_path.read_text())
    async with running_watcher(config_path, repo) as w:
        seen = w.handle.attempts
        config_path.write_text("model_router: [unclosed\n")
        event = await wait_for(w.handle, seen, success=False)
        assert "YAML" in event.details[0]["message"]
        assert w.state.config.config_hash == original


async def test_deleted_file_fails_then_recreation_reloads(config_path: Path, repo: Path) -> None:
    """Deleting the file records a read failure; creating it again is reloaded."""
    original = hash_of(config_path.read_text())
    async with running_watcher(config_path, repo) as w:
        seen = w.handle.attempts
        config_path.unlink()
        event = await wait_for(w.handle, seen, success=False)
        assert "cannot read" in (event.error or "")
        assert w.state.config.config_hash == original
        seen = w.handle.attempts
        new_text = render_config(repo, default="fast")
        config_path.write_text(new_text)
        await wait_for(w.handle, seen, success=True, config_hash=hash_of(new_text))
        assert w.state.config.config_hash == hash_of(new_text)


async def test_reload_config_returns_true_and_false(config_path: Path, repo: Path) -> None:
    """``reload_config()`` is True when the file's config is now in force, False when rejected."""
    config_path.write_text(render_config(repo, reload=NO_WATCH))
    async with running_watcher(config_path, repo) as w:
        good = render_config(repo, default="fast", reload=NO_WATCH)
        config_path.write_text(good)
        with trio.fail_after(2):
            assert await w.handle.reload_config() is True
        assert w.state.config.config_hash == hash_of(good)
        assert w.handle.history.events[-1].trigger == "call"
        config_path.write_text("model_router:\n  rules: 5\n")
        with trio.fail_after(2):
            assert await w.handle.reload_config() is False
        assert w.state.config.config_hash == hash_of(good)
        assert w.handle.attempts == 3
        stats = w.handle.history.stats(len(w.state.config.rules))
        assert stats["load_count"] == 2  # startup + one good reload


async def test_backups_written_on_successful_changes(config_path: Path, repo: Path) -> None:
    """Each successful change backs up the previous good file; same-hash and failed reloads do not."""
    first = render_config(repo, reload=NO_WATCH)
    config_path.write_text(first)
    backups = config_path.parent / "backups"
    async with running_watcher(config_path, repo) as w:
        with trio.fail_after(2):
            config_path.write_text(first + "# a comment keeps the hash\n")
            assert await w.handle.reload_config()
            assert not backups.exists()
            config_path.write_text("not: [valid\n")
            assert not await w.handle.reload_config()
            assert not backups.exists()
            second = render_config(repo, default="fast", reload=NO_WATCH)
            config_path.write_text(second)
            assert await w.handle.reload_config()
        files = list(backups.iterdir())
        assert len(files) == 1
        assert files[0].name.startswith("rules.") and files[0].name.endswith(f".{hash_of(first)}.yml")
        assert files[0].read_text() == first + "# a comment keeps the hash\n"


async def test_no_backup_when_disabled(config_path: Path, repo: Path) -> None:
    """``backup_on_reload: false`` writes no backups."""
    off = NO_WATCH + "    backup_on_reload: false\n"
    config_path.write_text(render_config(repo, reload=off))
    async with running_watcher(config_path, repo) as w:
        config_path.write_text(render_config(repo, default="fast", reload=off))
        with trio.fail_after(2):
            assert await w.handle.reload_config()
    assert not (config_path.parent / "backups").exists()


async def test_param_reload_published_with_seed_fields(
        config_path: Path, repo: Path, redis_server: RedisServer) -> None:
    """``param.reload`` carries exactly the seed fields (plus ``error`` on failure) to a real subscriber."""
    config_path.write_text(render_config(repo, reload=NO_WATCH))
    subscriber = Subscriber(redis_server, "param.reload")
    try:
        async with running_watcher(config_path, repo, redis_url=redis_server.url) as w:
            startup = await subscriber.next_json()
            assert set(startup) == SEED_KEYS
            assert startup["success"] is True and startup["component"] == "router"
            assert startup["config_hash"] == w.state.config.config_hash
            assert startup["rules_count"] == 2

            good = render_config(repo, rules=ONE_RULE, reload=NO_WATCH)
            config_path.write_text(good)
            with trio.fail_after(2):
                assert await w.handle.reload_config()
            ok = await subscriber.next_json()
            assert set(ok) == SEED_KEYS
            assert ok["config_hash"] == hash_of(good) and ok["rules_count"] == 1
            assert isinstance(ok["latency_ms"], float) and ok["latency_ms"] >= 0

            config_path.write_text(render_config(repo, default="ghost", reload=NO_WATCH))
            with trio.fail_after(2):
                assert not await w.handle.reload_config()
            failed = await subscriber.next_json()
            assert set(failed) == SEED_KEYS | {"error"}
            assert failed["success"] is False and failed["error"]
            assert failed["config_hash"] == hash_of(good)
    finally:
        subscriber.close()
