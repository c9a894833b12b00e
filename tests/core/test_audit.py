"""Audit record shaping: fixed fields, bounded text, JSON-safe details, one line each."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from actors.core.audit import FIELDS, MAX_TEXT, audit_record, to_line

T0 = datetime(2026, 12, 2, 3, 4, 5, 678000, tzinfo=timezone.utc).timestamp()


def test_record_has_every_field_in_order() -> None:
    record = audit_record(now=T0, action="switch", outcome="ok", key_id="ops", workspace=None,
                          client="127.0.0.1", target="tlob_tiny", request_id="r-1", details={"version": "2"})
    assert list(record) == list(FIELDS)
    assert record["time"] == "2026-12-02T03:04:05.678Z"
    assert record["ts"] == pytest.approx(T0, abs=0.001)
    assert (record["key_id"], record["workspace"], record["client"], record["action"], record["target"],
            record["outcome"], record["request_id"], record["details"]) == (
        "ops", None, "127.0.0.1", "switch", "tlob_tiny", "ok", "r-1", {"version": "2"})


def test_unknown_action_or_outcome_is_a_bug() -> None:
    with pytest.raises(ValueError, match="action"):
        audit_record(now=T0, action="swtich", outcome="ok")
    with pytest.raises(ValueError, match="outcome"):
        audit_record(now=T0, action="switch", outcome="maybe")


def test_client_controlled_text_is_bounded_and_details_json_safe() -> None:
    record = audit_record(now=T0, action="refused", outcome="refused", target="x" * 10_000,
                          request_id="r\nfake-line", details={"when": datetime(2026, 1, 1), "n": 1})
    assert len(record["target"]) == MAX_TEXT
    assert record["details"] == {"when": "2026-01-01 00:00:00", "n": 1}
    line = to_line(record)
    assert line.endswith("\n") and line.count("\n") == 1  # a newline in a field cannot forge a record
    assert json.loads(line)["request_id"] == "r\nfake-line"


def test_huge_details_are_truncated() -> None:
    record = audit_record(now=T0, action="register", outcome="failed", details={"blob": "y" * 100_000})
    assert set(record["details"]) == {"truncated"}
    assert len(record["details"]["truncated"]) == 4096
