"""The config watcher actor: turns file edits, signals and API calls into safe reloads.

Every trigger — a file change seen by watchfiles, the reload signal (SIGHUP by
default), ``POST /config/reload``, or :meth:`ConfigWatcher.reload_config` — becomes a
:class:`ReloadCommand` on one channel, and one loop handles them in order, so two
reloads never race. A reload reads the file, parses and validates it (against the
models present in the repository), compiles a snapshot and hands it to the router;
only a config that passes every check replaces the rules in force. A missing,
unreadable or invalid file keeps the last good rules serving, is logged and recorded,
and the next change to the file is picked up as usual.

The access file named by the rules' ``access.file`` is part of the same reload: it is
read and validated together with the rules (and watched like them), and a reload puts
both in force or neither, so an invalid access file keeps the last good policy (and the
rules in force), and the history records why, with the path of every problem.

Each attempt is kept in a bounded history (``/stats``, ``/reload/events``) and, when a
Redis URL is configured, published on ``param.reload``.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import redis
import trio
import watchfiles

from actors import mailbox
from actors.core.access import AccessConfigError
from actors.core.commands import ReloadConfig
from actors.core.reload_history import ReloadEvent, ReloadHistory
from actors.core.rules import (
    ConfigError,
    ReloadSettings,
    RouterConfig,
    RoutingSnapshot,
    compile_snapshot,
    parse_config,
)
from actors.mailbox import Envelope, Mailbox, ask
from actors.redis_bus import RedisMessage, RedisOutbox
from actors.router import ConfigUpdate, RouterState
from actors.serving.metrics import Metrics
from actors.storage.config_files import write_backup
from actors.storage.model_repo import list_repository
from actors.storage.rules_sources import FileRules, RulesSource, text_version

log = logging.getLogger("model_router.config")

RELOAD_CHANNEL = "param.reload"
WATCH_STEP_MS = 5
WATCH_POLL_TIMEOUT_MS = 50


@attrs.define
class ConfigWatcher:
    """The handle: request reloads and read the history (rebound by the actor, never mutated)."""

    path: Path
    commands: Mailbox
    history: ReloadHistory = attrs.field(factory=ReloadHistory)
    attempts: int = 0
    # Where reloads read the rules (the file unless rules_source is redis), and the
    # version of the document in force (a digest for the file, the Redis counter else).
    source: RulesSource | None = None
    version: str = ""
    text: str = ""  # the document in force (a Redis source that lost it is re-seeded with it)
    _recorded: trio.Event = attrs.field(factory=trio.Event)
    #: Reads and validates the access file a config names (blocking; None: no access control);
    #: raises AccessConfigError or OSError. Unset: access files are not part of reloads.
    access_loader: Callable[[RouterConfig], Any] | None = None
    #: Puts a loaded access policy in force, once the rules of the same reload are.
    access_apply: Callable[[RouterConfig, Any], None] | None = None
    #: Told of every recorded attempt (the audit trail).
    on_event: Callable[[ReloadEvent], None] | None = None

    def access_path(self, config: RouterConfig) -> Path | None:
        """The access file ``config`` names, when access files are part of reloads."""
        return config.access.resolve(self.path)[0] if self.access_loader is not None else None

    @property
    def rules_source(self) -> RulesSource:
        return self.source if self.source is not None else FileRules(self.path)

    def note(self, event: ReloadEvent) -> None:
        """Called by the actor only: rebind the history and wake anyone waiting for an attempt."""
        self.history = self.history.record(event)
        self.attempts += 1
        self._recorded.set()
        self._recorded = trio.Event()

    async def wait_for_attempt(self, seen: int) -> ReloadEvent:
        """The newest attempt, once more than ``seen`` attempts have been recorded.

        Lets callers (tests, tooling) wait for a file-triggered reload without polling:
        read ``attempts``, change the file, then await this.
        """
        while self.attempts <= seen:
            await self._recorded.wait()
        return self.history.events[-1]

    async def reload(self, trigger: str = "call") -> ReloadEvent:
        """Reload now (after any reload already queued); the event says whether it took."""
        return await ask(self.commands, ReloadConfig(trigger))

    async def reload_config(self) -> bool:
        """Seed 000's programmatic reload: True when the new config is in force."""
        return (await self.reload("call")).success


def check_candidate(text: str, repository: Path, validate: bool) -> tuple[RouterConfig, RoutingSnapshot]:
    """The one validation every rules change goes through (reloads and API writes alike)."""
    known = frozenset(list_repository(repository)) if validate else None
    config = parse_config(text, known_models=known)
    return config, compile_snapshot(config)


@attrs.define
class _Watcher:
    """State owned by the actor task."""

    handle: ConfigWatcher
    router: RouterState
    updates: trio.MemorySendChannel[ConfigUpdate]
    outbox: RedisOutbox
    metrics: Metrics
    repository: Path
    last_good_text: str

    def load_candidate(self, validate: bool) -> tuple[str, str, RouterConfig, RoutingSnapshot, Any]:
        """Read, parse, validate and compile (blocking, pure CPU after the read); and the access file.

        Schema errors always reject; with ``reload.validation`` the models it names must
        also exist in the repository.
        """
        text, version = self.handle.rules_source.read()
        config, snapshot = check_candidate(text, self.repository, validate)
        loader = self.handle.access_loader
        policy = loader(config) if loader is not None else None
        return text, version, config, snapshot, policy

    async def attempt(self, trigger: str) -> ReloadEvent:
        started = time.perf_counter()
        validate = self.router.config.reload.validation
        try:
            text, version, config, snapshot, policy = await trio.to_thread.run_sync(self.load_candidate, validate)
        except ConfigError as exc:
            return self.failed(trigger, started, exc.message, tuple(exc.details))
        except AccessConfigError as exc:
            where = self.handle.access_path(self.router.config)
            shown = where.name if where else "access.file"
            return self.failed(trigger, started, f"{exc.message} (access file; the last good policy stays)",
                               tuple({**d, "file": shown} for d in exc.details))
        except (OSError, redis.RedisError) as exc:
            # Events reach /stats, /reload/events and Redis: name the file relative to its folder,
            # never by the server's absolute path (which str(exc) would repeat).
            where = self.handle.path.name if self.handle.rules_source.kind == "file" else "redis"
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
            return self.failed(trigger, started, f"cannot read {where}: {reason}", ())
        except (UnicodeError, ValueError) as exc:
            return self.failed(trigger, started, f"cannot read {self.handle.path.name}: {exc}", ())
        update = ConfigUpdate(config, snapshot, started)
        previous = self.router.config
        await self.updates.send(update)
        await update.applied.wait()
        if self.handle.access_apply is not None:
            self.handle.access_apply(config, policy)
        self.handle.version, self.handle.text = version, text
        latency_ms = (time.perf_counter() - started) * 1000
        event = ReloadEvent(time.time(), True, config.config_hash, len(config.rules), latency_ms,
                            trigger, warnings=config.warnings)
        for warning in config.warnings:
            log.warning("config %s: %s", config.config_hash, warning)
        self.note_restart_only_changes(previous, config)
        if config.reload.backup_on_reload and previous.config_hash != config.config_hash:
            await self.backup(self.last_good_text, previous.config_hash, config.reload.backup_count)
        self.last_good_text = text
        log.info("reload (%s) ok: %s, %d rules, %.2f ms", trigger, config.config_hash,
                 len(config.rules), latency_ms)
        return event

    async def reload(self, command: ReloadConfig) -> ReloadEvent:
        """One attempt, recorded and published whatever its outcome."""
        event = await self.attempt(command.trigger)
        self.record(event)
        return event

    def failed(self, trigger: str, started: float, error: str, details: tuple) -> ReloadEvent:
        latency_ms = (time.perf_counter() - started) * 1000
        log.error("reload (%s) rejected, keeping %s: %s %s", trigger, self.router.config.config_hash,
                  error, list(details) if details else "")
        return ReloadEvent(time.time(), False, self.router.config.config_hash,
                           len(self.router.config.rules), latency_ms, trigger, error, details)

    def note_restart_only_changes(self, old: RouterConfig, new: RouterConfig) -> None:
        for field in ("redis_url", "model_repository", "max_cached_models", "model_cache_mb"):
            if getattr(old.settings, field) != getattr(new.settings, field):
                log.warning("config.%s changed; it takes effect at the next restart", field)

    async def backup(self, text: str, config_hash: str, keep: int) -> None:
        folder = self.handle.path.parent / "backups"
        try:
            await trio.to_thread.run_sync(write_backup, folder, self.handle.path.stem, text, config_hash, keep)
        except OSError as exc:
            log.warning("could not write config backup to %s: %s", folder, exc)

    def record(self, event: ReloadEvent) -> None:
        self.handle.note(event)
        if self.handle.on_event is not None:
            self.handle.on_event(event)
        self.metrics.reload_duration_ms.observe(event.latency_ms)
        self.metrics.reloads_total.labels(result="success" if event.success else "failure").inc()
        self.outbox.offer(RedisMessage("publish", RELOAD_CHANNEL, event.to_pubsub()))




def _file_stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def _watch_file(path: Path, settings: ReloadSettings,
                      commands: Mailbox,
                      *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Send a reload per settled change of ``path``, at most one per ``debounce_ms``.

    The folder is watched (not the file) so atomic saves (write temp + rename), deletion
    and re-creation are all seen. A change that leaves inode, size and mtime as they
    were at the last attempt is skipped. Reports started once the watch is established
    (its first poll came back), so an edit made right after start-up is never missed.
    """
    debounce_s = settings.debounce_ms / 1000
    last_stat = _file_stat(path)
    last_reload = -math.inf
    name = path.name
    started = False

    def only_config(_change: watchfiles.Change, changed: str) -> bool:
        return Path(changed).name == name

    while True:
        try:
            async for changes in watchfiles.awatch(
                path.parent, watch_filter=only_config, debounce=max(settings.debounce_ms, 10),
                step=WATCH_STEP_MS, rust_timeout=WATCH_POLL_TIMEOUT_MS, yield_on_timeout=True,
                recursive=False,
            ):
                if not started:
                    started = True
                    task_status.started()
                if not changes:
                    continue
                wait = last_reload + debounce_s - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
                stat = _file_stat(path)
                if stat == last_stat:
                    continue
                last_stat = stat
                last_reload = trio.current_time()
                await ask(commands, ReloadConfig("file"))
        except (OSError, RuntimeError) as exc:
            if not started:
                started = True
                task_status.started()
            log.warning("watching %s failed (%s); retrying in 1 s", path.parent, exc)
            await trio.sleep(1.0)


RELOAD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


async def _watch_signals(router: RouterState, commands: Mailbox,
                         *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """One receiver for every signal ``reload.signal`` may name, for the whole run.

    Installed once and never swapped, so there is no moment when the configured signal
    falls back to its default action (terminating the process). Signals other than the
    configured one are logged and ignored.
    """
    with trio.open_signal_receiver(*RELOAD_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            wanted = router.config.reload.signal
            if signal.Signals(signum).name == wanted:
                await commands.send(Envelope(ReloadConfig("signal")))
            else:
                log.warning("ignoring %s: the reload signal is %s", signal.Signals(signum).name, wanted)


async def _run_triggers(path: Path, settings: ReloadSettings,
                        commands: Mailbox, access_path: Path | None = None,
                        *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            if settings.enabled:
                await nursery.start(_watch_file, path, settings, commands)
                if access_path is not None:
                    await nursery.start(_watch_file, access_path, settings, commands)
            task_status.started(scope)
            await trio.sleep_forever()


async def run(
    handle: ConfigWatcher,
    commands: trio.MemoryReceiveChannel[Envelope[ReloadConfig]],
    router: RouterState,
    updates: trio.MemorySendChannel[ConfigUpdate],
    outbox: RedisOutbox,
    metrics: Metrics,
    *,
    repository: Path,
    initial_text: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Handle reload commands in order; restart the triggers when ``reload:`` settings change.

    The config already in force at start (loaded by the composition root) is recorded as
    the first event, trigger "startup".
    """
    watcher = _Watcher(handle, router, updates, outbox, metrics, repository, initial_text)
    handle.version = handle.version or text_version(initial_text)
    handle.text = handle.text or initial_text
    config = router.config
    watcher.record(ReloadEvent(time.time(), True, config.config_hash, len(config.rules), 0.0,
                               "startup", warnings=config.warnings))
    async with updates, commands, trio.open_nursery() as nursery:
        settings = config.reload
        access_path = handle.access_path(config)
        await nursery.start(_watch_signals, router, handle.commands)
        triggers = await nursery.start(_run_triggers, handle.path, settings, handle.commands, access_path)
        task_status.started()
        async for envelope in commands:
            await mailbox.handle("config_watcher", envelope, watcher.reload)
            current = router.config.reload
            current_access = handle.access_path(router.config)
            if ((current.enabled, current.debounce_ms) != (settings.enabled, settings.debounce_ms)
                    or current_access != access_path):
                triggers.cancel()
                triggers = await nursery.start(_run_triggers, handle.path, current, handle.commands, current_access)
            settings, access_path = current, current_access
        nursery.cancel_scope.cancel()
