"""The rules store actor: the rules as shared, versioned data, and the edits the rules API makes.

``rules_source: file`` (the default) keeps the document in the config file; ``redis``
keeps it in one Redis hash with a version every write increments, shared by all
replicas. Every write — a whole document, an added, patched or deleted rule, an import —
is validated exactly like a reload (schema, and the models named must be in the
repository) before anything is written, then stored with a compare-and-set on the
version the editor read (412 when stale), then put in force through the command stream
(a ``ReloadConfig`` every replica applies by reading the newest document).

With Redis as the source the actor also makes sure each replica serves the newest
version: at start it seeds Redis with the file's document if Redis has none, then
applies Redis's document before reporting ready; afterwards it checks the version every
``POLL_S`` as a backstop for a write it did not hear about.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import redis
import trio

from actors.config_watcher import ConfigWatcher, check_candidate
from actors.core import rules_doc
from actors.core.commands import Command, ReloadConfig
from actors.core.errors import InvalidInput, StaleVersion, Unavailable
from actors.core.rules import ConfigError, RouterConfig
from actors.router import RouterState
from actors.storage.rules_sources import FileRules, RedisRules, RulesSource, StaleWrite

log = logging.getLogger("model_router.rules_store")

POLL_S = 1.0
EDIT_RETRIES = 5

Edit = Callable[[dict[str, Any]], dict[str, Any]]


@attrs.define
class RulesStore:
    """The handle the rules API holds."""

    watcher: ConfigWatcher
    router: RouterState
    repository: Path
    submit: Callable[[Command], Awaitable[Any]]

    @property
    def source(self) -> RulesSource:
        return self.watcher.rules_source

    @property
    def version(self) -> str:
        """The version of the document in force on this replica."""
        return self.watcher.version

    async def read(self) -> tuple[str, str]:
        """The stored document and its version (the newest, which may not be in force yet)."""
        try:
            return await trio.to_thread.run_sync(self.source.read)
        except (OSError, redis.RedisError) as exc:
            raise Unavailable("rules_unavailable", f"cannot read the rules document: {exc}",
                              {"source": self.source.kind}) from exc

    async def check(self, text: str) -> RouterConfig:
        """The same validation as a reload; InvalidInput lists every problem."""
        validate = self.router.config.reload.validation
        try:
            config, _ = await trio.to_thread.run_sync(check_candidate, text, self.repository, validate)
        except ConfigError as exc:
            raise InvalidInput("invalid_config", exc.message, {"problems": list(exc.details)}) from exc
        return config

    async def validate(self, text: str) -> dict[str, Any]:
        """Dry run: errors, warnings, and the (asset class, horizon bucket) pairs that would change."""
        try:
            config = await self.check(text)
        except InvalidInput as exc:
            return {"valid": False, "errors": exc.details["problems"], "warnings": [], "changes": []}
        return {"valid": True, "errors": [], "warnings": list(config.warnings),
                "changes": rules_doc.changed_buckets(self.router.config, config)}

    async def write(self, text: str, expected: str | None) -> dict[str, Any]:
        """Validate, store with a compare-and-set on ``expected`` (None: any), and put in force everywhere."""
        config = await self.check(text)
        try:
            version = await trio.to_thread.run_sync(self.source.write, text, expected)
        except StaleWrite as exc:
            raise StaleVersion("stale_version", f"the rules changed: version {expected} is not the newest",
                               {"expected": expected, "current": exc.current}) from exc
        except (OSError, redis.RedisError) as exc:
            raise Unavailable("rules_unavailable", f"cannot write the rules document: {exc}",
                              {"source": self.source.kind}) from exc
        event = await self.submit(ReloadConfig("api"))
        log.info("rules version %s written (%s, %d rules)", version, config.config_hash, len(config.rules))
        return {"status": "applied" if event.success and self.version == version else "stored",
                "version": version, "config_hash": config.config_hash, "rules": len(config.rules),
                "warnings": list(config.warnings), "event": event.to_dict()}

    async def edit(self, change: Edit, expected: str | None) -> dict[str, Any]:
        """Apply ``change`` to the newest document; retried on a concurrent write unless ``expected`` pins one."""
        for _ in range(EDIT_RETRIES):
            text, version = await self.read()
            if expected is not None and expected != version:
                raise StaleVersion("stale_version", f"the rules changed: version {expected} is not the newest",
                                   {"expected": expected, "current": version})
            try:
                document = change(rules_doc.load_text(text))
            except rules_doc.DocumentError as exc:
                raise InvalidInput("invalid_edit", str(exc), {"path": exc.path}) from exc
            try:
                return await self.write(rules_doc.dump(document), version)
            except StaleVersion:
                if expected is not None:
                    raise
        raise StaleVersion("stale_version", "the rules kept changing; retry", {"attempts": EDIT_RETRIES})


def source_for(kind: str, config_path: Path, redis_url: str | None) -> RulesSource:
    """The rules source a replica reads: the config file, or the Redis document."""
    if kind == "redis" and redis_url:
        return RedisRules.connect(redis_url)
    return FileRules(config_path)


async def _converge(store: RulesStore, source: RedisRules, tried: str | None) -> str | None:
    """Apply Redis's newest version if this replica does not serve it (once per version)."""
    version = await trio.to_thread.run_sync(source.version)
    if version is None:  # Redis lost the document (restarted without persistence): put ours back
        current = store.version
        after = int(current) + 1 if current.isdigit() else 1  # versions keep increasing
        version = await trio.to_thread.run_sync(source.seed, store.watcher.text, after)
        log.warning("the rules document was missing from redis; restored the one in force as version %s", version)
    if version == store.version or version == tried:
        return tried
    event = await store.watcher.reload("redis")
    if not event.success:
        log.error("rules version %s from redis refused here: %s", version, event.error)
    return version


async def run(store: RulesStore, initial_text: str, *,
              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Redis source only: seed, apply the newest version, then keep checking until cancelled."""
    source = store.source
    assert isinstance(source, RedisRules)
    tried: str | None = None
    try:
        try:
            seeded = await trio.to_thread.run_sync(source.seed, initial_text)
            log.info("rules source: redis (version %s)", seeded)
            tried = await _converge(store, source, tried)
        except redis.RedisError as exc:
            log.warning("rules source redis unreachable at start (%s): serving the file's rules until it is", exc)
        task_status.started()
        while True:
            await trio.sleep(POLL_S)
            try:
                tried = await _converge(store, source, tried)
            except redis.RedisError as exc:
                log.debug("rules version check failed: %s", exc)
    finally:
        source.close()
