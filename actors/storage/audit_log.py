"""The audit trail: JSON lines appended to a file and, with Redis, to the stream ``model.audit.log``.

The file is opened once in append mode, line-buffered, so each record is one ``write`` of
one line (appends of a line are not interleaved with another writer's) and reaches the
kernel before ``append`` returns. It is created 0640: records name keys, workspaces and
client addresses, which are not secrets (no token or hash is ever written) but are not for
every local user either; the group can be given to a log shipper. An existing file keeps
the mode the operator gave it.

The Redis copy goes through the Redis bus's bounded channel (``RedisOutbox.offer``): a
request never waits for Redis, and a full channel drops the record, counted in
``dropped`` (and in the bus's ``model_router_redis_dropped_total``). The file is the
record of truth; the stream is for tailing across replicas.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Final

import attrs

from actors.core.audit import to_line
from actors.redis_bus import RedisMessage, RedisOutbox

AUDIT_STREAM: Final = "model.audit.log"
AUDIT_MAXLEN: Final = 100_000
FILE_MODE: Final = 0o640
READ_BLOCK: Final = 64 * 1024
MAX_READ: Final = 10_000


def outbox_offer(outbox: RedisOutbox) -> Callable[[Mapping[str, Any]], bool]:
    """An ``offer`` for ``AuditLog`` that XADDs to ``model.audit.log`` (MAXLEN ~ 100000) via the bus."""
    def offer(record: Mapping[str, Any]) -> bool:
        return outbox.offer(RedisMessage("xadd", AUDIT_STREAM, dict(record), maxlen=AUDIT_MAXLEN))
    return offer


@attrs.define
class AuditLog:
    """Append records (from ``actors.core.audit.audit_record``); read the newest back."""

    path: Path
    offer: Callable[[Mapping[str, Any]], bool] | None = None
    dropped: int = 0
    written: int = 0
    _handle: IO[str] | None = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def _open(self) -> IO[str]:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            self._handle = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        return self._handle

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record to the file now, and offer it to the Redis stream if configured."""
        line = to_line(record)
        with self._lock:
            self._open().write(line)
            self.written += 1
        if self.offer is not None and not self.offer(record):
            self.dropped += 1

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def read_newest(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, newest first, reading the file backwards in blocks."""
        limit = max(0, min(limit, MAX_READ))
        if limit == 0:
            return []
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed below; read backwards by seek)
        except FileNotFoundError:
            return []
        with handle:
            handle.seek(0, os.SEEK_END)
            position = handle.tell()
            tail = b""
            lines: list[bytes] = []
            while position > 0 and len(lines) <= limit:
                step = min(READ_BLOCK, position)
                position -= step
                handle.seek(position)
                tail = handle.read(step) + tail
                parts = tail.split(b"\n")
                tail = parts[0]  # may be a partial line: completed by the next block
                lines = [p for p in parts[1:] if p.strip()] + lines
            if position == 0 and tail.strip():
                lines.insert(0, tail)
        records = []
        for raw in reversed(lines[-limit:]):
            try:
                records.append(json.loads(raw))
            except ValueError:
                continue  # a line cut short by a crash: skip it
        return records
