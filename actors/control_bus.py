"""The control bus actor: keeps replicas in step through a Redis stream of operator commands.

An operator command reaches one replica (one of ``--workers N`` on a port, or one of N
machines behind a load balancer). That replica runs it, then appends it — with the
operation id it assigned, so the sticky assignment, a pure function of id and key,
matches everywhere — to the stream ``model_router.commands``, together with a command id
unique to this submission. Every replica reads the stream from the last entry it applied
(its :class:`~actors.core.command_log.Cursor`, saved beside its state file), so one that
was down, partitioned or stopped with SIGSTOP replays what it missed, in order, and the
command ids make each submission apply exactly once (its own included). A replica that
starts reads up to the end of the stream before it reports ready: it converges on start.

Writes go through the Redis bus, which never blocks the caller and buffers while Redis
is down (what was submitted meanwhile is appended once it is back). Reads are blocking
XREADs in a worker thread (redis-py's asyncio client does not run under Trio), bounded
by a timeout and abandoned on cancel; Redis errors back off and retry. Without Redis the
bus only runs commands here, exactly as a single process always did.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import redis
import trio

from actors.core.command_log import Cursor, Entry, decode_entry, entry_fields
from actors.core.commands import Command, UnknownCommand, mirrored, settled
from actors.core.errors import RouterError
from actors.redis_bus import RedisMessage, RedisOutbox
from actors.storage import cursor_store

log = logging.getLogger("model_router.control")

STREAM = "model_router.commands"
STREAM_MAXLEN = 100_000
POLL_MS = 500
READ_COUNT = 256
MAX_BACKOFF_S = 5.0

# Runs a command in this process (routes it to the actor that owns it) and returns its result.
Executor = Callable[[Command], Awaitable[Any]]
# Told of every submitted command: (command, result, error or None, caller as the web layer gave it).
AuditHook = Callable[[Command, Any, "BaseException | None", Any], None]


@attrs.define
class ControlBus:
    """The one entry point for operator commands: run here, then append to the shared stream.

    ``submit`` is what the HTTP layer calls, so no command can be applied without being
    replicated; ``enabled`` only with Redis.
    """

    outbox: RedisOutbox
    execute: Executor
    enabled: bool = False
    origin: str = attrs.field(factory=lambda: os.urandom(8).hex())
    #: The audit trail's hook: every submitted command, its outcome and who asked (``caller``).
    audit: AuditHook | None = None
    cursor: Cursor = attrs.field(factory=Cursor)
    applied_count: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def submit(self, command: Command, caller: Any = None) -> Any:
        """Run ``command`` here; once it succeeded, append it (with its operation id) for the others.

        ``caller`` (who asked, from the web layer) is passed to the audit hook only: being the
        single entry point for operator commands makes this the one place to audit them.
        """
        try:
            result = await self.execute(command)
        except Exception as exc:
            if self.audit is not None:
                self.audit(command, None, exc, caller)
            raise
        if self.audit is not None:
            self.audit(command, result, None, caller)
        self.publish(settled(command, result))
        return result

    def automatic(self, command: Command) -> None:
        """A command this worker already carried out on its own (an automatic rollback): audited, mirrored."""
        if self.audit is not None:
            self.audit(command, None, None, None)
        self.publish(command)

    async def announce(self, command: Command) -> Any:
        """Append ``command``, then run it here: for a change already decided and stored (a rules write).

        The other replicas start applying it while this one does, instead of after.
        """
        self.publish(command)
        return await self.execute(command)

    def publish(self, command: Command) -> str | None:
        """Append a command this replica already applied; returns its command id (None without Redis)."""
        if not self.enabled:
            return None
        command_id = uuid.uuid4().hex
        self.note(self.cursor.recorded(command_id))
        fields = entry_fields(command, command_id=command_id, origin=self.origin)
        sent = self.outbox.offer(RedisMessage("xadd", STREAM, dict(fields), maxlen=STREAM_MAXLEN))
        log.debug("appended %s %s (queued: %s)", fields["kind"], command_id, sent)
        return command_id

    def note(self, cursor: Cursor, *, applied: bool = False) -> None:
        """Rebind the cursor and wake whoever waits for progress (the saver, tests)."""
        self.cursor = cursor
        if applied:
            self.applied_count += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[ControlBus], bool]) -> None:
        """Wait (event-driven) until ``predicate(bus)`` holds; for tests and tooling."""
        while not predicate(self):
            await self._changed.wait()


def cursor_file(state_path: Path, worker_index: int = 0) -> Path:
    """Where a replica's place in the stream persists: beside its state file, one per worker."""
    suffix = f".w{worker_index}" if worker_index else ""
    return state_path.with_name(f"{state_path.stem}.cursor{suffix}.json")


def make_reader(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=POLL_MS / 1000 + 5,
                                decode_responses=True)


def read_entries(client: redis.Redis, after: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
    """Blocking: up to READ_COUNT entries after ``after`` (waiting up to ``block_ms`` when given)."""
    reply = client.xread({STREAM: after}, count=READ_COUNT, block=block_ms)
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return list(reply.get(STREAM, [[]])[0])
    return list(reply[0][1])


async def apply_entry(bus: ControlBus, entry_id: str, fields: dict[str, str]) -> None:
    """Apply one stream entry unless it was applied already; advance the cursor either way."""
    try:
        entry: Entry = decode_entry(entry_id, fields)
    except UnknownCommand as exc:
        log.warning("skipping stream entry %s: %s", entry_id, exc)
        bus.note(bus.cursor.passed(entry_id))
        return
    if not bus.cursor.should_apply(entry_id, entry.command_id):
        bus.note(bus.cursor.advanced(entry_id, entry.command_id))
        return
    kind = type(entry.command).__name__
    try:
        await bus.execute(mirrored(entry.command))
    except RouterError as exc:  # refused here (e.g. already done): the state says why
        log.info("command %s (%s) from %s refused here: %s", entry_id, kind, entry.origin, exc)
    except Exception:  # supervision: one bad command must not stop the bus
        log.exception("command %s (%s) from %s failed here", entry_id, kind, entry.origin)
    bus.note(bus.cursor.advanced(entry_id, entry.command_id), applied=True)
    log.debug("applied %s %s from %s", entry_id, kind, entry.origin)


async def _save_cursor(bus: ControlBus, path: Path) -> None:
    """Write the cursor after progress, coalescing bursts into one write."""
    saved = bus.cursor
    while True:
        await bus.wait_until(lambda b, seen=saved: b.cursor is not seen)
        saved = bus.cursor
        try:
            await trio.to_thread.run_sync(cursor_store.save, path, saved)
        except OSError as exc:
            log.error("could not save the stream cursor to %s: %s", path, exc)


async def _follow(bus: ControlBus, url: str, task_status: trio.TaskStatus[None]) -> None:
    client = make_reader(url)
    backoff = 0.1
    started = False
    outage = False
    try:
        while True:
            try:
                # Catch up without blocking until the end of the stream; then wait for news.
                block = POLL_MS if started else None
                batch = await trio.to_thread.run_sync(read_entries, client, bus.cursor.last_id, block,
                                                      abandon_on_cancel=True)
            except redis.RedisError as exc:
                if not outage:
                    log.warning("command stream: redis unavailable (%s); retrying", exc)
                outage = True
                if not started:
                    started = True
                    log.warning("command stream unreachable at start: serving, will replay once it is back")
                    task_status.started()
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if outage:
                log.info("command stream reachable again; resuming after %s", bus.cursor.last_id)
                outage = False
            backoff = 0.1
            for entry_id, fields in batch:
                await apply_entry(bus, entry_id, fields)
            if not started and len(batch) < READ_COUNT:
                started = True
                log.info("command stream followed from %s (%d replayed)", bus.cursor.last_id, bus.applied_count)
                task_status.started()
    finally:
        client.close()


async def run(
    bus: ControlBus,
    url: str,
    *,
    cursor_path: Path | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Replay what this replica missed, report ready, then apply others' commands until cancelled."""
    if cursor_path is not None:
        loaded = await trio.to_thread.run_sync(cursor_store.load, cursor_path)
        merged = loaded
        for command_id in bus.cursor.applied:
            merged = merged.recorded(command_id)
        bus.note(merged)
    try:
        async with trio.open_nursery() as nursery:
            if cursor_path is not None:
                nursery.start_soon(_save_cursor, bus, cursor_path)
            await nursery.start(_follow, bus, url)
            task_status.started()
    finally:
        if cursor_path is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await trio.to_thread.run_sync(cursor_store.save, cursor_path, bus.cursor)
