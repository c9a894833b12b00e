"""Who did what: audit records for operator commands, reloads and refused operate/admin calls.

The web layer knows the caller (its key and address); the control bus knows the command
and its outcome. ``Auditor.command`` is the control bus's hook (``ControlBus.audit``), so
every operator command submitted through the one entry point leaves a record; the access
layer adds refused calls and the config watcher adds reloads nobody asked for over HTTP
(file edits, signals). Records go to ``access.audit_file`` and, with Redis, to the stream
``model.audit.log`` (``actors/storage/audit_log.py``). Writing is one short line-buffered
append on the trio thread: cheaper than a thread hop, and audited events are rare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from actors.core.access import ApiKey
from actors.core.audit import audit_record
from actors.core.commands import WIRE_NAMES, Command, ReloadConfig
from actors.core.errors import RouterError
from actors.core.reload_history import ReloadEvent
from actors.storage.audit_log import AuditLog

log = logging.getLogger("model_router.audit")

#: Command wire names that are not audit action names.
_ACTION_OF = {"rollback_operation": "rollback"}


@attrs.frozen
class Caller:
    """Who sent a request: the admitted key (None when not known), the client address, the request id."""

    key: ApiKey | None = None
    client: str | None = None
    request_id: str | None = None


def _target(command: Command) -> str | None:
    for field in ("model", "operation_id"):
        value = getattr(command, field, None)
        if value is not None:
            return str(value)
    return None


@attrs.define
class Auditor:
    """Shapes and writes audit records; ``log`` None means no audit file (Redis copy only if offered)."""

    log: AuditLog | None = None
    offer: Callable[[Mapping[str, Any]], bool] | None = None
    clock: Callable[[], float] = time.time
    written: int = 0

    def write(self, action: str, outcome: str, caller: Caller | None, target: str | None,
              details: Mapping[str, Any] | None = None) -> None:
        key = caller.key if caller is not None else None
        record = audit_record(now=self.clock(), action=action, outcome=outcome,
                              key_id=key.id if key is not None else None,
                              workspace=key.workspace_name if key is not None else None,
                              client=caller.client if caller is not None else None, target=target,
                              request_id=caller.request_id if caller is not None else None, details=details)
        try:
            if self.log is not None:
                self.log.append(record)
            elif self.offer is not None:
                self.offer(record)
        except OSError as exc:  # the audit trail failing must not fail the command it records
            log.error("audit record not written (%s): %s %s", exc, action, target)
            return
        self.written += 1

    def command(self, command: Command, result: Any, error: BaseException | None, caller: Any) -> None:
        """The control bus hook: one record per submitted operator command, with its outcome."""
        name = WIRE_NAMES.get(type(command), "refused")
        action = _ACTION_OF.get(name, name)
        details: dict[str, Any] = {}
        if error is not None:
            outcome = "failed"
            details["error"] = error.code if isinstance(error, RouterError) else type(error).__name__
        elif isinstance(command, ReloadConfig) and not getattr(result, "success", True):
            outcome = "failed"
            details["error"] = getattr(result, "error", None)
        else:
            outcome = "ok"
        if isinstance(command, ReloadConfig):
            details["trigger"] = command.trigger
            details["config_hash"] = getattr(result, "config_hash", None)
        reason = getattr(command, "reason", None)
        if reason is not None and caller is None:
            details["reason"] = reason  # carried out by the service itself (an automatic rollback)
        version = getattr(command, "version", None)
        if version is not None:
            details["version"] = version
        self.write(action, outcome, caller if isinstance(caller, Caller) else None, _target(command), details)

    def reload_event(self, config_path: Path, event: ReloadEvent) -> None:
        """The config watcher's hook. Reloads nobody asked for over HTTP (file edits, signals, other
        workers) are audited here; API reloads where they are submitted, with the caller."""
        if event.trigger not in ("api", "startup"):
            self.write("config_reload", "ok" if event.success else "failed", None, str(config_path),
                       {"trigger": event.trigger, "config_hash": event.config_hash, "error": event.error,
                        "problems": len(event.details)})
