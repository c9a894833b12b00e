"""Audit records: one JSON object per change of state or refused admin call.

Pure shaping: fixed fields in a fixed order, bounded string lengths (a client controls
some of them: targets, request ids), ISO-8601 UTC time with milliseconds plus the epoch
for sorting. No token ever enters a record: keys appear by their id only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final

#: The actions the service audits.
ACTIONS: Final = frozenset({
    "config_reload", "model_reload", "switch", "abort", "promote", "rollback",
    "register", "deregister", "keys_reload", "refused",
})
OUTCOMES: Final = frozenset({"ok", "failed", "refused"})
FIELDS: Final = ("time", "ts", "key_id", "workspace", "client", "action", "target", "outcome", "request_id",
                 "details")
MAX_TEXT: Final = 256
MAX_DETAILS_BYTES: Final = 4096


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def audit_record(*, now: float, action: str, outcome: str, key_id: str | None = None,
                 workspace: str | None = None, client: str | None = None, target: str | None = None,
                 request_id: str | None = None, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A record ready to write; ``action`` and ``outcome`` must be known (a typo is a bug, raise)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    encoded = json.dumps(dict(details or {}), default=str, separators=(",", ":"))
    # A JSON-safe copy (what a reader will see), or the start of it when it is too large.
    shown = {"truncated": encoded[:MAX_DETAILS_BYTES]} if len(encoded) > MAX_DETAILS_BYTES else json.loads(encoded)
    stamp = datetime.fromtimestamp(now, tz=timezone.utc)
    return {
        "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "ts": round(now, 3),
        "key_id": _text(key_id),
        "workspace": _text(workspace),
        "client": _text(client),
        "action": action,
        "target": _text(target),
        "outcome": outcome,
        "request_id": _text(request_id),
        "details": shown,
    }


def to_line(record: Mapping[str, Any]) -> str:
    """One line of the audit file (no embedded newline can survive json.dumps)."""
    return json.dumps({name: record.get(name) for name in FIELDS}, separators=(",", ":"), ensure_ascii=False) + "\n"
