"""Request timing middleware: a real Quart-Trio app on Hypercorn, real HTTP over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client.parser import text_string_to_metric_families
from quart import Response
from quart_trio import QuartTrio

from actors.serving.metrics import Metrics
from actors.web.request_metrics import ROUTE_CACHE_LIMIT, RequestMetrics, RouteTemplates

WORK_S = 0.05


def build(metrics: Metrics) -> RequestMetrics:
    app = QuartTrio("request-metrics-test")

    @app.get("/models/<name>")
    async def model(name: str) -> Response:
        return Response("{}", status=404 if name == "missing" else 200, content_type="application/json")

    @app.post("/config/reload")
    async def reload() -> Response:
        await trio.sleep(WORK_S)  # stands for slow work: the duration must include it
        return Response("{}", content_type="application/json")

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("handler failed")

    async def hot_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Like app.HotPath: /predict answered outside Quart."""
        if scope["type"] == "http" and scope["path"] == "/predict":
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await app(scope, receive, send)

    return RequestMetrics(hot_path, metrics, RouteTemplates(app.url_map, fixed_routes={"/predict"}))


@asynccontextmanager
async def serving(metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, build(metrics), config, shutdown_trigger=stop.wait))
        try:
            async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
                yield client
        finally:
            stop.set()


def series(metrics: Metrics, suffix: str) -> dict[tuple[str, str, str], float]:
    text = metrics.exposition()[0].decode()
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == f"model_router_http_request_duration_seconds{suffix}"}


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    metrics = Metrics()
    async with serving(metrics) as client:
        assert (await client.get("/models/a")).status_code == 200
        assert (await client.get("/models/b")).status_code == 200
        assert (await client.get("/models/missing")).status_code == 404
        assert (await client.delete("/models/a")).status_code == 405
        assert (await client.get("/no/such/route")).status_code == 404
        assert (await client.post("/predict", json={})).status_code == 201
        assert (await client.get("/boom")).status_code == 500
    assert series(metrics, "_count") == {
        ("/models/<name>", "GET", "200"): 2,
        ("/models/<name>", "GET", "404"): 1,
        ("/models/<name>", "DELETE", "405"): 1,
        ("unmatched", "GET", "404"): 1,
        ("/predict", "POST", "201"): 1,
        ("/boom", "GET", "500"): 1,
    }


async def test_duration_covers_the_handler_work() -> None:
    metrics = Metrics()
    async with serving(metrics) as client:
        assert (await client.post("/config/reload")).status_code == 200
    total = series(metrics, "_sum")[("/config/reload", "POST", "200")]
    assert WORK_S <= total < WORK_S + 2.0


def test_route_cache_stays_bounded() -> None:
    app = QuartTrio("bounded")

    @app.get("/models/<name>")
    async def model(name: str) -> str:
        return name

    routes = RouteTemplates(app.url_map)
    for index in range(ROUTE_CACHE_LIMIT + 10):
        assert routes("GET", f"/models/m{index}") == "/models/<name>"
    assert len(routes.cache) <= ROUTE_CACHE_LIMIT



def test_a_405_whose_path_redirects_is_unmatched_not_an_error() -> None:
    """Found by the fuzzer: a doubled slash makes werkzeug redirect (merge_slashes) on the retry with
    an allowed method; that raised out of the middleware after the answer ("Error in ASGI Framework")."""
    app = QuartTrio("redirects")

    @app.get("/v2/models/<name>/ready")
    async def ready(name: str) -> str:
        return name

    @app.post("/v2/models/<name>/infer")
    async def infer(name: str) -> str:
        return name

    routes = RouteTemplates(app.url_map)
    for method, path in (("POST", "/v2/models//ready"), ("DELETE", "/v2/models//ready"),
                         ("GET", "/v2/models/fast//infer"), ("DELETE", "/v2//models/x")):
        assert routes(method, path) == "unmatched", (method, path)
    assert routes("GET", "/v2/models/fast/ready") == "/v2/models/<name>/ready"
    assert routes("DELETE", "/v2/models/fast/ready") == "/v2/models/<name>/ready"  # a 405 keeps its route
