"""The command log's decisions: resume after the cursor, apply each submission once."""

from __future__ import annotations

import pytest

from actors.core.command_log import APPLIED_LIMIT, Cursor, decode_entry, entry_fields, parse_entry_id
from actors.core.commands import AbortSwitch, SwitchModel, UnknownCommand


def test_entry_ids_order_like_redis() -> None:
    assert parse_entry_id("10-2") < parse_entry_id("10-10") < parse_entry_id("11-0")
    with pytest.raises(ValueError):
        parse_entry_id("x-1")


def test_a_cursor_applies_each_command_once_and_never_moves_back() -> None:
    cursor = Cursor()
    assert cursor.should_apply("1-0", "a")
    cursor = cursor.advanced("1-0", "a")
    assert not cursor.should_apply("1-0", "b")  # at the cursor
    assert not cursor.should_apply("2-0", "a")  # same submission written again
    cursor = cursor.recorded("local")
    assert not cursor.should_apply("3-0", "local")  # a replica's own submission coming back
    assert cursor.passed("0-5").last_id == "1-0"
    assert Cursor.from_dict(cursor.to_dict()) == cursor


def test_the_applied_set_is_bounded() -> None:
    cursor = Cursor()
    for i in range(APPLIED_LIMIT + 10):
        cursor = cursor.recorded(str(i))
    assert len(cursor.applied) == APPLIED_LIMIT and not cursor.seen("0") and cursor.seen(str(APPLIED_LIMIT + 9))


def test_entries_round_trip_and_malformed_ones_are_refused() -> None:
    command = SwitchModel("m", {"version": "2", "strategy": "canary"}, "sw-1")
    entry = decode_entry("4-0", entry_fields(command, command_id="c", origin="o"))
    assert (entry.command, entry.command_id, entry.origin) == (command, "c", "o")
    assert decode_entry("5-0", entry_fields(AbortSwitch("x"), command_id="d", origin="o")).command == AbortSwitch("x")
    for bad in ({"kind": "abort"}, {"kind": "abort", "args": "{", "command_id": "c"},
                {"kind": "nope", "args": "{}", "command_id": "c"}):
        with pytest.raises(UnknownCommand):
            decode_entry("6-0", bad)
