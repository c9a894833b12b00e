"""Operator commands as data.

The HTTP layer builds these, the transition manager and the config watcher match on
them, and the control bus carries them between worker processes through one table
(:data:`WIRE_NAMES`), so a new command cannot forget to be mirrored: adding a class
here without a wire name fails :func:`to_wire` and the test that walks every command.

``operation_id`` is None when an operator issues a command; once the owning actor has
assigned one, :func:`settled` returns the command with it filled in, which is what other
workers apply, so an operation has one id everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from actors.core.errors import bad_request
from actors.core.versions import MODEL_NAME_RULE, is_model_name, is_version_name


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen
class SwitchModel:
    """Move ``model`` to a version with a strategy; ``params`` is the request body as sent."""

    model: str
    params: Mapping[str, Any] = attrs.field(converter=_frozen_mapping, eq=False)
    operation_id: str | None = None
    reason: str = "switch"


@attrs.frozen
class AbortSwitch:
    """Stop a running switch and return all traffic to the version it started from."""

    operation_id: str


@attrs.frozen
class PromoteSwitch:
    """Finish a running switch at once: all traffic to its target."""

    operation_id: str


@attrs.frozen
class RollbackModel:
    """Roll a model back: its running switch, else to ``version`` or the previous stable version."""

    model: str
    version: str | None = None
    operation_id: str | None = None


@attrs.frozen
class RollbackOperation:
    """Another worker's automatic rollback of a running switch (a breaker or a failed verdict)."""

    operation_id: str
    reason: str = "rolled back"


@attrs.frozen
class RegisterVersion:
    """Make a version folder known (after ``upload`` wrote it, when the body carried the file)."""

    model: str
    version: str
    metadata: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    model_base64: str | None = attrs.field(default=None, eq=False, repr=False)
    operation_id: str | None = None  # of the move to this version when the model follows "latest"


@attrs.frozen
class DeregisterVersion:
    """Take a version out of service for good (it must not serve traffic)."""

    model: str
    version: str


@attrs.frozen
class ReloadModel:
    """Rescan the repository and load the newest version of ``model``."""

    model: str
    operation_id: str | None = None


@attrs.frozen
class ReloadConfig:
    """Read, validate and apply the rules file; ``trigger`` says who asked (api, signal, control)."""

    trigger: str = "api"


@attrs.frozen
class RecordStep:
    """A rollout's leader recorded a step: every replica puts the operation in this state.

    ``operation`` is the whole operation (``Operation.to_dict``) as the leader holding the
    lease with token ``fence`` left it; a step from an older fence is ignored.
    """

    operation_id: str
    operation: Mapping[str, Any] = attrs.field(converter=_frozen_mapping, eq=False)
    fence: int = 0


Command = (SwitchModel | AbortSwitch | PromoteSwitch | RollbackModel | RollbackOperation | RegisterVersion
           | DeregisterVersion | ReloadModel | ReloadConfig | RecordStep)

# The wire table: one name per command class. The control bus serialises through it.
WIRE_NAMES: Mapping[type, str] = {
    SwitchModel: "switch",
    AbortSwitch: "abort",
    PromoteSwitch: "promote",
    RollbackModel: "rollback",
    RollbackOperation: "rollback_operation",
    RegisterVersion: "register",
    DeregisterVersion: "deregister",
    ReloadModel: "model_reload",
    ReloadConfig: "config_reload",
    RecordStep: "step",
}
_BY_NAME: Mapping[str, type] = {name: cls for cls, name in WIRE_NAMES.items()}
# Fields that never cross the wire: an upload is written once, into the shared repository.
_LOCAL_ONLY = frozenset({"model_base64", "metadata"})


class UnknownCommand(ValueError):
    """A wire message names no known command, or its fields do not fit the command."""


def to_wire(command: Command) -> dict[str, Any]:
    """``{"kind": name, "args": {...}}`` for JSON; raises KeyError for a class without a wire name."""
    name = WIRE_NAMES[type(command)]
    args = {f.name: getattr(command, f.name) for f in attrs.fields(type(command)) if f.name not in _LOCAL_ONLY}
    return {"kind": name, "args": {k: dict(v) if isinstance(v, Mapping) else v for k, v in args.items()}}


def from_wire(message: Mapping[str, Any]) -> Command:
    """The command a wire message describes; :class:`UnknownCommand` when it fits none."""
    cls = _BY_NAME.get(str(message.get("kind")))
    args = message.get("args")
    if cls is None or not isinstance(args, Mapping):
        raise UnknownCommand(f"unknown command {message.get('kind')!r}")
    try:
        return cls(**args)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise UnknownCommand(f"{message.get('kind')}: {exc}") from exc


def settled(command: Command, result: Any) -> Command:
    """The command as other workers must apply it: with the operation id this worker assigned."""
    operation_id = getattr(result, "id", None) or (result.get("operation_id") if isinstance(result, Mapping)
                                                   else None)
    if operation_id and hasattr(command, "operation_id") and command.operation_id is None:
        return attrs.evolve(command, operation_id=operation_id)  # type: ignore[arg-type]
    return command


def mirrored(command: Command) -> Command:
    """The command as a worker applies it on another's behalf (a config reload says who asked)."""
    if isinstance(command, ReloadConfig):
        return ReloadConfig("control")
    return command


def register_command(body: Mapping[str, Any]) -> RegisterVersion:
    """Validate a registration body at the edge: one name pattern, the one the repository accepts."""
    if not isinstance(body, Mapping):
        raise bad_request("body must be an object with name and version")
    name, version = str(body.get("name", "")), str(body.get("version", ""))
    if not is_model_name(name):
        raise bad_request(f"'name' must be {MODEL_NAME_RULE}", field="name", name=name[:80])
    if not is_version_name(version):
        raise bad_request("'version' must be a positive integer", field="version")
    unknown = sorted(set(body) - {"name", "version", "metadata", "model_base64"})
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", unknown=unknown)
    encoded = body.get("model_base64")
    if encoded is not None and not isinstance(encoded, str):
        raise bad_request("'model_base64' must be a base64 string", field="model_base64")
    metadata = body.get("metadata")
    return RegisterVersion(name, version, metadata if isinstance(metadata, Mapping) else None, encoded)
