"""Today's usage: predictions per workspace, key and model, and refusals by code.

Pure counting. A ``UsageBook`` holds ``base`` (today's totals as last read back from the
store, which with Redis includes every replica) and ``delta`` (what this process counted
since its last flush, per UTC day so a flush just after midnight still credits yesterday).
The store flushes deltas every few seconds and hands the new totals back (``absorb``);
the report is base + delta, so it is exact for this process and at most one flush
interval behind for the others.

Counter keys are tuples: ``("p", ws)`` predictions, ``("pk", ws, key)`` per key,
``("pm", ws, model)`` per model, ``("r", ws, code)`` refusals, ``("rk", ws, key, code)``
refusals per key. A request with no key or no workspace counts under ``NO_WORKSPACE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from actors.core.access import FORBIDDEN, ApiKey, Refusal, Role
from actors.core.rate_limit import day_label, next_reset, utc_day

NO_WORKSPACE: Final = "-"
PREDICTION_KEYS_LIMIT: Final = 4096
CounterKey = tuple[str, ...]


@attrs.define
class UsageBook:
    """Counters of one process: today's persisted totals plus what is not flushed yet."""

    day: int
    base: dict[CounterKey, int] = attrs.field(factory=dict)
    delta: dict[int, dict[CounterKey, int]] = attrs.field(factory=dict)
    # (workspace, key id, model) -> its three prediction counter keys, built once.
    prediction_keys: dict[tuple[str | None, str | None, str], tuple[CounterKey, ...]] = attrs.field(
        factory=dict, repr=False)

    def _bump(self, now: float, key: CounterKey, n: int) -> None:
        day = utc_day(now)
        if day != self.day:
            self._roll(day)
        counters = self.delta.get(day)
        if counters is None:
            counters = self.delta[day] = {}
        counters[key] = counters.get(key, 0) + n

    def _roll(self, day: int) -> None:
        if day > self.day:  # a new UTC day: yesterday's totals are history (deltas still flush)
            self.day = day
            self.base = {}

    def record_prediction(self, workspace: str | None, key_id: str | None, model: str, n: int, now: float) -> None:
        """``n`` items answered by ``model`` (a batch counts each item).

        Called once per prediction request: the three counter keys of a (workspace, key, model)
        are built once and reused (a bounded cache), and the day is worked out once.
        """
        triple = (workspace, key_id, model)
        keys = self.prediction_keys.get(triple)
        if keys is None:
            if len(self.prediction_keys) >= PREDICTION_KEYS_LIMIT:
                self.prediction_keys.clear()
            ws = workspace or NO_WORKSPACE
            keys = self.prediction_keys[triple] = (("p", ws), ("pk", ws, key_id or NO_WORKSPACE), ("pm", ws, model))
        day = utc_day(now)
        if day != self.day:
            self._roll(day)
        counters = self.delta.get(day)
        if counters is None:
            counters = self.delta[day] = {}
        for key in keys:
            counters[key] = counters.get(key, 0) + n

    def record_refusal(self, workspace: str | None, key_id: str | None, code: str, now: float, n: int = 1) -> None:
        ws = workspace or NO_WORKSPACE
        self._bump(now, ("r", ws, code), n)
        self._bump(now, ("rk", ws, key_id or NO_WORKSPACE, code), n)

    def take_delta(self) -> dict[int, dict[CounterKey, int]]:
        """What to flush, by day; the book starts counting a fresh delta."""
        delta, self.delta = self.delta, {}
        return delta

    def restore_delta(self, delta: Mapping[int, Mapping[CounterKey, int]]) -> None:
        """A flush failed: put its counts back so the next flush carries them."""
        for day, counters in delta.items():
            mine = self.delta.setdefault(day, {})
            for key, value in counters.items():
                mine[key] = mine.get(key, 0) + value

    def absorb(self, day: int, totals: Mapping[CounterKey, int]) -> None:
        """Today's totals as the store now has them (after a flush, or at start)."""
        if day > self.day:
            self.day = day
        if day == self.day:
            self.base = dict(totals)

    def totals(self, now: float) -> dict[CounterKey, int]:
        """Today's counters: persisted base plus what this process has not flushed yet."""
        day = utc_day(now)
        out = dict(self.base) if day == self.day else {}
        for key, value in self.delta.get(day, {}).items():
            out[key] = out.get(key, 0) + value
        return out


@attrs.frozen
class BudgetView:
    """What a workspace may spend today and what is spent (for the report)."""

    limit: int | None
    used: int


def usage_report(totals: Mapping[CounterKey, int], now: float, workspaces: Iterable[str],
                 budgets: Mapping[str, BudgetView] | None = None) -> dict[str, Any]:
    """``GET /usage``'s body for ``workspaces``: per workspace and per key, predictions, by model,
    budget and what is left, refusals by code. ``budgets`` gives the limit and the amount spent
    (with Redis, the shared ledger's view); without it ``used`` is the predictions counted."""
    wanted = set(workspaces)
    body: dict[str, dict[str, Any]] = {}

    def entry(ws: str) -> dict[str, Any]:
        found = body.get(ws)
        if found is None:
            found = body[ws] = {"predictions": 0, "by_model": {}, "keys": {}, "rejections": {}}
        return found

    def key_entry(ws: str, key_id: str) -> dict[str, Any]:
        keys = entry(ws)["keys"]
        found = keys.get(key_id)
        if found is None:
            found = keys[key_id] = {"predictions": 0, "rejections": {}}
        return found

    for ws in sorted(wanted):
        entry(ws)
    for key, value in totals.items():
        ws = key[1]
        if ws not in wanted:
            continue
        kind = key[0]
        if kind == "p":
            entry(ws)["predictions"] += value
        elif kind == "pm":
            entry(ws)["by_model"][key[2]] = value
        elif kind == "pk":
            key_entry(ws, key[2])["predictions"] += value
        elif kind == "r":
            entry(ws)["rejections"][key[2]] = value
        elif kind == "rk":
            key_entry(ws, key[2])["rejections"][key[3]] = value
    for ws, data in body.items():
        view = (budgets or {}).get(ws)
        limit = None if view is None else view.limit
        used = data["predictions"] if view is None else view.used
        data["budget"] = {"daily_predictions": limit, "used": used,
                          "left": None if limit is None else max(0, limit - used)}
    return {"day": day_label(utc_day(now)), "resets_at": next_reset(now), "workspaces": body}


def usage_scope(key: ApiKey, workspaces: Iterable[str], requested: str | None) -> list[str] | Refusal:
    """Which workspaces ``key`` may see in ``GET /usage[?workspace=W]``.

    A key bound to a workspace sees that workspace only (asking for another is ``forbidden``);
    admin keys and keys without a workspace (operators, dashboards) see every workspace.
    """
    known = sorted(workspaces)
    if key.workspace is not None and not key.has(Role.ADMIN):
        own = key.workspace.name
        if requested is not None and requested != own:
            return Refusal(FORBIDDEN, f"key {key.id!r} may only see the usage of workspace {own!r}",
                           {"key_id": key.id, "workspace": requested})
        return [own]
    if requested is None:
        return known
    return [requested]
