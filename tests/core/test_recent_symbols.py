"""Recently routed symbols and change detection (actors/core/recent_symbols.py)."""

from __future__ import annotations

from actors.core.recent_symbols import RecentSymbols, SymbolRoute, changed_routes


def _route(symbol: str, served: str = "fast@1", asset_class: str | None = "crypto") -> SymbolRoute:
    return SymbolRoute(symbol, asset_class, 1000.0, "fast", served)


def test_lru_is_bounded_and_forgets_the_least_recently_seen() -> None:
    """Past ``limit`` the oldest symbol is forgotten, the newest kept."""
    recent = RecentSymbols(limit=3)
    for symbol in ("A", "B", "C", "D"):
        recent.note(_route(symbol))
    assert len(recent) == 3
    assert [r.symbol for r in recent] == ["B", "C", "D"]


def test_noting_a_symbol_again_moves_it_to_the_end_and_updates_it() -> None:
    """A re-noted symbol becomes the most recent (so it survives eviction) and carries the new route."""
    recent = RecentSymbols(limit=3)
    for symbol in ("A", "B", "C"):
        recent.note(_route(symbol))
    recent.note(_route("A", served="backup@1"))
    recent.note(_route("D"))
    assert [r.symbol for r in recent] == ["C", "A", "D"]
    assert recent.routes["A"].served == "backup@1"


def test_re_noting_at_the_limit_does_not_evict() -> None:
    """Updating a known symbol at full capacity keeps every symbol."""
    recent = RecentSymbols(limit=2)
    recent.note(_route("A"))
    recent.note(_route("B"))
    recent.note(_route("A", served="fast@2"))
    assert [r.symbol for r in recent] == ["B", "A"]


def test_iteration_is_a_snapshot_safe_against_mutation() -> None:
    """Iterating while noting does not raise (the feed reassigns while iterating)."""
    recent = RecentSymbols()
    recent.note(_route("A"))
    recent.note(_route("B"))
    seen = []
    for route in recent:
        seen.append(route.symbol)
        recent.note(_route(route.symbol + "x"))
    assert seen == ["A", "B"]
    assert len(recent) == 4


def test_reassign_changes_only_what_served_and_ignores_unknown_symbols() -> None:
    """reassign records the new serving version, keeps the rest, and never adds a symbol."""
    recent = RecentSymbols()
    recent.note(_route("A", asset_class="fx"))
    recent.reassign("A", "fast@2")
    recent.reassign("ZZZ", "fast@2")
    assert recent.routes["A"] == SymbolRoute("A", "fx", 1000.0, "fast", "fast@2")
    assert "ZZZ" not in recent.routes


def test_changed_routes_reports_only_routes_whose_serving_version_differs() -> None:
    """Unchanged routes and routes that cannot be served now (None) are not changes."""
    routes = [_route("A", "fast@1"), _route("B", "fast@1"), _route("C", "backup@1")]
    now = {"A": "fast@2", "B": "fast@1", "C": None}
    changes = changed_routes(routes, lambda r: now[r.symbol])
    assert changes == [(routes[0], "fast@2")]


def test_changed_routes_of_nothing_is_empty() -> None:
    """No recent symbols, no changes (and serve is never called)."""
    def serve(route: SymbolRoute) -> str:
        raise AssertionError("not called")

    assert changed_routes([], serve) == []
