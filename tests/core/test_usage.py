"""Usage counting: per workspace, key and model; refusals by code; deltas and totals across days."""

from __future__ import annotations

from datetime import datetime, timezone

from actors.core.access import FORBIDDEN, ApiKey, Refusal, Role, Workspace
from actors.core.rate_limit import utc_day
from actors.core.usage import NO_WORKSPACE, BudgetView, UsageBook, usage_report, usage_scope

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc).timestamp()
TOMORROW = T0 + 86_400


def book_with_traffic() -> UsageBook:
    book = UsageBook(utc_day(T0))
    book.record_prediction("desk-a", "engine", "tlob_tiny", 1, T0)
    book.record_prediction("desk-a", "engine", "tlob_tiny", 5, T0)  # a batch of 5
    book.record_prediction("desk-a", "backtest", "patchtst_small", 2, T0)
    book.record_refusal("desk-a", "engine", "rate_limited", T0)
    book.record_refusal("desk-a", "engine", "rate_limited", T0)
    book.record_refusal(None, None, "unauthenticated", T0)
    book.record_prediction("desk-b", "b-engine", "tlob_tiny", 3, T0)
    return book


def test_report_per_workspace_key_and_model() -> None:
    book = book_with_traffic()
    report = usage_report(book.totals(T0), T0, ["desk-a"], {"desk-a": BudgetView(limit=10, used=8)})
    assert report["day"] == "2026-12-02"
    assert report["resets_at"] == datetime(2026, 12, 3, tzinfo=timezone.utc).timestamp()
    assert report["workspaces"] == {"desk-a": {
        "predictions": 8,
        "by_model": {"tlob_tiny": 6, "patchtst_small": 2},
        "keys": {"engine": {"predictions": 6, "rejections": {"rate_limited": 2}},
                 "backtest": {"predictions": 2, "rejections": {}}},
        "rejections": {"rate_limited": 2},
        "budget": {"daily_predictions": 10, "used": 8, "left": 2},
    }}


def test_report_of_all_workspaces_without_budgets() -> None:
    report = usage_report(book_with_traffic().totals(T0), T0, ["desk-a", "desk-b", "idle", NO_WORKSPACE])
    spaces = report["workspaces"]
    assert set(spaces) == {"desk-a", "desk-b", "idle", NO_WORKSPACE}
    assert spaces["idle"] == {"predictions": 0, "by_model": {}, "keys": {}, "rejections": {},
                              "budget": {"daily_predictions": None, "used": 0, "left": None}}
    assert spaces[NO_WORKSPACE]["rejections"] == {"unauthenticated": 1}
    assert spaces["desk-b"]["budget"]["used"] == 3


def test_totals_are_base_plus_unflushed_delta() -> None:
    book = book_with_traffic()
    delta = book.take_delta()
    assert delta[utc_day(T0)][("p", "desk-a")] == 8
    assert book.totals(T0) == {}  # flushed away, not absorbed yet
    book.absorb(utc_day(T0), {("p", "desk-a"): 100})  # what the store holds (other replicas too)
    book.record_prediction("desk-a", "engine", "tlob_tiny", 1, T0)
    assert book.totals(T0)[("p", "desk-a")] == 101


def test_failed_flush_restores_the_delta() -> None:
    book = book_with_traffic()
    delta = book.take_delta()
    book.record_prediction("desk-a", "engine", "tlob_tiny", 1, T0)
    book.restore_delta(delta)
    assert book.totals(T0)[("p", "desk-a")] == 9


def test_a_new_day_starts_from_zero_but_keeps_yesterdays_delta_for_the_flush() -> None:
    book = book_with_traffic()
    book.absorb(utc_day(T0), {("p", "desk-a"): 50})
    book.record_prediction("desk-a", "engine", "tlob_tiny", 2, TOMORROW)
    assert book.totals(TOMORROW) == {("p", "desk-a"): 2, ("pk", "desk-a", "engine"): 2,
                                     ("pm", "desk-a", "tlob_tiny"): 2}
    delta = book.take_delta()
    assert set(delta) == {utc_day(T0), utc_day(TOMORROW)}
    book.absorb(utc_day(T0), {("p", "desk-a"): 999})  # a late answer for yesterday changes nothing today
    assert book.totals(TOMORROW) == {}


def test_usage_scope_by_key() -> None:
    desk = Workspace("desk-a")
    engine = ApiKey("engine", "0" * 64, frozenset({Role.PREDICT, Role.READ}), desk)
    dashboard = ApiKey("dash", "1" * 64, frozenset({Role.READ}))
    admin = ApiKey("boss", "2" * 64, frozenset({Role.ADMIN}), desk)
    known = ["desk-b", "desk-a"]
    assert usage_scope(engine, known, None) == ["desk-a"]
    assert usage_scope(engine, known, "desk-a") == ["desk-a"]
    refused = usage_scope(engine, known, "desk-b")
    assert isinstance(refused, Refusal) and refused.code == FORBIDDEN
    assert usage_scope(dashboard, known, None) == ["desk-a", "desk-b"]
    assert usage_scope(admin, known, "desk-b") == ["desk-b"]


def test_prediction_key_cache_is_bounded_and_counts_stay_exact() -> None:
    """The per-(workspace, key, model) key cache never grows past its limit; every count lands."""
    from actors.core.usage import PREDICTION_KEYS_LIMIT

    book = UsageBook(utc_day(T0))
    models = [f"m{i}" for i in range(PREDICTION_KEYS_LIMIT + 10)]
    for model in models:
        book.record_prediction("desk-a", "engine", model, 2, T0)
    book.record_prediction("desk-a", "engine", models[0], 1, T0)  # evicted earlier: rebuilt, same keys
    assert len(book.prediction_keys) <= PREDICTION_KEYS_LIMIT
    totals = book.totals(T0)
    assert totals[("p", "desk-a")] == 2 * len(models) + 1
    assert totals[("pm", "desk-a", models[0])] == 3
    assert totals[("pk", "desk-a", "engine")] == 2 * len(models) + 1
