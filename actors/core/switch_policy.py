"""Model version switches as a pure state machine, the traffic plans they imply, and version policy.

A *switch operation* moves a model's traffic from ``from_version`` to ``to_version`` using
one of four strategies:

* ``immediate`` — all traffic moves as soon as the target has loaded.
* ``gradual``   — the candidate's weight follows ``steps_bp`` (default 5 %, 25 %, 50 %, 100 %),
  one step per analysis interval, unless the health verdict reports a breach (rollback).
* ``canary``    — a fixed small weight (``canary_bp``) until ``healthy_intervals`` intervals
  *with enough data* have passed without a breach, then 100 %. Intervals without enough
  data do not count: a quiet market must not promote an unobserved model.
* ``ab``        — a fixed split (``split_bp``) that never moves on its own; an operator
  promotes or aborts once the comparison is conclusive.

Operations are immutable values: every transition returns a new :class:`Operation` with a
log entry, so the actor that owns them can persist each state (``to_dict``/``from_dict``)
and restart exactly where it was. Transitions on a terminal operation return it unchanged,
which makes late or duplicated events (a verdict arriving after an abort) harmless.

Nothing here performs I/O or reads a clock: ``now`` is always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from actors.core.assignment import BASIS_POINTS, goes_to_candidate, new_salt
from actors.core.versions import latest_version

STRATEGIES = ("immediate", "gradual", "canary", "ab")
OP_STATES = ("loading", "running", "completed", "aborted", "rolled_back", "failed")
TERMINAL_STATES = frozenset(OP_STATES[2:])
POLICIES = ("latest", "pinned")
MAX_LOG_ENTRIES = 50



# --------------------------------------------------------------------------- parameters


@attrs.frozen
class SwitchParams:
    """How a switch proceeds; weights in basis points (10000 = 100 %) so arithmetic stays exact."""

    strategy: str
    steps_bp: tuple[int, ...] = (500, 2500, 5000, 10000)
    interval_s: float = 30.0
    canary_bp: int = 1000
    healthy_intervals: int = 3
    split_bp: int = 5000
    max_transition_s: float = 300.0

    def to_dict(self) -> dict[str, Any]:
        """API/persistence form with percentages for humans; ``parse_switch_params`` reads it back."""
        return {
            "strategy": self.strategy,
            "steps": [bp_to_percent(bp) for bp in self.steps_bp],
            "interval_s": self.interval_s,
            "canary_weight": bp_to_percent(self.canary_bp),
            "healthy_intervals": self.healthy_intervals,
            "split": bp_to_percent(self.split_bp),
            "max_transition_s": self.max_transition_s,
        }


def percent_to_bp(percent: float) -> int:
    """Percent to basis points (``round(p * 100)``)."""
    return round(percent * 100)


def bp_to_percent(bp: int) -> float:
    """Basis points to a percent float (exactly invertible by :func:`percent_to_bp`)."""
    return bp / 100


_PARAM_KEYS = frozenset(
    {"strategy", "steps", "interval_s", "canary_weight", "healthy_intervals", "split", "max_transition_s"}
)
_ALLOWED_KEYS = _PARAM_KEYS | {"version"}


def _number(body: Mapping[str, Any], field: str, default: float) -> float:
    """A finite real number from the body; bools are rejected because ``True`` is not 1 second."""
    if field not in body:
        return default
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return float(value)


def _in_range(field: str, value: float, low: float, high: float, *, open_low: bool, open_high: bool) -> None:
    """Raise a ValueError naming ``field`` when ``value`` falls outside the interval."""
    below = value <= low if open_low else value < low
    above = value >= high if open_high else value > high
    if below or above:
        left = "(" if open_low else "["
        right = ")" if open_high else "]"
        raise ValueError(f"{field} must be in {left}{low:g}, {high:g}{right}, got {value:g}")


def _percent_weight(body: Mapping[str, Any], field: str, default_bp: int) -> int:
    """A percent strictly between 0 and 100 that stays so after conversion to basis points."""
    if field not in body:
        return default_bp
    value = _number(body, field, 0.0)
    _in_range(field, value, 0.0, 100.0, open_low=True, open_high=True)
    bp = percent_to_bp(value)
    if not 0 < bp < BASIS_POINTS:
        raise ValueError(f"{field} must be at least 0.01 % away from 0 and 100, got {value:g}")
    return bp


def _steps(body: Mapping[str, Any], default: tuple[int, ...]) -> tuple[int, ...]:
    """Strictly increasing percents in (0, 100] ending at 100, as basis points."""
    if "steps" not in body:
        return default
    raw = body["steps"]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"steps must be a non-empty list of percents, got {raw!r}")
    steps: list[int] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ValueError(f"steps must contain only finite numbers, got {item!r}")
        if not 0 < item <= 100:
            raise ValueError(f"steps must each be in (0, 100], got {item:g}")
        bp = percent_to_bp(item)
        if bp <= 0 or (steps and bp <= steps[-1]):
            raise ValueError(f"steps must be strictly increasing (to 0.01 %), got {list(raw)!r}")
        steps.append(bp)
    if steps[-1] != BASIS_POINTS:
        raise ValueError(f"steps must end at 100, got {list(raw)!r}")
    return tuple(steps)


def parse_switch_params(body: Mapping[str, Any], defaults: SwitchParams | None = None) -> SwitchParams:
    """Validate an API body (percent units) into :class:`SwitchParams`.

    Every field is optional and falls back to ``defaults`` (or the built-in defaults). A
    ``version`` key is tolerated because the same body names the target version. Errors are
    ``ValueError`` with the offending field in the message so the API can return it verbatim.
    """
    if not isinstance(body, Mapping):
        raise ValueError(f"body must be an object, got {type(body).__name__}")
    base = defaults if defaults is not None else SwitchParams(strategy="immediate")
    unknown = sorted(str(k) for k in body if k not in _ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")

    strategy = body.get("strategy", base.strategy)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")

    interval_s = _number(body, "interval_s", base.interval_s)
    _in_range("interval_s", interval_s, 0.01, 86400.0, open_low=False, open_high=False)

    max_transition_s = _number(body, "max_transition_s", base.max_transition_s)
    _in_range("max_transition_s", max_transition_s, 0.1, 86400.0, open_low=False, open_high=False)

    healthy_intervals = base.healthy_intervals
    if "healthy_intervals" in body:
        value = body["healthy_intervals"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"healthy_intervals must be an integer, got {value!r}")
        if not 1 <= value <= 1000:
            raise ValueError(f"healthy_intervals must be in [1, 1000], got {value}")
        healthy_intervals = value

    return SwitchParams(
        strategy=strategy,
        steps_bp=_steps(body, base.steps_bp),
        interval_s=interval_s,
        canary_bp=_percent_weight(body, "canary_weight", base.canary_bp),
        healthy_intervals=healthy_intervals,
        split_bp=_percent_weight(body, "split", base.split_bp),
        max_transition_s=max_transition_s,
    )


# --------------------------------------------------------------------------- operations


@attrs.frozen
class Verdict:
    """A health judgement over one analysis interval of the candidate version."""

    healthy: bool
    enough_data: bool
    breaches: tuple[str, ...] = ()


@attrs.frozen
class Operation:
    """One switch of one model, immutable; the owning actor replaces it on every transition.

    ``step`` counts gradual steps (index into ``steps_bp``) or, for canaries, healthy
    intervals observed so far. ``salt`` fixes which keys the candidate serves, so it is
    derived from the id and survives a restart.
    """

    id: str
    model: str
    from_version: str
    to_version: str
    params: SwitchParams
    state: str
    weight_bp: int
    step: int
    created_at: float
    updated_at: float
    salt: str
    reason: str | None = None
    log: tuple[dict, ...] = ()
    # Why the operation exists: an operator "switch", a "rollback", or an automatic move
    # after a "model_reload" or "model_registered". Events, metrics and history carry it.
    cause: str = "switch"

    @property
    def is_terminal(self) -> bool:
        """Completed, aborted, rolled back or failed: no further transition applies."""
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the API and for persistence; :meth:`from_dict` inverts it exactly."""
        return {
            "id": self.id,
            "model": self.model,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "strategy": self.params.strategy,
            "params": self.params.to_dict(),
            "state": self.state,
            "weight_percent": bp_to_percent(self.weight_bp),
            "weight_bp": self.weight_bp,
            "step": self.step,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "salt": self.salt,
            "reason": self.reason,
            "cause": self.cause,
            "log": [dict(entry) for entry in self.log],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Operation:
        """Rebuild a persisted operation (validating its params) so it resumes after a restart."""
        state = d["state"]
        if state not in OP_STATES:
            raise ValueError(f"state must be one of {', '.join(OP_STATES)}, got {state!r}")
        params = parse_switch_params(d["params"])
        weight_bp = int(d["weight_bp"]) if "weight_bp" in d else percent_to_bp(d["weight_percent"])
        return cls(
            id=str(d["id"]),
            model=str(d["model"]),
            from_version=str(d["from_version"]),
            to_version=str(d["to_version"]),
            params=params,
            state=state,
            weight_bp=weight_bp,
            step=int(d["step"]),
            created_at=float(d["created_at"]),
            updated_at=float(d["updated_at"]),
            salt=str(d.get("salt") or new_salt(str(d["id"]))),
            reason=d.get("reason"),
            log=tuple(dict(entry) for entry in d.get("log", ())),
            cause=str(d.get("cause") or "switch"),
        )


# ----------------------------------------------------------------------------- the table

# The operation's state machine, in the manner of h11's ``_state.py``: state -> event ->
# the states that event may lead to. Events whose result depends on data (a verdict, a
# first step of 100 %) list every possible result. Every transition below goes through
# :func:`_checked`, so a change the table does not allow is a bug caught at once, and the
# tests walk this table rather than re-deriving it.
OPERATION_TRANSITIONS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "loading": {
        "begin": frozenset({"running", "completed"}),
        "abort": frozenset({"aborted"}),
        "rollback": frozenset({"rolled_back"}),
        "fail": frozenset({"failed"}),
    },
    "running": {
        "verdict": frozenset({"running", "completed", "rolled_back"}),
        "promote": frozenset({"completed"}),
        "abort": frozenset({"aborted"}),
        "rollback": frozenset({"rolled_back"}),
        "fail": frozenset({"failed"}),
    },
    "completed": {},
    "aborted": {},
    "rolled_back": {},
    "failed": {},
}


class InvalidOperationTransition(ValueError):
    """A transition the table does not allow was attempted: a bug in the caller."""


def _checked(before: Operation, event: str, after: Operation) -> Operation:
    """``after`` if ``before --event--> after`` is in the table (no change is always allowed)."""
    if after is before or (after.state == before.state == "running" and event == "verdict"):
        return after
    allowed = OPERATION_TRANSITIONS[before.state].get(event, frozenset())
    if after.state not in allowed:
        raise InvalidOperationTransition(f"{before.state} --{event}--> {after.state} is not a transition")
    return after


def _log_entry(now: float, event: str, weight_bp: int, detail: str | None) -> dict[str, Any]:
    """One log record; plain dict so it serialises as-is."""
    return {"at": now, "event": event, "weight_bp": weight_bp, "detail": detail}


def _evolve(op: Operation, now: float, event: str, detail: str | None = None, **changes: Any) -> Operation:
    """Apply changes, stamp ``updated_at`` and append a log entry (keeping the last 50)."""
    new = attrs.evolve(op, updated_at=now, **changes)
    log = (*op.log, _log_entry(now, event, new.weight_bp, detail))[-MAX_LOG_ENTRIES:]
    return attrs.evolve(new, log=log)


def new_operation(
    op_id: str, model: str, from_version: str, to_version: str, params: SwitchParams, now: float,
    cause: str = "switch",
) -> Operation:
    """A switch waiting for its target to load: no traffic moves until :func:`begin`."""
    op = Operation(
        id=op_id,
        model=model,
        from_version=from_version,
        to_version=to_version,
        params=params,
        state="loading",
        weight_bp=0,
        step=0,
        created_at=now,
        updated_at=now,
        salt=new_salt(op_id),
        cause=cause,
    )
    return _evolve(op, now, "created", f"{params.strategy} switch {from_version} -> {to_version}")


def _complete(op: Operation, now: float, detail: str) -> Operation:
    """All traffic on the target version."""
    return _evolve(op, now, "completed", detail, state="completed", weight_bp=BASIS_POINTS)


def begin(op: Operation, now: float) -> Operation:
    """Target loaded: start sending it traffic according to the strategy (see :func:`_begin`)."""
    return _checked(op, "begin", _begin(op, now))


def _begin(op: Operation, now: float) -> Operation:
    """Target loaded: start sending it traffic according to the strategy.

    Only valid from ``loading``; on any other state the operation is returned unchanged so a
    duplicated "loaded" event cannot reset a rollout in progress.
    """
    if op.state != "loading":
        return op
    params = op.params
    strategy = params.strategy
    if strategy == "immediate":
        started = _evolve(op, now, "started", "immediate", state="running", weight_bp=BASIS_POINTS)
        return _complete(started, now, "immediate switch")
    if strategy == "gradual":
        weight = params.steps_bp[0]
    elif strategy == "canary":
        weight = params.canary_bp
    else:
        weight = params.split_bp
    started = _evolve(op, now, "started", strategy, state="running", weight_bp=weight, step=0)
    if weight >= BASIS_POINTS:
        return _complete(started, now, "first step is 100 %")
    return started


def advance(op: Operation, verdict: Verdict, now: float) -> Operation:
    """One analysis interval elapsed with this verdict (see :func:`_advance`)."""
    return _checked(op, "verdict", _advance(op, verdict, now))


def _advance(op: Operation, verdict: Verdict, now: float) -> Operation:
    """One analysis interval elapsed with this verdict on the candidate; move the rollout on.

    Only a ``running`` operation advances (a loading one has no candidate traffic to judge).
    """
    if op.state != "running":
        return op
    params = op.params
    breach_text = "; ".join(verdict.breaches)
    if params.strategy == "ab":
        if verdict.breaches:
            return _evolve(op, now, "breach", breach_text)
        return attrs.evolve(op, updated_at=now)
    if verdict.breaches:
        return rollback(op, now, f"health breach: {breach_text}")
    if params.strategy == "gradual":
        step = min(op.step + 1, len(params.steps_bp) - 1)
        weight = params.steps_bp[step]
        stepped = _evolve(op, now, "step", f"step {step + 1}/{len(params.steps_bp)}", step=step, weight_bp=weight)
        if weight >= BASIS_POINTS:
            return _complete(stepped, now, "final step reached")
        return stepped
    if params.strategy == "canary":
        if not verdict.enough_data:
            return _evolve(op, now, "waiting for data", f"{op.step}/{params.healthy_intervals} healthy intervals")
        step = op.step + 1
        healthy = _evolve(op, now, "healthy interval", f"{step}/{params.healthy_intervals}", step=step)
        if step >= params.healthy_intervals:
            return _complete(healthy, now, f"{step} healthy intervals")
        return healthy
    # immediate completes in begin(); a running immediate op (e.g. hand-built) just completes.
    return _complete(op, now, "immediate switch")


def _end(op: Operation, now: float, state: str, reason: str, weight_bp: int) -> Operation:
    """Move a non-terminal operation to a terminal state with a reason."""
    if op.is_terminal:
        return op
    return _evolve(op, now, state, reason, state=state, weight_bp=weight_bp, reason=reason)


def abort(op: Operation, now: float, reason: str = "aborted by operator") -> Operation:
    """Operator stop: all traffic back to ``from_version``."""
    return _checked(op, "abort", _end(op, now, "aborted", reason, 0))


def rollback(op: Operation, now: float, reason: str) -> Operation:
    """Automatic stop (health breach, deadline): all traffic back to ``from_version``."""
    return _checked(op, "rollback", _end(op, now, "rolled_back", reason, 0))


def promote(op: Operation, now: float) -> Operation:
    """Operator decision to finish early (e.g. a conclusive A/B test): all traffic to the target.

    Only from ``running``: promoting while the target is still loading would route traffic to
    a model that is not there, so that call returns the operation unchanged.
    """
    if op.state != "running":
        return op
    return _checked(op, "promote", _complete(op, now, "promoted by operator"))


def fail(op: Operation, now: float, reason: str) -> Operation:
    """The switch cannot proceed (e.g. the target failed to load): stay on ``from_version``."""
    return _checked(op, "fail", _end(op, now, "failed", reason, 0))


# --------------------------------------------------------------------------- traffic plans


@attrs.frozen
class TrafficPlan:
    """Which versions of one model serve traffic, and how keys are split between them."""

    model: str
    stable: str
    candidate: str | None = None
    weight_bp: int = 0
    salt: str = ""
    operation_id: str | None = None

    def pick(self, key: str) -> str:
        """The version serving ``key``; sticky for the life of the operation (see actors.core.assignment)."""
        if self.candidate and self.weight_bp > 0 and goes_to_candidate(self.salt, key, self.weight_bp):
            return self.candidate
        return self.stable

    def _candidate_share(self) -> float:
        """The candidate's traffic fraction (0 without a candidate)."""
        if not self.candidate:
            return 0.0
        return min(max(self.weight_bp, 0), BASIS_POINTS) / BASIS_POINTS

    def share(self, version: str) -> float:
        """Expected fraction of traffic (0..1) that ``version`` serves under this plan."""
        candidate_share = self._candidate_share()
        total = 0.0
        if version == self.stable:
            total += 1.0 - candidate_share
        if self.candidate and version == self.candidate:
            total += candidate_share
        return total

    def versions(self) -> tuple[str, ...]:
        """Versions that must stay loaded: stable, then the candidate if any."""
        if self.candidate and self.candidate != self.stable:
            return (self.stable, self.candidate)
        return (self.stable,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (weight in basis points and percent)."""
        return {
            "model": self.model,
            "stable": self.stable,
            "candidate": self.candidate,
            "weight_bp": self.weight_bp,
            "weight_percent": bp_to_percent(self.weight_bp),
            "salt": self.salt,
            "operation_id": self.operation_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrafficPlan:
        """Inverse of :meth:`to_dict`."""
        weight_bp = int(d["weight_bp"]) if "weight_bp" in d else percent_to_bp(d.get("weight_percent", 0.0))
        return cls(
            model=str(d["model"]),
            stable=str(d["stable"]),
            candidate=d.get("candidate"),
            weight_bp=weight_bp,
            salt=str(d.get("salt", "")),
            operation_id=d.get("operation_id"),
        )


def plan_for(op: Operation) -> TrafficPlan:
    """The traffic plan an operation implies in its current state."""
    if op.state in ("loading", "running"):
        return TrafficPlan(
            model=op.model,
            stable=op.from_version,
            candidate=op.to_version,
            weight_bp=op.weight_bp,
            salt=op.salt,
            operation_id=op.id,
        )
    if op.state == "completed":
        return TrafficPlan(model=op.model, stable=op.to_version)
    return TrafficPlan(model=op.model, stable=op.from_version)


# --------------------------------------------------------------------------- version policy


def resolve_stable(policy: str, available: Iterable[str], pinned: str | None, failed: Iterable[str] = ()) -> str | None:
    """The version a model should serve when no switch is running.

    ``latest`` follows the newest available version that has not failed (a broken upload
    must not take over). ``pinned`` keeps the operator's choice while it exists; if the
    pinned folder disappears, serving the newest healthy version beats serving nothing.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    versions = list(available)
    if policy == "pinned" and pinned is not None and pinned in versions:
        return pinned
    bad = set(failed)
    return latest_version(v for v in versions if v not in bad)
