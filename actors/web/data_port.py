"""The data-plane port's routes: the inference routes, answering exactly as the main port does.

Each handler is the main port's answer for the same route, built from the same pieces
(the access gate, ``parse_json``, the predictor, the health views, ``error_payload``), so
for the same body and key both ports return the same status, error shape and fields; a
test compares them route by route. What differs is only the server underneath
(``actors/web/http1.py``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from actors import data_plane
from actors.core.access import ApiKey, Refusal
from actors.core.errors import RouterError
from actors.core.rules import DataPlaneSettings
from actors.web.access import SECURITY_HEADERS
from actors.web.bodies import parse_json
from actors.web.errors import MAX_BODY_BYTES, error_payload, internal_error, log_error
from actors.web.http1 import Limits, Request, Response, Routes
from actors.web.service import Service
from actors.web.views import health_body, ready_body

DEFAULT_DATA_PORT = 8001



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


def _gated(service: Service, method: str, path: str,
           handler: Callable[[Request, ApiKey], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The access gate first (the same check as the main port's layer), then the handler."""
    gate = service.gate

    async def gated(request: Request) -> Response:
        key = gate.check(method, path, request.header, request.client)
        if isinstance(key, Refusal):
            status, headers, body = gate.refusal_response(key)
            return Response(status, body, (*_extra(headers), *SECURITY_HEADERS))
        return await handler(request, key)

    return gated


def _extra(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """A refusal's headers but the content type (the engine writes it)."""
    return tuple(h for h in headers if h[0] != b"content-type")


def _prediction_route(service: Service, batch: bool, where: str) -> Callable[[Request, ApiKey], Awaitable[Response]]:
    gate, predictor = service.gate, service.predictor

    async def handle(request: Request, key: ApiKey) -> Response:
        try:
            answer = await gate.predict(predictor, key, parse_json(request.body), batch=batch)
            return Response(200, orjson.dumps(answer), SECURITY_HEADERS)
        except RouterError as error:
            log_error(where, error)
            status, body = error_payload(error)
        except Exception as exc:
            status, body = error_payload(internal_error(where, exc))
        return Response(status, body, SECURITY_HEADERS)

    return handle


def routes(service: Service) -> Routes:
    """The data plane's route table: path -> method -> handler."""

    async def health(request: Request, key: ApiKey) -> Response:
        return Response(200, orjson.dumps(health_body(service)), SECURITY_HEADERS)

    async def ready(request: Request, key: ApiKey) -> Response:
        status, body = ready_body(service)
        return Response(status, orjson.dumps(body), SECURITY_HEADERS)

    table = {
        "/predict": ("POST", _prediction_route(service, False, "POST /predict")),
        "/predict/batch": ("POST", _prediction_route(service, True, "POST /predict/batch")),
        "/health": ("GET", health),
        "/health/ready": ("GET", ready),
    }
    return {path: {method: _timed(service, path, method, _gated(service, method, path, handler))}
            for path, (method, handler) in table.items()}


def limits(settings: DataPlaneSettings) -> Limits:
    """The engine's limits from the config's ``data_plane:`` section (bodies: the service-wide bound)."""
    return Limits(max_body_bytes=MAX_BODY_BYTES, header_timeout_s=settings.header_timeout_s,
                  keep_alive_timeout_s=settings.keep_alive_timeout_s, max_connections=settings.max_connections,
                  max_header_bytes=settings.max_header_bytes)


def tls_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """The server-side TLS context for the data plane, from the same pair as the main port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certfile), str(keyfile))
    context.set_alpn_protocols(["http/1.1"])
    return context


async def serve_data_port(service: Service, host: str, port: int, settings: DataPlaneSettings, *,
                          reuse_port: bool, main_port: str, done: trio.Event, tls: ssl.SSLContext | None = None,
                          task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the data-plane actor until ``service.stop``; it drains, then ``done`` is set."""
    try:
        await data_plane.run(ssl_context=tls,
            host=host, port=port, routes=routes(service), limits=limits(settings),
            upgrade_hint=f"this is the data plane (inference only); WebSocket, admin and every other route "
                         f"are on the main port {main_port}",
            reuse_port=reuse_port, shutdown=service.stop, task_status=task_status)
    finally:
        done.set()
