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
from actors.serving.oip import match_model_path
from actors.web.bodies import parse_json
from actors.web.errors import MAX_BODY_BYTES, correlation_of, error_payload, internal_error, log_error
from actors.web.http1 import Handler, Limits, Request, Resolver, Response, Routes
from actors.web.oip_calls import HEADER_LENGTH, OipAnswer, OipCall, model_call, oip_handler
from actors.web.request_ids import with_request_id
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
        body = None
        try:
            body = parse_json(request.body)
            return Response(200, orjson.dumps(await answer(body)))
        except RouterError as error:
            log_error(where, error, correlation_of(body))
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

    oip = oip_handler(service)

    def fixed_oip(endpoint: str) -> Handler:
        async def handle(request: Request) -> Response:
            return _oip_response(await oip(OipCall(endpoint)))

        return handle

    table = {
        "/predict": ("POST", _prediction_route(predictor.predict_one, "POST /predict")),
        "/predict/batch": ("POST", _prediction_route(predictor.predict_batch, "POST /predict/batch")),
        "/health": ("GET", health),
        "/health/ready": ("GET", ready),
        "/v2/health/live": ("GET", fixed_oip("live")),
        "/v2/health/ready": ("GET", fixed_oip("ready")),
        "/v2": ("GET", fixed_oip("server")),
    }
    return {path: {method: with_request_id(_timed(service, path, method, handler))}
            for path, (method, handler) in table.items()}


def _oip_response(answer: OipAnswer) -> Response:
    headers = tuple((name.encode(), value.encode()) for name, value in answer.headers)
    return Response(answer.status, answer.body, headers, answer.content_type.encode())


# The model routes' templates, as the main port's URL map names them (one metrics label per template).
_MODEL_TEMPLATES: dict[tuple[str, bool], tuple[str, str]] = {
    ("model", False): ("GET", "/v2/models/<name>"),
    ("model", True): ("GET", "/v2/models/<name>/versions/<version>"),
    ("ready", False): ("GET", "/v2/models/<name>/ready"),
    ("ready", True): ("GET", "/v2/models/<name>/versions/<version>/ready"),
    ("infer", False): ("POST", "/v2/models/<name>/infer"),
    ("infer", True): ("POST", "/v2/models/<name>/versions/<version>/infer"),
}


def model_routes(service: Service) -> Resolver:
    """The resolver for ``/v2/models/...``: one method table per template, built once and reused."""
    handle = oip_handler(service)

    async def model_route(request: Request) -> Response:
        length = request.header(HEADER_LENGTH.encode())
        call = model_call(request.path, request.body, length.decode("latin-1") if length is not None else None)
        return _oip_response(await handle(call))

    tables = {key: {method: with_request_id(_timed(service, template, method, model_route))}
              for key, (method, template) in _MODEL_TEMPLATES.items()}

    def resolve(path: str) -> dict[str, Handler] | None:
        if not path.startswith("/v2/models/"):
            return None
        route = match_model_path(path)
        return None if route is None else tables[(route[0], route[2] is not None)]

    return resolve


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
            host=host, port=port, routes=routes(service), resolve=model_routes(service), limits=limits(settings),
            upgrade_hint=f"this is the data plane (inference only); WebSocket, admin and every other route "
                         f"are on the main port {main_port}",
            reuse_port=reuse_port, shutdown=service.stop, task_status=task_status)
    finally:
        done.set()
