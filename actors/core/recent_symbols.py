"""Symbols seen in recent traffic and which model version served each (pure, no I/O).

A switch event is about a symbol whose serving model changed, so the service must know
which symbols are live and how each was routed. The request path calls :meth:`note`
(a dict assignment and an LRU bump); the switch feed re-evaluates every entry after a
change (rules reload, switch step, rollback, breaker) and reports the ones that moved.
Bounded: past ``limit`` the least recently seen symbol is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import attrs


@attrs.frozen
class SymbolRoute:
    """How a symbol was last routed: enough to route it again, and what served it."""

    symbol: str
    asset_class: str | None
    horizon_ms: float | None
    model_name: str | None
    served: str


@attrs.define
class RecentSymbols:
    """LRU of symbol -> :class:`SymbolRoute`; only the event loop thread touches it."""

    limit: int = 4096
    routes: OrderedDict[str, SymbolRoute] = attrs.field(factory=OrderedDict)

    def note(self, route: SymbolRoute) -> None:
        routes = self.routes
        if route.symbol in routes:
            routes.move_to_end(route.symbol)
        elif len(routes) >= self.limit:
            routes.popitem(last=False)
        routes[route.symbol] = route

    def touch(self, symbol: str, asset_class: str | None, horizon_ms: float | None,
              model_name: str | None) -> bool:
        """Bump a known symbol routed the same way; False when it is new or its inputs changed.

        ``served`` is deliberately left alone: it is what routing state says serves the
        symbol, updated only when the feed announces a switch, never by one request that
        happened to be answered by a retry.
        """
        route = self.routes.get(symbol)
        if route is None or (route.asset_class, route.horizon_ms, route.model_name) != (
                asset_class, horizon_ms, model_name):
            return False
        self.routes.move_to_end(symbol)
        return True

    def __iter__(self) -> Iterator[SymbolRoute]:
        return iter(list(self.routes.values()))

    def __len__(self) -> int:
        return len(self.routes)

    def reassign(self, symbol: str, served: str) -> None:
        current = self.routes.get(symbol)
        if current is not None:
            self.routes[symbol] = attrs.evolve(current, served=served)


def changed_routes(
    routes: Iterator[SymbolRoute] | list[SymbolRoute], serve: Callable[[SymbolRoute], str | None]
) -> list[tuple[SymbolRoute, str]]:
    """(route, now serving) for every route whose serving model version differs now."""
    changes = []
    for route in routes:
        now_serving = serve(route)
        if now_serving is not None and now_serving != route.served:
            changes.append((route, now_serving))
    return changes
