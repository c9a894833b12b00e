"""The data-plane port's routes: the inference routes, answering exactly as the main port does.

Each handler is the main port's answer for the same route, built from the same pieces
(``parse_json``, the predictor, the health views, ``error_payload``), so for the same
body both ports return the same status, error shape and fields; a test compares them
route by route. What differs is only the server underneath (``actors/web/http1.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from actors import data_plane
from actors.core.errors import RouterError
from actors.core.rules import DataPlaneSettings
from actors.web.bodies import parse_json
from actors.web.errors import MAX_BODY_BYTES, error_payload, internal_error, log_error
from actors.web.http1 import Limits, Request, Response, Routes
from actors.web.service import Service
from actors.web.views import health_body, ready_body

DEFAULT_DATA_PORT = 8001

Answer = Callable[[Any], Awaitable[dict[str, Any]]]


def _timed(service: Service, route: str, method: str,
           handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Observe the request duration per route and status, as the main port's middleware does."""
    histogram = service.metrics.http_duration_s
    children: dict[int, Any] = {}
    clock = time.perf_counter

    async def timed(request: Request) -> Response:
        started = clock()
        response = await handler(request)
        child = children.get(response.status)
        if child is None:
            child = children[response.status] = histogram.labels(route=route, method=method,
                                                                 status=str(response.status))
        child.observe(clock() - started)
        return response

    return timed


def _prediction_route(answer: Answer, where: str) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return Response(200, orjson.dumps(await answer(parse_json(request.body))))
        except RouterError as error:
            log_error(where, error)
            status, body = error_payload(error)
        except Exception as exc:
            status, body = error_payload(internal_error(where, exc))
        return Response(status, body)

    return handle


def routes(service: Service) -> Routes:
    """The data plane's route table: path -> method -> handler."""
    predictor = service.predictor

    async def health(request: Request) -> Response:
        return Response(200, orjson.dumps(health_body(service)))

    async def ready(request: Request) -> Response:
        status, body = ready_body(service)
        return Response(status, orjson.dumps(body))

    table = {
        "/predict": ("POST", _prediction_route(predictor.predict_one, "POST /predict")),
        "/predict/batch": ("POST", _prediction_route(predictor.predict_batch, "POST /predict/batch")),
        "/health": ("GET", health),
        "/health/ready": ("GET", ready),
    }
    return {path: {method: _timed(service, path, method, handler)} for path, (method, handler) in table.items()}


def limits(settings: DataPlaneSettings) -> Limits:
    """The engine's limits from the config's ``data_plane:`` section (bodies: the service-wide bound)."""
    return Limits(max_body_bytes=MAX_BODY_BYTES, header_timeout_s=settings.header_timeout_s,
                  keep_alive_timeout_s=settings.keep_alive_timeout_s, max_connections=settings.max_connections,
                  max_header_bytes=settings.max_header_bytes)


async def serve_data_port(service: Service, host: str, port: int, settings: DataPlaneSettings, *,
                          reuse_port: bool, main_port: str, done: trio.Event,
                          task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the data-plane actor until ``service.stop``; it drains, then ``done`` is set."""
    try:
        await data_plane.run(
            host=host, port=port, routes=routes(service), limits=limits(settings),
            upgrade_hint=f"this is the data plane (inference only); WebSocket, admin and every other route "
                         f"are on the main port {main_port}",
            reuse_port=reuse_port, shutdown=service.stop, task_status=task_status)
    finally:
        done.set()
