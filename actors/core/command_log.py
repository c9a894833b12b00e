"""The replicated command log, as pure decisions: what to apply, what to skip, where to resume.

Operator commands travel between replicas on one Redis stream. Each entry carries a
``command_id`` (unique per submission) besides the command itself. A replica keeps a
:class:`Cursor`: the id of the last stream entry it applied and the ids of the commands
it applied recently (its own submissions included). Reading resumes after ``last_id``,
so a replica that was down, stopped or partitioned replays what it missed, in stream
order; the command ids make the replay exactly-once even when an entry is written twice
(a retried XADD) or the replica's own submission comes back to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from actors.core.commands import Command, UnknownCommand, from_wire, to_wire

APPLIED_LIMIT = 2048
START = "0-0"


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair that sorts like Redis orders stream ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@attrs.frozen
class Cursor:
    """Where a replica stands in the command stream; replaced, never mutated."""

    last_id: str = START
    applied: tuple[str, ...] = ()

    def seen(self, command_id: str) -> bool:
        return command_id in self.applied

    def should_apply(self, entry_id: str, command_id: str) -> bool:
        """An entry is applied once: never one at or before ``last_id``, never a command already applied."""
        if parse_entry_id(entry_id) <= parse_entry_id(self.last_id):
            return False
        return not self.seen(command_id)

    def recorded(self, command_id: str) -> Cursor:
        """This replica applied ``command_id`` itself (a local submission)."""
        if self.seen(command_id):
            return self
        return attrs.evolve(self, applied=(*self.applied, command_id)[-APPLIED_LIMIT:])

    def advanced(self, entry_id: str, command_id: str) -> Cursor:
        """The entry was handled (applied or skipped): resume after it from now on."""
        return self.recorded(command_id).passed(entry_id)

    def passed(self, entry_id: str) -> Cursor:
        """Resume after ``entry_id`` (never moves back)."""
        if parse_entry_id(entry_id) <= parse_entry_id(self.last_id):
            return self
        return attrs.evolve(self, last_id=entry_id)

    def to_dict(self) -> dict[str, Any]:
        return {"last_id": self.last_id, "applied": list(self.applied)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cursor:
        last_id = str(data.get("last_id", START))
        parse_entry_id(last_id)  # raises ValueError when malformed
        return cls(last_id, tuple(str(c) for c in data.get("applied", ()))[-APPLIED_LIMIT:])


@attrs.frozen
class Entry:
    """One decoded stream entry."""

    entry_id: str
    command_id: str
    origin: str
    command: Command


def entry_fields(command: Command, *, command_id: str, origin: str) -> dict[str, str]:
    """The flat string fields of a stream entry (Redis stream values are strings)."""
    wire = to_wire(command)
    return {"command_id": command_id, "origin": origin, "kind": wire["kind"],
            "args": json.dumps(wire["args"], separators=(",", ":"), sort_keys=True)}


def decode_entry(entry_id: str, fields: Mapping[str, str]) -> Entry:
    """The entry's command; :class:`UnknownCommand` when it is malformed or names no command."""
    try:
        args = json.loads(fields["args"])
        command = from_wire({"kind": fields["kind"], "args": args})
        return Entry(entry_id, str(fields["command_id"]), str(fields.get("origin", "?")), command)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UnknownCommand):
            raise
        raise UnknownCommand(f"malformed command entry {entry_id}: {exc}") from exc
