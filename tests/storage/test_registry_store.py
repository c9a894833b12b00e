"""The version registry's state and its on-disk form (actors/storage/registry_store.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from actors.core.switch_policy import TrafficPlan, abort, begin, new_operation, parse_switch_params
from actors.storage import atomic, registry_store
from actors.storage.registry_store import OPERATIONS_LIMIT, ModelRecord, RegistryState, decode, encode, load, save


def _op(op_id: str, *, now: float = 1000.0, terminal: bool = False, strategy: str = "gradual"):
    op = new_operation(op_id, "fast", "1", "2", parse_switch_params({"strategy": strategy, "interval_s": 5}), now)
    op = begin(op, now + 1)
    return abort(op, now + 2) if terminal else op


def _state() -> RegistryState:
    running = _op("sw-running", now=100.0)
    done = _op("sw-done", now=50.0, terminal=True)
    fast = ModelRecord(
        policy="pinned",
        plan=TrafficPlan("fast", "1", candidate="2", weight_bp=500, salt=running.salt, operation_id=running.id),
        deregistered=frozenset({"3", "4"}),
        history=({"at": 1.0, "version": "1", "previous": "0", "operation_id": "sw-x", "reason": "completed"},),
    )
    backup = ModelRecord(plan=TrafficPlan("backup", "7"))
    state = RegistryState({"fast": fast, "backup": backup, "windowed": ModelRecord()})
    return state.with_operation(running).with_operation(done)


def test_encode_decode_round_trip_keeps_plans_policies_deregistered_history_and_operations() -> None:
    """Everything a restart needs survives encode -> decode unchanged, including a running operation."""
    state = _state()
    back = decode(encode(state))
    assert back.models == state.models
    assert back.operations == state.operations
    assert back.operations["sw-running"].state == "running"
    assert back.operations["sw-running"].weight_bp == 500
    assert back.operations["sw-done"].state == "aborted"
    assert back.record("fast").policy == "pinned"
    assert back.record("fast").deregistered == frozenset({"3", "4"})
    assert back.record("backup").plan == TrafficPlan("backup", "7")
    assert back.record("windowed").plan is None


def test_encoded_form_is_versioned_json_with_operations_oldest_first() -> None:
    """The file carries the format number and lists operations by creation time."""
    data = json.loads(encode(_state()))
    assert data["format"] == registry_store.FORMAT
    assert [o["id"] for o in data["operations"]] == ["sw-done", "sw-running"]
    assert data["models"]["fast"]["deregistered"] == ["3", "4"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "malformed state file"),
        ("[]", "malformed state file"),
        ('{"format": 99, "models": {}, "operations": []}', "unknown state format 99"),
        ('{"format": 1, "operations": []}', "malformed state file"),
        ('{"format": 1, "models": {}}', "malformed state file"),
        ('{"format": 1, "models": {"fast": {"plan": {"stable": "1"}}}, "operations": []}', "malformed state file"),
        ('{"format": 1, "models": {}, "operations": [{"id": "x"}]}', "malformed state file"),
    ],
)
def test_decode_rejects_malformed_files_with_a_reason(text: str, reason: str) -> None:
    """Anything but a well-formed state file is a ValueError naming what is wrong."""
    with pytest.raises(ValueError, match=reason):
        decode(text)


def test_decode_rejects_an_operation_with_an_unknown_state() -> None:
    """An operation whose state is not a known one is rejected, not resumed."""
    data = json.loads(encode(_state()))
    data["operations"][0]["state"] = "exploding"
    with pytest.raises(ValueError, match="state must be one of"):
        decode(json.dumps(data))


def test_load_of_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    """First start: no file, no models, no operations."""
    state = load(tmp_path / "absent.json")
    assert state == RegistryState()


def test_load_moves_a_corrupt_file_aside_and_starts_empty(tmp_path: Path) -> None:
    """A corrupt file is kept as ``.corrupt`` for inspection and an empty state is returned."""
    path = tmp_path / "registry.json"
    path.write_text("{ definitely not json")
    state = load(path)
    assert state == RegistryState()
    assert not path.exists()
    assert (tmp_path / "registry.json.corrupt").read_text() == "{ definitely not json"


def test_load_moves_a_non_utf8_file_aside_and_starts_empty(tmp_path: Path) -> None:
    """Byte-level corruption (invalid UTF-8) is corruption too: set aside, empty state returned."""
    path = tmp_path / "registry.json"
    path.write_bytes(b'{"format": 1, "models": \xff\xfe garbage')
    state = load(path)
    assert state == RegistryState()
    assert (tmp_path / "registry.json.corrupt").exists()


def test_save_then_load_round_trips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """save writes the file (creating folders) and cleans up its temp file."""
    path = tmp_path / "sub" / "registry.json"
    state = _state()
    save(path, encode(state))
    assert load(path).models == state.models
    assert sorted(p.name for p in path.parent.iterdir()) == ["registry.json"]


def test_save_writes_a_temp_file_then_renames_so_a_failed_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new content goes to a temp file first; if the rename fails the previous file is intact."""
    path = tmp_path / "registry.json"
    save(path, "old content")
    calls: list[tuple[str, str]] = []

    def failing_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append((Path(src).name, Path(dst).name))
        assert Path(src).read_text() == "new content"  # fully written before the rename
        raise OSError("disk on fire")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save(path, "new content")
    assert len(calls) == 1 and calls[0][1] == "registry.json"
    assert calls[0][0].startswith(".registry.json.") and calls[0][0].endswith(".tmp")  # a private temp name
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]  # the temp file is gone
    assert not list(tmp_path.glob("*.tmp"))  # a failed save leaves no temp file
    assert path.read_text() == "old content"


def test_with_operation_bounds_terminal_operations_oldest_first() -> None:
    """Past OPERATIONS_LIMIT the least recently updated finished operations are dropped."""
    state = RegistryState()
    for i in range(OPERATIONS_LIMIT + 5):
        state = state.with_operation(_op(f"sw-{i:04d}", now=float(i), terminal=True))
    assert len(state.operations) == OPERATIONS_LIMIT
    assert "sw-0000" not in state.operations
    assert "sw-0004" not in state.operations
    assert "sw-0005" in state.operations
    assert f"sw-{OPERATIONS_LIMIT + 4:04d}" in state.operations


def test_with_operation_never_drops_running_operations() -> None:
    """Running operations are kept even when they are the oldest and the bound is exceeded."""
    state = RegistryState()
    for i in range(3):
        state = state.with_operation(_op(f"run-{i}", now=float(i)))
    for i in range(OPERATIONS_LIMIT + 10):
        state = state.with_operation(_op(f"sw-{i:04d}", now=1000.0 + i, terminal=True))
    assert len(state.operations) == OPERATIONS_LIMIT
    assert {"run-0", "run-1", "run-2"} <= set(state.operations)
    assert all(not state.operations[f"run-{i}"].is_terminal for i in range(3))


def test_with_operation_replaces_an_operation_with_the_same_id() -> None:
    """Recording an operation again updates it in place rather than adding a copy."""
    op = _op("sw-a")
    state = RegistryState().with_operation(op).with_operation(abort(op, 2000.0))
    assert list(state.operations) == ["sw-a"]
    assert state.operations["sw-a"].state == "aborted"


def test_previous_stable_is_the_version_before_the_last_change() -> None:
    """A plain rollback returns to the ``previous`` of the newest history entry; none without history."""
    record = ModelRecord()
    assert record.previous_stable() is None
    record = record.with_history({"version": "2", "previous": "1"}).with_history({"version": "3", "previous": "2"})
    assert record.previous_stable() == "2"


def test_history_is_bounded() -> None:
    """Only the last HISTORY_LIMIT stable-version changes are kept."""
    record = ModelRecord()
    for i in range(registry_store.HISTORY_LIMIT + 3):
        record = record.with_history({"version": str(i + 2), "previous": str(i + 1)})
    assert len(record.history) == registry_store.HISTORY_LIMIT
    assert record.history[0]["version"] == "5"
