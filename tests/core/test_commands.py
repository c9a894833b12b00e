"""Operator commands: every class has a wire name and survives the trip between workers."""

from __future__ import annotations

import typing

import attrs
import pytest

from actors.core.commands import (
    WIRE_NAMES,
    AbortSwitch,
    Command,
    DeregisterVersion,
    PromoteSwitch,
    RecordStep,
    RegisterVersion,
    ReloadConfig,
    ReloadModel,
    RollbackModel,
    RollbackOperation,
    SwitchModel,
    UnknownCommand,
    from_wire,
    mirrored,
    register_command,
    settled,
    to_wire,
)
from actors.core.errors import InvalidRequest

EXAMPLES: tuple[Command, ...] = (
    SwitchModel("fast", {"version": "2", "strategy": "gradual"}, "sw-1"),
    AbortSwitch("sw-1"),
    PromoteSwitch("sw-1"),
    RollbackModel("fast", "1", "sw-2"),
    RollbackOperation("sw-1", "breaker opened"),
    RegisterVersion("fast", "3", operation_id="sw-3"),
    DeregisterVersion("fast", "1"),
    ReloadModel("fast", "sw-4"),
    ReloadConfig("api"),
    RecordStep("sw-1", {"id": "sw-1", "state": "running"}, 3),
)


def test_every_command_class_has_a_wire_name_and_an_example() -> None:
    """A command added to the union without a wire name (or a test example) fails here."""
    classes = set(typing.get_args(Command))
    assert classes == set(WIRE_NAMES)
    assert {type(example) for example in EXAMPLES} == classes
    assert len(set(WIRE_NAMES.values())) == len(WIRE_NAMES)


@pytest.mark.parametrize("command", EXAMPLES, ids=lambda c: type(c).__name__)
def test_wire_round_trip(command: Command) -> None:
    wire = to_wire(command)
    assert set(wire) == {"kind", "args"}
    back = from_wire(wire)
    assert back == command
    assert attrs.asdict(back) == attrs.asdict(command)


def test_an_upload_never_crosses_the_wire() -> None:
    """The uploaded bytes are written once into the shared repository; other workers register the folder."""
    command = RegisterVersion("fast", "3", {"features": ["a"]}, "QUJD")
    wire = to_wire(command)
    assert "model_base64" not in wire["args"] and "metadata" not in wire["args"]
    assert from_wire(wire) == RegisterVersion("fast", "3")


@pytest.mark.parametrize("message", [
    {"kind": "nope", "args": {}},
    {"kind": "abort", "args": {"wrong": 1}},
    {"kind": "abort"},
    {"args": {}},
])
def test_unknown_or_misshapen_messages_are_refused(message: dict) -> None:
    with pytest.raises(UnknownCommand):
        from_wire(message)


def test_settled_fills_the_operation_id_this_worker_assigned() -> None:
    class Op:
        id = "sw-9"

    assert settled(SwitchModel("m", {}), Op()) == SwitchModel("m", {}, "sw-9")
    assert settled(ReloadModel("m"), {"operation_id": "sw-8"}) == ReloadModel("m", "sw-8")
    assert settled(ReloadModel("m"), {"operation_id": None}) == ReloadModel("m")
    assert settled(SwitchModel("m", {}, "sw-1"), Op()) == SwitchModel("m", {}, "sw-1")
    assert settled(AbortSwitch("sw-1"), Op()) == AbortSwitch("sw-1")


def test_a_mirrored_reload_says_it_came_over_the_control_bus() -> None:
    assert mirrored(ReloadConfig("api")) == ReloadConfig("control")
    assert mirrored(AbortSwitch("x")) == AbortSwitch("x")


def test_a_registration_body_becomes_its_command() -> None:
    command = register_command({"name": "tlob_tiny", "version": "2", "metadata": {"features": ["a"]},
                                "model_base64": "QUJD"})
    assert (command.model, command.version, command.model_base64) == ("tlob_tiny", "2", "QUJD")
    assert command.metadata == {"features": ["a"]}
    assert register_command({"name": "m", "version": "1"}).model_base64 is None


@pytest.mark.parametrize(("body", "field"), [
    ([], None),
    ({"name": "../etc", "version": "1"}, "name"),
    ({"name": "m", "version": "v1"}, "version"),
    ({"name": "m", "version": "1", "model_base64": 3}, "model_base64"),
])
def test_a_bad_registration_body_is_refused_naming_the_field(body: object, field: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        register_command(body)  # type: ignore[arg-type]
    assert caught.value.code == "bad_request"
    assert caught.value.details.get("field") == field


def test_unknown_registration_fields_are_listed() -> None:
    with pytest.raises(InvalidRequest) as caught:
        register_command({"name": "m", "version": "1", "path": "/etc/passwd"})
    assert caught.value.details["unknown"] == ["path"]
