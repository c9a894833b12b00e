"""This replica's heartbeat report: what ``GET /cluster`` shows for it and peers read from Redis."""

from __future__ import annotations

from typing import Any

from actors.web.service import Service


def replica_report(service: Service) -> dict[str, Any]:
    """Rules version and hash, active versions, operations in progress, readiness, loaded versions."""
    active = service.router.active
    cache = service.cache.view
    plans = service.transitions.view.plans
    versions: dict[str, Any] = {name: {"stable": version, "candidate": None, "weight_bp": 0}
                                for name, version in cache.active.items()}
    for name, plan in plans.items():
        versions[name] = {"stable": plan.stable, "candidate": plan.candidate, "weight_bp": plan.weight_bp,
                          "operation_id": plan.operation_id}
    operations = [{"id": op.id, "model": op.model, "state": op.state, "from_version": op.from_version,
                   "to_version": op.to_version, "weight_bp": op.weight_bp, "step": op.step}
                  for op in service.transitions.view.state.operations.values() if not op.is_terminal]
    not_ready = service.readiness()
    return {
        "worker": service.settings.worker_index,
        "rules": {"version": service.rules_version(), "config_hash": active.config.config_hash,
                  "generation": active.generation},
        "active_versions": versions,
        "operations": operations,
        "ready": not not_ready,
        "not_ready": not_ready,
        "loaded": sorted(f"{n}@{v}" for n, v in cache.models),
        "failures": {f"{n}@{v}": reason for (n, v), reason in cache.failures.items()},
        "catalog": {name: list(vs) for name, vs in cache.catalog.items()},
        "stream_position": service.commands.cursor.last_id,
        "health": {f"{op['model']}@{op['to_version']}": service.health.snapshot(op["model"], op["to_version"]
                                                                                 ).to_dict()
                   for op in operations},
        "rollouts": service.rollouts.describe(),
    }
