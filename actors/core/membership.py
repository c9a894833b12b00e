"""Cluster membership as pure decisions over replicas' heartbeats.

Each replica writes a heartbeat (a JSON report) under its own Redis key with a TTL;
a replica that stops heartbeating drops out when the key expires. These functions read
a set of such reports: who is live, and which replicas cannot serve a given version
yet (the readiness gate a switch waits on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Report = Mapping[str, Any]


def live(reports: Iterable[Report], now: float, ttl_s: float) -> list[Report]:
    """Reports younger than ``ttl_s``, ordered by replica id (Redis expiry is the main filter)."""
    fresh = [r for r in reports if now - float(r.get("heartbeat_at", 0.0)) <= ttl_s]
    return sorted(fresh, key=lambda r: str(r.get("id", "")))


def not_ready_for(reports: Iterable[Report], model: str, version: str) -> dict[str, str]:
    """Replica id -> why it cannot serve ``model@version`` yet (loaded and warm), for live reports."""
    waiting: dict[str, str] = {}
    key = f"{model}@{version}"
    for report in reports:
        rid = str(report.get("id", "?"))
        if key in report.get("loaded", ()):
            continue
        failure = report.get("failures", {}).get(key)
        if failure:
            waiting[rid] = f"cannot load {key}: {failure}"
        elif version not in report.get("catalog", {}).get(model, ()):
            waiting[rid] = f"its repository has no {key}"
        else:
            waiting[rid] = f"{key} is not loaded yet"
    return waiting
