"""Read-only views that combine several owners' state into one answer.

A version's status needs the model cache (loaded, failed), the transition manager
(traffic plan, draining, deregistered, loading operations), the in-flight counts and the
breaker board; gathering those facts is done here, and the status itself is decided by
the pure lifecycle in ``actors/core/versions.py``. Both ports use these views, so
``/health`` reads the same everywhere.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import trio

from actors.core.versions import VersionFacts, version_status
from actors.storage.model_repo import list_repository, parse_metadata, version_dir
from actors.web.service import SERVICE_NAME, SERVICE_VERSION, Service


def version_entry(service: Service, name: str, version: str) -> dict[str, Any]:
    """A version's lifecycle status, traffic share, in-flight count and breaker."""
    view = service.cache.view
    traffic = service.transitions.view
    key = (name, version)
    plan = traffic.plans.get(name)
    share = plan.share(version) if plan is not None else (1.0 if view.active.get(name) == version else 0.0)
    loaded = view.models.get(key)
    loading = any(op.model == name and op.to_version == version and op.state == "loading"
                  for op in traffic.state.operations.values())
    status = version_status(VersionFacts(
        deregistered=version in service.transitions.excluded(name), draining=key in traffic.draining,
        loaded=loaded is not None, loading=loading, failed=key in view.failures, traffic_share=share))
    entry: dict[str, Any] = {
        "version": version, "status": status, "traffic_share": round(share if loaded else 0.0, 6),
        "in_flight": service.transitions.inflight.count(key),
        "breaker": service.health.breakers.state(key),
    }
    if loaded is not None:
        entry.update(loaded_at=loaded.loaded_at, size_bytes=loaded.size_bytes)
    if key in view.failures:
        entry["error"] = view.failures[key]
    call_error = service.predictor.call_errors.get(key)
    if call_error is not None:
        entry["last_error"] = call_error  # the last call failed (raised, hung past the deadline)
    return entry


def read_metadata(root: Path, name: str, version: str) -> dict[str, Any] | None:
    try:
        return parse_metadata((version_dir(root, name, version) / "metadata.yml").read_text()).to_dict()
    except (OSError, ValueError):
        return None


def describe_model(service: Service, name: str, catalog: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """One model: every version's entry and metadata, the serving version, the policy and plan."""
    versions = catalog[name]
    active = service.predictor.serving_version(name)
    entries = []
    for version in sorted(versions, key=int, reverse=True):
        entry = version_entry(service, name, version)
        entry["metadata"] = read_metadata(service.repository, name, version)
        entries.append(entry)
    current = next((e for e in entries if e["version"] == active), entries[0] if entries else None)
    meta = (current or {}).get("metadata") or {}
    return {
        "name": name,
        "active_version": active,
        "latest_version": entries[0]["version"] if entries else None,
        "status": (current or {}).get("status", "available"),
        "features": meta.get("features"),
        "window": meta.get("window"),
        "labels": meta.get("labels"),
        "accuracy": meta.get("accuracy"),
        "training_date": meta.get("training_date"),
        "policy": service.transitions.view.state.record(name).policy,
        "plan": plan.to_dict() if (plan := service.transitions.plan(name)) is not None else None,
        "versions": entries,
    }


async def catalog(service: Service) -> dict[str, tuple[str, ...]]:
    """The repository's models and versions (a directory scan, in a worker thread)."""
    return await trio.to_thread.run_sync(list_repository, service.repository)


def detailed_health(service: Service) -> dict[str, Any]:
    """Every known model version: window statistics, breaker, in-flight count, traffic share."""
    keys = set(service.cache.view.models) | service.health.known_versions()
    for plan in service.transitions.view.plans.values():
        keys |= {(plan.model, v) for v in plan.versions()}
    versions = []
    for name, version in sorted(keys):
        entry = version_entry(service, name, version)
        entry.update(model=name, health=service.health.snapshot(name, version).to_dict())
        versions.append(entry)
    running = [op.to_dict() for op in service.transitions.view.state.operations.values() if not op.is_terminal]
    return {"status": "ok", "versions": versions, "running_switches": running,
            "redis": {"configured": service.outbox.enabled, "connected": service.outbox.state.connected},
            "switch_subscribers": len(service.feed.subscribers)}


def health_body(service: Service) -> dict[str, Any]:
    """``GET /health``: the process is up; what it has loaded and which rules it serves."""
    view = service.cache.view
    return {
        "status": "ok", "service": SERVICE_NAME, "version": SERVICE_VERSION,
        "models_loaded": sorted(f"{n}@{v}" for n, v in view.models),
        "config_hash": service.router.config.config_hash,
        "uptime_s": round(time.time() - service.started_at, 3),
        "worker": service.settings.worker_index, "pid": os.getpid(),
    }


def ready_body(service: Service) -> tuple[int, dict[str, Any]]:
    """``GET /health/ready``: 200 once the default model serves, else 503 with the reasons."""
    reasons = service.readiness()
    if reasons:
        return 503, {"status": "not_ready", "reasons": reasons}
    return 200, {"status": "ready", "config_hash": service.router.config.config_hash}
