"""Every HTTP route of both ports under bad bodies, paths, queries, methods, content types and keys.

For each generated request: an answer within the per-request timeout (no hang), no 5xx
but a documented 503, every error a JSON body in the one shape with a 4xx status, no
admin action without the key, and both ports still answer /health afterwards (no crash).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.checks import check_answer
from tests.fuzz.client import request
from tests.fuzz.conftest import Live, fuzz_in_thread
from tests.fuzz.routes import DATA, MAIN, Route
from tests.fuzz.strategies import admin_headers, bodies, content_types, methods, path_params, queries


def target_of(route: Route, draw: st.DataObject) -> str:
    path = route.path
    for name in route.params:
        segment = draw.draw(path_params, label=name)
        path = path.replace(f"<{name}>", segment, 1)
    query = draw.draw(queries, label="query")
    return f"{path}?{query}" if query else path


def route_case(live: Live, route: Route) -> Callable[[], None]:
    @given(draw=st.data())
    def case(draw: st.DataObject) -> None:
        method = draw.draw(st.one_of(st.just(route.method), methods), label="method")
        target = target_of(route, draw)
        aimed = route.body != "none" or draw.draw(st.booleans(), label="unexpected body")
        body = draw.draw(bodies(route.shape), label="body") if aimed else b""
        headers = dict(draw.draw(admin_headers, label="admin")) if route.admin or route.port == "main" else {}
        content_type = draw.draw(content_types, label="content type")
        if content_type is not None:
            headers["Content-Type"] = content_type
        port = live.main_port if route.port == "main" else live.data_port
        answer = request(port, method, target, body, headers)
        check_answer(route, method, headers, answer)
        live.healthy()

    return case


async def test_main_port_routes_survive_bad_input(live: Live) -> None:
    await fuzz_in_thread((f"{r.method} {r.path}", route_case(live, r)) for r in MAIN)


async def test_data_port_routes_survive_bad_input(live: Live) -> None:
    await fuzz_in_thread((f"data plane {r.method} {r.path}", route_case(live, r)) for r in DATA)
