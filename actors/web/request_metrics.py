"""End-to-end HTTP request timing for ``model_router_http_request_duration_seconds``.

An ASGI wrapper around the whole app (the hot path and Quart alike), so the duration covers
everything from the request arriving to the last response byte handed to the server, and
the status is the one really sent. Requests are labelled by route *template*
(``/models/<name>``) looked up in Quart's URL map, never by raw path: raw paths would make
a time series per model name, symbol or probe by a scanner. Paths that match no route share
``route="unmatched"``. WebSocket and lifespan traffic passes through untimed (a WebSocket's
duration is its connection's life, not a request latency).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect

from actors.serving.metrics import Metrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "unmatched"
ROUTE_CACHE_LIMIT = 4096


class RouteTemplates:
    """Maps (method, path) to the route template that serves it, with a bounded cache."""

    def __init__(self, url_map: Map, fixed_routes: Collection[str] = ()) -> None:
        self.adapter = url_map.bind("localhost")
        self.fixed = frozenset(fixed_routes)
        self.cache: dict[tuple[str, str], str] = {}

    def __call__(self, method: str, path: str) -> str:
        key = (method, path)
        route = self.cache.get(key)
        if route is None:
            if len(self.cache) >= ROUTE_CACHE_LIMIT:
                self.cache.clear()  # many distinct paths (e.g. /models/<name>): start over, stay bounded
            route = self.cache[key] = self._lookup(method, path)
        return route

    def _lookup(self, method: str, path: str) -> str:
        if path in self.fixed:
            return path
        try:
            return self._template(path, method)
        except MethodNotAllowed as exc:  # the route exists; the method does not (a 405): its template
            allowed = sorted(exc.valid_methods or ())
        try:  # with an allowed method the path may still only redirect (merged slashes)
            return self._template(path, allowed[0]) if allowed else UNMATCHED
        except MethodNotAllowed:
            return UNMATCHED

    def _template(self, path: str, method: str) -> str:
        """The matching rule's template; UNMATCHED for no route or a redirect; MethodNotAllowed passes."""
        try:
            rule, _args = self.adapter.match(path, method, return_rule=True)
        except (NotFound, RequestRedirect):
            return UNMATCHED
        return str(rule.rule)


class RequestMetrics:
    """ASGI middleware: observes every HTTP request's duration by route, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before starting a response, the server answers 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"]
            self.metrics.observe_request(self.routes(method, scope["path"]), method, status,
                                         time.perf_counter() - started)
