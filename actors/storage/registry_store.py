"""The version registry's state and its on-disk form, so a restart serves what it served.

Per model: the version policy ("latest" follows the newest version; "pinned" stays on an
explicitly chosen one), the traffic plan (stable version, candidate and weight), the
versions an operator deregistered, and a bounded history of stable-version changes.
Plus the recent switch operations, including any still running, which resume after a
restart. Encoding and decoding are pure; :func:`save` writes atomically (temp + rename)
so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from actors.core.switch_policy import Operation, TrafficPlan
from actors.storage.atomic import atomic_write_bytes

log = logging.getLogger("model_router.registry")

FORMAT = 1
HISTORY_LIMIT = 50
OPERATIONS_LIMIT = 200


@attrs.frozen
class ModelRecord:
    policy: str = "latest"
    plan: TrafficPlan | None = None
    deregistered: frozenset[str] = frozenset()
    history: tuple[dict[str, Any], ...] = ()

    def with_history(self, entry: dict[str, Any]) -> ModelRecord:
        return attrs.evolve(self, history=(*self.history, entry)[-HISTORY_LIMIT:])

    def previous_stable(self) -> str | None:
        """The stable version before the current one (what a plain rollback returns to)."""
        return self.history[-1].get("previous") if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "plan": self.plan.to_dict() if self.plan else None,
                "deregistered": sorted(self.deregistered), "history": list(self.history)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRecord:
        plan = data.get("plan")
        return cls(policy=str(data.get("policy", "latest")),
                   plan=TrafficPlan.from_dict(plan) if plan else None,
                   deregistered=frozenset(str(v) for v in data.get("deregistered", ())),
                   history=tuple(dict(h) for h in data.get("history", ())))


@attrs.frozen
class RegistryState:
    models: Mapping[str, ModelRecord] = attrs.field(factory=dict)
    operations: Mapping[str, Operation] = attrs.field(factory=dict)

    def record(self, name: str) -> ModelRecord:
        return self.models.get(name, ModelRecord())

    def with_record(self, name: str, record: ModelRecord) -> RegistryState:
        return attrs.evolve(self, models={**self.models, name: record})

    def with_operation(self, op: Operation) -> RegistryState:
        operations = {**self.operations, op.id: op}
        if len(operations) > OPERATIONS_LIMIT:
            finished = sorted((o for o in operations.values() if o.is_terminal), key=lambda o: o.updated_at)
            for old in finished[: len(operations) - OPERATIONS_LIMIT]:
                del operations[old.id]
        return attrs.evolve(self, operations=operations)


def encode(state: RegistryState) -> str:
    """The state file's text: indented, keys sorted (diffable), encoded in C.

    ``json.dumps`` with ``indent`` takes the pure-Python encoder: with a full operation history
    (``OPERATIONS_LIMIT`` operations of ten log entries) that was 39 ms of the event loop per
    save, several saves per switch, a spike in the p99 of every request in flight during a
    switch; orjson takes 2.5 ms for the same state, most of it building the dicts.
    """
    return orjson.dumps({
        "format": FORMAT,
        "saved_at": time.time(),
        "models": {name: record.to_dict() for name, record in sorted(state.models.items())},
        "operations": [op.to_dict() for op in sorted(state.operations.values(), key=lambda o: o.created_at)],
    }, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def decode(text: str) -> RegistryState:
    """Raises ValueError (with the reason) on anything but a well-formed state file."""
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown state format {data.get('format')!r}")
        models = {str(name): ModelRecord.from_dict(record) for name, record in data["models"].items()}
        operations = {op.id: op for op in (Operation.from_dict(o) for o in data["operations"])}
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed state file: {exc}") from exc
    return RegistryState(models, operations)


def save(path: Path, text: str) -> None:
    """Blocking: write ``text`` atomically (run in a worker thread)."""
    atomic_write_bytes(path, text.encode("utf-8"))  # a private temp name: workers may share one state file


def load(path: Path) -> RegistryState:
    """The saved state, or an empty one; a corrupt file is set aside (``.corrupt``) and logged."""
    try:
        text = path.read_bytes().decode("utf-8")
        return decode(text)
    except FileNotFoundError:
        return RegistryState()
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        aside = path.with_suffix(path.suffix + ".corrupt")
        os.replace(path, aside)
        log.error("registry state %s unreadable (%s); moved to %s, starting fresh", path, exc, aside)
        return RegistryState()
