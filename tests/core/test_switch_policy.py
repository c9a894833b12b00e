"""Switch operations as a state machine, traffic plans and version policy (actors/core/switch_policy.py)."""

from __future__ import annotations

import json

import attrs
import pytest

from actors.core.assignment import goes_to_candidate, new_salt
from actors.core.switch_policy import (
    OP_STATES,
    OPERATION_TRANSITIONS,
    POLICIES,
    STRATEGIES,
    InvalidOperationTransition,
    Operation,
    SwitchParams,
    TrafficPlan,
    Verdict,
    abort,
    advance,
    begin,
    fail,
    new_operation,
    parse_switch_params,
    plan_for,
    promote,
    resolve_stable,
    rollback,
)
from actors.core.versions import latest_version as newest_version

HEALTHY = Verdict(healthy=True, enough_data=True)
NO_DATA = Verdict(healthy=False, enough_data=False)
BREACH = Verdict(healthy=False, enough_data=True, breaches=("error_rate 0.2 > 0.05", "latency p95 900.0 ms > 500.0 ms"))


def _op(strategy: str, **params: object) -> Operation:
    """A freshly created operation 1 -> 2 for model ``m`` at t=100."""
    return new_operation("op1", "m", "1", "2", SwitchParams(strategy=strategy, **params), 100.0)


def _started(strategy: str, **params: object) -> Operation:
    """The same operation after its target loaded at t=101."""
    return begin(_op(strategy, **params), 101.0)


# --------------------------------------------------------------------------- constants and params


def test_constants() -> None:
    """The public vocabularies the API and actors rely on."""
    assert STRATEGIES == ("immediate", "gradual", "canary", "ab")
    assert OP_STATES == ("loading", "running", "completed", "aborted", "rolled_back", "failed")
    assert POLICIES == ("latest", "pinned")


def test_params_to_dict_in_percent() -> None:
    """to_dict shows weights as percent floats."""
    d = SwitchParams(strategy="gradual").to_dict()
    assert d == {
        "strategy": "gradual",
        "steps": [5.0, 25.0, 50.0, 100.0],
        "interval_s": 30.0,
        "canary_weight": 10.0,
        "healthy_intervals": 3,
        "split": 50.0,
        "max_transition_s": 300.0,
    }
    json.dumps(d)


def test_parse_defaults() -> None:
    """An empty body (or one naming only the version) is an immediate switch with defaults."""
    assert parse_switch_params({}) == SwitchParams(strategy="immediate")
    assert parse_switch_params({"version": "7"}) == SwitchParams(strategy="immediate")


def test_parse_full_body() -> None:
    """Every field converts to the internal units (percent -> basis points)."""
    params = parse_switch_params(
        {
            "version": "3",
            "strategy": "gradual",
            "steps": [1, 12.5, 100],
            "interval_s": 5,
            "canary_weight": 2.5,
            "healthy_intervals": 7,
            "split": 20,
            "max_transition_s": 60,
        }
    )
    assert params == SwitchParams(
        strategy="gradual",
        steps_bp=(100, 1250, 10000),
        interval_s=5.0,
        canary_bp=250,
        healthy_intervals=7,
        split_bp=2000,
        max_transition_s=60.0,
    )


def test_parse_uses_given_defaults() -> None:
    """Fields missing from the body come from the service's configured defaults."""
    defaults = SwitchParams(strategy="canary", interval_s=2.0, canary_bp=300)
    assert parse_switch_params({"healthy_intervals": 5}, defaults) == SwitchParams(
        strategy="canary", interval_s=2.0, canary_bp=300, healthy_intervals=5
    )


def test_params_round_trip_through_parse() -> None:
    """parse(to_dict()) reproduces the params exactly (used when operations are persisted)."""
    params = SwitchParams(strategy="ab", steps_bp=(1, 9999, 10000), canary_bp=1, split_bp=9999, interval_s=0.01)
    assert parse_switch_params(params.to_dict()) == params


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "yolo"}, "strategy"),
        ({"strategy": 1}, "strategy"),
        ({"steps": []}, "steps"),
        ({"steps": "5,100"}, "steps"),
        ({"steps": [50, 25, 100]}, "steps"),
        ({"steps": [25, 25, 100]}, "steps"),
        ({"steps": [0, 100]}, "steps"),
        ({"steps": [-5, 100]}, "steps"),
        ({"steps": [50, 150]}, "steps"),
        ({"steps": [5, 50]}, "steps"),
        ({"steps": [True, 100]}, "steps"),
        ({"steps": [5.001, 5.002, 100]}, "steps"),
        ({"steps": [float("nan"), 100]}, "steps"),
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": 0.001}, "interval_s"),
        ({"interval_s": 86401}, "interval_s"),
        ({"interval_s": "5"}, "interval_s"),
        ({"interval_s": True}, "interval_s"),
        ({"interval_s": float("inf")}, "interval_s"),
        ({"canary_weight": 0}, "canary_weight"),
        ({"canary_weight": 100}, "canary_weight"),
        ({"canary_weight": -1}, "canary_weight"),
        ({"canary_weight": 0.001}, "canary_weight"),
        ({"canary_weight": False}, "canary_weight"),
        ({"healthy_intervals": 0}, "healthy_intervals"),
        ({"healthy_intervals": 1001}, "healthy_intervals"),
        ({"healthy_intervals": 2.5}, "healthy_intervals"),
        ({"healthy_intervals": True}, "healthy_intervals"),
        ({"split": 0}, "split"),
        ({"split": 100}, "split"),
        ({"split": None}, "split"),
        ({"max_transition_s": 0.05}, "max_transition_s"),
        ({"max_transition_s": 100000}, "max_transition_s"),
        ({"max_transition_s": False}, "max_transition_s"),
        ({"speed": "fast"}, "speed"),
    ],
)
def test_parse_invalid_names_the_field(body: dict, field: str) -> None:
    """Each invalid field is rejected with a ValueError naming it."""
    with pytest.raises(ValueError, match=field):
        parse_switch_params(body)


def test_parse_boundaries_accepted() -> None:
    """Inclusive bounds are accepted."""
    params = parse_switch_params(
        {"interval_s": 0.01, "max_transition_s": 86400, "healthy_intervals": 1000, "steps": [100]}
    )
    assert params.interval_s == 0.01
    assert params.max_transition_s == 86400.0
    assert params.healthy_intervals == 1000
    assert params.steps_bp == (10000,)
    upper = parse_switch_params({"interval_s": 86400, "max_transition_s": 0.1, "healthy_intervals": 1})
    assert (upper.interval_s, upper.max_transition_s, upper.healthy_intervals) == (86400.0, 0.1, 1)


def test_parse_rejects_non_mapping() -> None:
    """A JSON array or string body is an error, not a crash."""
    with pytest.raises(ValueError, match="body"):
        parse_switch_params(["gradual"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- operation basics


def test_new_operation() -> None:
    """A new operation is loading, carries no traffic, and derives its salt from its id."""
    op = _op("gradual")
    assert op.state == "loading"
    assert op.weight_bp == 0
    assert op.step == 0
    assert op.created_at == op.updated_at == 100.0
    assert op.salt == new_salt("op1")
    assert not op.is_terminal
    assert [e["event"] for e in op.log] == ["created"]
    assert set(op.log[0]) == {"at", "event", "weight_bp", "detail"}


def test_immediate_completes_at_begin() -> None:
    """Immediate: all traffic moves as soon as the target has loaded."""
    op = _started("immediate")
    assert op.state == "completed"
    assert op.weight_bp == 10000
    assert op.is_terminal
    assert op.updated_at == 101.0
    assert op.log[-1]["event"] == "completed"


def test_begin_only_from_loading() -> None:
    """A duplicated "loaded" event does not reset a running rollout."""
    op = advance(_started("gradual"), HEALTHY, 131.0)
    assert begin(op, 140.0) is op


# --------------------------------------------------------------------------- gradual


def test_gradual_full_path_to_completion() -> None:
    """Gradual walks 5 % -> 25 % -> 50 % -> 100 % on healthy intervals, then completes."""
    op = _started("gradual")
    assert (op.state, op.weight_bp, op.step) == ("running", 500, 0)
    seen = [op.weight_bp]
    now = 101.0
    while not op.is_terminal:
        now += 30.0
        op = advance(op, HEALTHY, now)
        seen.append(op.weight_bp)
    assert seen == [500, 2500, 5000, 10000]
    assert op.state == "completed"
    assert op.updated_at == now
    assert advance(op, HEALTHY, now + 30) is op


def test_gradual_advances_without_data() -> None:
    """Gradual is time-driven: only a breach stops it, missing data does not."""
    op = advance(_started("gradual"), NO_DATA, 131.0)
    assert (op.state, op.weight_bp, op.step) == ("running", 2500, 1)


@pytest.mark.parametrize("healthy_steps", [0, 1, 2])
def test_gradual_breach_rolls_back_at_any_step(healthy_steps: int) -> None:
    """A breach at any step rolls back to the old version and names the breaches."""
    op = _started("gradual")
    for i in range(healthy_steps):
        op = advance(op, HEALTHY, 131.0 + 30 * i)
    op = advance(op, BREACH, 500.0)
    assert op.state == "rolled_back"
    assert op.weight_bp == 0
    assert op.reason == "health breach: error_rate 0.2 > 0.05; latency p95 900.0 ms > 500.0 ms"
    assert op.is_terminal


def test_gradual_single_step_completes_at_begin() -> None:
    """steps=[100] is an immediate switch in disguise."""
    op = _started("gradual", steps_bp=(10000,))
    assert (op.state, op.weight_bp) == ("completed", 10000)


# --------------------------------------------------------------------------- canary


def test_canary_waits_without_data_then_promotes_after_n_healthy() -> None:
    """Canary holds its weight while data is missing; N healthy intervals with data promote it."""
    op = _started("canary", healthy_intervals=3)
    assert (op.state, op.weight_bp, op.step) == ("running", 1000, 0)
    for i in range(5):
        op = advance(op, NO_DATA, 110.0 + i)
    assert (op.state, op.weight_bp, op.step) == ("running", 1000, 0)
    assert op.log[-1]["event"] == "waiting for data"
    op = advance(op, HEALTHY, 120.0)
    op = advance(op, HEALTHY, 121.0)
    assert (op.state, op.weight_bp, op.step) == ("running", 1000, 2)
    op = advance(op, NO_DATA, 122.0)
    assert op.step == 2
    op = advance(op, HEALTHY, 123.0)
    assert (op.state, op.weight_bp, op.step) == ("completed", 10000, 3)


def test_canary_breach_rolls_back() -> None:
    """A breach during the canary rolls back."""
    op = advance(_started("canary"), HEALTHY, 110.0)
    op = advance(op, BREACH, 111.0)
    assert (op.state, op.weight_bp) == ("rolled_back", 0)
    assert op.reason is not None
    assert op.reason.startswith("health breach: ")


# --------------------------------------------------------------------------- ab


def test_ab_never_moves() -> None:
    """A/B keeps its split and state whatever the verdicts; breaches are only logged."""
    op = _started("ab", split_bp=3000)
    assert (op.state, op.weight_bp) == ("running", 3000)
    log_len = len(op.log)
    for i, verdict in enumerate([HEALTHY, NO_DATA, HEALTHY, HEALTHY, HEALTHY]):
        op = advance(op, verdict, 110.0 + i)
    assert (op.state, op.weight_bp) == ("running", 3000)
    assert len(op.log) == log_len
    assert op.updated_at == 114.0
    op = advance(op, BREACH, 120.0)
    assert (op.state, op.weight_bp) == ("running", 3000)
    assert op.log[-1]["event"] == "breach"
    assert "error_rate" in op.log[-1]["detail"]


# --------------------------------------------------------------------------- operator actions


@pytest.mark.parametrize("strategy", ["gradual", "canary", "ab"])
def test_abort_from_running(strategy: str) -> None:
    """Abort stops any running strategy and sends all traffic back."""
    op = abort(_started(strategy), 150.0)
    assert (op.state, op.weight_bp, op.reason) == ("aborted", 0, "aborted by operator")
    assert op.updated_at == 150.0
    assert op.log[-1] == {"at": 150.0, "event": "aborted", "weight_bp": 0, "detail": "aborted by operator"}


def test_abort_while_loading_and_custom_reason() -> None:
    """An operation can be aborted before its target has loaded."""
    op = abort(_op("canary"), 100.5, reason="changed my mind")
    assert (op.state, op.reason) == ("aborted", "changed my mind")


def test_promote_from_running() -> None:
    """Promote finishes an A/B test (or a rollout) early."""
    op = promote(_started("ab"), 200.0)
    assert (op.state, op.weight_bp) == ("completed", 10000)


def test_promote_while_loading_is_a_no_op() -> None:
    """Promoting a target that has not loaded would route traffic to nothing."""
    op = _op("gradual")
    assert promote(op, 100.5) is op


def test_fail_and_rollback() -> None:
    """fail and rollback end the operation on the old version with the given reason."""
    failed = fail(_op("gradual"), 100.5, "load error: bad file")
    assert (failed.state, failed.weight_bp, failed.reason) == ("failed", 0, "load error: bad file")
    rolled = rollback(_started("canary"), 150.0, "deadline passed")
    assert (rolled.state, rolled.weight_bp, rolled.reason) == ("rolled_back", 0, "deadline passed")


def test_terminal_operations_are_inert() -> None:
    """Every transition on a terminal operation returns it unchanged."""
    terminals = [
        _started("immediate"),
        abort(_started("gradual"), 150.0),
        rollback(_started("gradual"), 150.0, "x"),
        fail(_op("gradual"), 150.0, "x"),
    ]
    for op in terminals:
        assert op.is_terminal
        assert begin(op, 999.0) is op
        assert advance(op, HEALTHY, 999.0) is op
        assert advance(op, BREACH, 999.0) is op
        assert abort(op, 999.0) is op
        assert rollback(op, 999.0, "y") is op
        assert promote(op, 999.0) is op
        assert fail(op, 999.0, "y") is op


def test_log_is_bounded_to_last_50() -> None:
    """The log keeps only the 50 most recent entries."""
    op = _started("canary", healthy_intervals=1000)
    for i in range(120):
        op = advance(op, NO_DATA, 200.0 + i)
    assert len(op.log) == 50
    assert op.log[-1]["at"] == 319.0
    assert op.log[0]["at"] == 270.0


# --------------------------------------------------------------------------- persistence


def test_to_dict_from_dict_round_trip_in_every_state() -> None:
    """from_dict(to_dict()) restores the operation exactly, through JSON, in every state."""
    ops = [
        _op("gradual", steps_bp=(100, 3333, 10000), interval_s=0.5),
        _started("canary", canary_bp=250),
        advance(_started("gradual"), HEALTHY, 131.0),
        _started("ab", split_bp=1234),
        _started("immediate"),
        abort(_started("ab"), 150.0),
        advance(_started("gradual"), BREACH, 131.0),
        fail(_op("canary"), 101.0, "load error"),
    ]
    for op in ops:
        d = op.to_dict()
        restored = Operation.from_dict(json.loads(json.dumps(d)))
        assert restored == op
        assert restored.to_dict() == d


def test_to_dict_fields() -> None:
    """to_dict has the documented keys, weight as a percent."""
    d = advance(_started("gradual"), HEALTHY, 131.0).to_dict()
    assert {
        "id",
        "model",
        "from_version",
        "to_version",
        "strategy",
        "params",
        "state",
        "weight_percent",
        "step",
        "created_at",
        "updated_at",
        "reason",
        "log",
    } <= set(d)
    assert d["weight_percent"] == 25.0
    assert d["strategy"] == "gradual"
    assert d["params"]["steps"] == [5.0, 25.0, 50.0, 100.0]


def test_from_dict_without_optional_keys() -> None:
    """Salt and weight_bp are derived when absent (weight from the percent, salt from the id)."""
    d = _started("canary").to_dict()
    del d["salt"], d["weight_bp"]
    restored = Operation.from_dict(d)
    assert restored.salt == new_salt("op1")
    assert restored.weight_bp == 1000


def test_from_dict_rejects_unknown_state() -> None:
    """A corrupt persisted state is an error, not a silently stuck operation."""
    d = _op("gradual").to_dict()
    d["state"] = "exploded"
    with pytest.raises(ValueError, match="state"):
        Operation.from_dict(d)


# --------------------------------------------------------------------------- traffic plans


def test_plan_for_each_state() -> None:
    """Loading/running split between versions; completed serves the target; the rest the source."""
    loading = plan_for(_op("gradual"))
    assert loading == TrafficPlan(model="m", stable="1", candidate="2", weight_bp=0, salt="op-op1", operation_id="op1")
    assert loading.share("1") == 1.0

    running = plan_for(_started("canary"))
    assert running == TrafficPlan(
        model="m", stable="1", candidate="2", weight_bp=1000, salt="op-op1", operation_id="op1"
    )

    assert plan_for(_started("immediate")) == TrafficPlan(model="m", stable="2")
    for ended in (
        abort(_started("ab"), 150.0),
        rollback(_started("gradual"), 150.0, "x"),
        fail(_op("gradual"), 150.0, "x"),
    ):
        assert plan_for(ended) == TrafficPlan(model="m", stable="1")


def test_plan_pick_follows_assignment() -> None:
    """pick sends exactly the keys the assignment scheme selects to the candidate."""
    plan = TrafficPlan(model="m", stable="1", candidate="2", weight_bp=2500, salt="op-z")
    for i in range(500):
        key = f"k{i}"
        expected = "2" if goes_to_candidate("op-z", key, 2500) else "1"
        assert plan.pick(key) == expected


def test_plan_pick_extremes() -> None:
    """No candidate or weight 0 -> always stable; weight 10000 -> always candidate."""
    keys = [f"k{i}" for i in range(300)]
    assert {TrafficPlan(model="m", stable="1").pick(k) for k in keys} == {"1"}
    assert {TrafficPlan(model="m", stable="1", candidate="2", weight_bp=0).pick(k) for k in keys} == {"1"}
    assert {TrafficPlan(model="m", stable="1", candidate="2", weight_bp=10000).pick(k) for k in keys} == {"2"}


def test_plan_share_and_versions() -> None:
    """Shares sum to one over the plan's versions; unknown versions get nothing."""
    plan = TrafficPlan(model="m", stable="1", candidate="2", weight_bp=2500)
    assert plan.share("1") == pytest.approx(0.75)
    assert plan.share("2") == pytest.approx(0.25)
    assert plan.share("3") == 0.0
    assert plan.versions() == ("1", "2")
    only = TrafficPlan(model="m", stable="4")
    assert only.versions() == ("4",)
    assert only.share("4") == 1.0


def test_plan_round_trip() -> None:
    """TrafficPlan.from_dict inverts to_dict (through JSON)."""
    for plan in (
        TrafficPlan(model="m", stable="1"),
        TrafficPlan(model="m", stable="1", candidate="2", weight_bp=1234, salt="op-q", operation_id="q"),
    ):
        assert TrafficPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


# --------------------------------------------------------------------------- version policy


def test_newest_version_is_numeric() -> None:
    """Numeric order ("10" beats "9"); non-numeric names are ignored; nothing -> None."""
    assert newest_version(["1", "9", "10", "2"]) == "10"
    assert newest_version(["latest", "v3", "2"]) == "2"
    assert newest_version([]) is None
    assert newest_version(["x"]) is None


def test_resolve_stable_latest() -> None:
    """latest: newest available version that has not failed."""
    assert resolve_stable("latest", ["1", "2", "10"], None) == "10"
    assert resolve_stable("latest", ["1", "2", "10"], "2") == "10"
    assert resolve_stable("latest", ["1", "2", "10"], None, failed=["10"]) == "2"
    assert resolve_stable("latest", ["1"], None, failed=["1"]) is None
    assert resolve_stable("latest", [], None) is None


def test_resolve_stable_pinned() -> None:
    """pinned: the pinned version while it exists, else the newest healthy one."""
    assert resolve_stable("pinned", ["1", "2", "3"], "2") == "2"
    assert resolve_stable("pinned", ["1", "3"], "2") == "3"
    assert resolve_stable("pinned", ["1", "3"], "2", failed=["3"]) == "1"
    assert resolve_stable("pinned", ["1", "3"], None) == "3"


def test_resolve_stable_unknown_policy() -> None:
    """An unknown policy is a configuration error."""
    with pytest.raises(ValueError, match="policy"):
        resolve_stable("oldest", ["1"], None)


# --------------------------------------------------------------------------- the table


def _in_state(strategy: str, state: str) -> Operation:
    """An operation of ``strategy`` brought into ``state`` through the public transitions."""
    op = _op(strategy)
    if state == "loading":
        return op
    if state == "running":
        return begin(op, 101.0)
    return {"completed": lambda: promote(begin(op, 101.0), 102.0) if strategy != "immediate" else begin(op, 101.0),
            "aborted": lambda: abort(op, 101.0),
            "rolled_back": lambda: rollback(op, 101.0, "r"),
            "failed": lambda: fail(op, 101.0, "f")}[state]()


EVENTS = {
    "begin": lambda op: begin(op, 200.0),
    "verdict": lambda op: advance(op, HEALTHY, 200.0),
    "promote": lambda op: promote(op, 200.0),
    "abort": lambda op: abort(op, 200.0),
    "rollback": lambda op: rollback(op, 200.0, "r"),
    "fail": lambda op: fail(op, 200.0, "f"),
}


def test_the_table_names_every_state() -> None:
    assert set(OPERATION_TRANSITIONS) == set(OP_STATES)
    assert all(not OPERATION_TRANSITIONS[s] for s in ("completed", "aborted", "rolled_back", "failed"))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", OP_STATES)
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_transition_lands_where_the_table_says(strategy: str, state: str, event: str) -> None:
    """Each (state, event) either leaves the operation unchanged or moves it to a state the table lists."""
    op = _in_state("gradual" if strategy == "immediate" and state == "running" else strategy, state)
    assert op.state == state
    after = EVENTS[event](op)
    if after.state != op.state:
        assert after.state in OPERATION_TRANSITIONS[state].get(event, frozenset()), (state, event, after.state)


def test_a_transition_outside_the_table_is_refused() -> None:
    """A bug that moves a terminal operation is caught at once, not persisted."""
    from actors.core.switch_policy import _checked

    done = abort(_op("gradual"), 101.0)
    revived = attrs.evolve(done, state="running")
    with pytest.raises(InvalidOperationTransition):
        _checked(done, "verdict", revived)
