"""Where usage counters survive a restart: a Redis hash per UTC day, or a local JSON file.

With Redis every replica adds its deltas with HINCRBY into one hash per day, so the totals
read back are the whole service's. Without Redis the process keeps its totals in a JSON
file, replaced atomically (write a temporary file, fsync, rename) on each flush; the flush
actor calls ``flush`` at most every few seconds. The file is 0644: usage counts are not
secret and monitoring may read them.

Both are blocking; callers run them in worker threads.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, Protocol

import attrs
import redis

from actors.core.rate_limit import SECONDS_PER_DAY, day_label
from actors.core.usage import CounterKey
from actors.storage.atomic import atomic_write_bytes

KEY_PREFIX: Final = "model_router:usage"
TTL_S: Final = 8 * SECONDS_PER_DAY
FILE_MODE: Final = 0o644
#: Days kept in the local file (today, and yesterday for a late flush).
FILE_DAYS: Final = 2


class UsageStore(Protocol):
    def flush(self, delta: Mapping[int, Mapping[CounterKey, int]], today: int) -> dict[CounterKey, int]:
        """Add ``delta`` (by day) to the stored totals; return today's totals after."""
        ...

    def load(self, day: int) -> dict[CounterKey, int]:
        ...


def _field(key: CounterKey) -> str:
    return json.dumps(list(key), separators=(",", ":"))


def _unfield(field: str | bytes) -> CounterKey:
    return tuple(str(part) for part in json.loads(field))


def _day_index(label: str) -> int:
    moment = datetime.strptime(label, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) // SECONDS_PER_DAY


@attrs.define
class RedisUsageStore:
    """One hash per day (``model_router:usage:2026-12-02``), fields are JSON-encoded counter keys."""

    client: redis.Redis

    @classmethod
    def from_url(cls, url: str) -> RedisUsageStore:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0))

    @staticmethod
    def key(day: int) -> str:
        return f"{KEY_PREFIX}:{day_label(day)}"

    def flush(self, delta: Mapping[int, Mapping[CounterKey, int]], today: int) -> dict[CounterKey, int]:
        pipe = self.client.pipeline(transaction=False)
        for day, counters in delta.items():
            if not counters:
                continue
            for counter, value in counters.items():
                pipe.hincrby(self.key(day), _field(counter), value)
            pipe.expire(self.key(day), TTL_S)
        pipe.hgetall(self.key(today))
        raw = pipe.execute()[-1]
        return {_unfield(field): int(value) for field, value in raw.items()}

    def load(self, day: int) -> dict[CounterKey, int]:
        raw = self.client.hgetall(self.key(day))
        return {_unfield(field): int(value) for field, value in raw.items()}  # type: ignore[union-attr]


@attrs.define
class FileUsageStore:
    """Totals of the last days in one JSON file, replaced atomically on each flush."""

    path: Path
    days: dict[int, dict[CounterKey, int]] = attrs.field(factory=dict)
    _loaded: bool = False

    def _read(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            # Unreadable or half-written by something else: start counting afresh, keep the file aside.
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_suffix(self.path.suffix + ".corrupt"))
            return
        for label, rows in (data.get("days") or {}).items():
            self.days[_day_index(label)] = {tuple(str(p) for p in key): int(value) for key, value in rows}

    def load(self, day: int) -> dict[CounterKey, int]:
        self._read()
        return dict(self.days.get(day, {}))

    def flush(self, delta: Mapping[int, Mapping[CounterKey, int]], today: int) -> dict[CounterKey, int]:
        self._read()
        for day, counters in delta.items():
            totals = self.days.setdefault(day, {})
            for counter, value in counters.items():
                totals[counter] = totals.get(counter, 0) + value
        for day in [d for d in self.days if d <= today - FILE_DAYS]:
            del self.days[day]
        document = {"version": 1, "days": {
            day_label(day): [[list(key), value] for key, value in sorted(totals.items())]
            for day, totals in sorted(self.days.items())}}
        atomic_write_bytes(self.path, json.dumps(document, separators=(",", ":")).encode(), mode=FILE_MODE)
        return dict(self.days.get(today, {}))
