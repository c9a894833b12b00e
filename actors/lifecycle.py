"""Starting and stopping: actors in dependency order and back in reverse; signals; worker processes; logging.

Each actor is started with ``nursery.start`` so the next one (and finally the HTTP
listeners) starts only once it reported ready. Stopping cancels them last-started-first
and waits for each, so an actor never outlives one it depends on. With ``--workers N``
a supervisor process runs N copies of the service on one port and restarts crashes.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import attrs
import orjson
import trio

from actors.core.gc_policy import parse_gc_thresholds
from actors.serving.request_context import REQUEST_ID

log = logging.getLogger("model_router")

LOG_FORMATS = ("plain", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines that index fields rather than grep text.

    Fields: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
    ``worker``; ``request_id`` (the record's ``extra``, else the request's context) and
    ``correlation_id`` (from ``extra``) when known; ``exception`` with the traceback when
    there is one. A dozen lines on orjson, which the service already uses: a library would
    add a dependency for less control over the field names.
    """

    def __init__(self, worker: int = 0) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        correlation_id = getattr(record, "correlation_id", None)
        if correlation_id:
            entry["correlation_id"] = correlation_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_format: str = "plain", worker_index: int = 0) -> None:
    """The process's one log handler on stderr: plain text (the default) or JSON lines."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker_index))
    else:
        prefix = f"w{worker_index} " if worker_index else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


@attrs.define
class ActorGroup:
    """Starts actors in order and stops them in reverse order."""

    nursery: trio.Nursery
    running: list[tuple[str, trio.CancelScope, trio.Event]] = attrs.field(factory=list)

    async def start(self, name: str, actor: Callable[..., Awaitable[Any]]) -> Any:
        return await self.nursery.start(self._run, name, actor)

    async def _run(self, name: str, actor: Callable[..., Awaitable[Any]],
                   *, task_status: trio.TaskStatus[Any]) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    value = await nursery.start(actor)
                    self.running.append((name, scope, done))
                    log.debug("actor %s ready", name)
                    task_status.started(value)
        finally:
            done.set()

    async def stop_all(self) -> None:
        for name, scope, done in reversed(self.running):
            scope.cancel()
            await done.wait()
            log.debug("actor %s stopped", name)


def gc_thresholds_option(text: str) -> tuple[int, int, int]:
    """``--gc-thresholds`` for argparse: the parsed thresholds, or a usage error saying what is wrong."""
    try:
        return parse_gc_thresholds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def settle_heap(thresholds: tuple[int, int, int]) -> None:
    """Once every actor is ready: collect, freeze what start-up built, then apply the thresholds.

    Everything built so far lives as long as the process; frozen, it stays out of every
    later collection's walk (``actors/core/gc_policy.py`` says why the thresholds differ
    from CPython's).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


async def stop_on_signals(stop: trio.Event) -> None:
    """SIGINT or SIGTERM: set ``stop`` (the service drains HTTP, then stops the actors)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: draining HTTP, then stopping actors", signal.Signals(signum).name)
            stop.set()
            return


RESTARTS_PER_MINUTE = 5


def supervise_workers(command: list[str], count: int, host: str, port: int) -> int:
    """Run ``count`` copies of the service on one port; forward signals; restart crashes.

    Each worker is a full service (its own actors). SIGTERM/SIGINT stop them all (each
    drains its HTTP requests); SIGHUP reaches every worker, so all reload together. A
    worker that exits with an error is restarted, at most RESTARTS_PER_MINUTE times a
    minute; past that the supervisor stops everything and exits 1. A worker that exits
    with code 2 (invalid config) stops everything at once.
    """
    port = port or _free_port(host)
    base = [*command, "--port", str(port)]
    stopping = False
    workers: dict[int, subprocess.Popen[bytes]] = {}
    restarts: dict[int, list[float]] = {i: [] for i in range(1, count + 1)}

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
        workers[index] = _start_worker(base, index)
    log.info("supervising %d workers on %s:%d", count, host, port)
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
            workers[index] = _start_worker(base, index)
    log.info("all workers stopped")
    return 1 if failed else 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, however it dies (Linux prctl).

    A supervisor killed with SIGKILL cannot forward a signal; without this its workers would
    keep serving the port as orphans.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


_PR_SET_PDEATHSIG = 1


def _start_worker(base: list[str], index: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*base, "--worker-index", str(index)],
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
