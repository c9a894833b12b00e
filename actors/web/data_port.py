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
from actors.serving.oip import match_model_path
from actors.serving.request_context import REQUEST_ID, accepted_request_id
from actors.web.access import SECURITY_HEADERS
from actors.web.bodies import parse_json
from actors.web.errors import MAX_BODY_BYTES, correlation_of, error_payload, internal_error, log_error
from actors.web.http1 import Handler, Limits, Request, Resolver, Response, Routes
from actors.web.oip_calls import HEADER_LENGTH, OipAnswer, OipCall, model_call, oip_handler
from actors.web.request_ids import HEADER as REQUEST_ID_HEADER
from actors.web.service import Service
from actors.web.views import health_body, ready_body

DEFAULT_DATA_PORT = 8001



def _endpoint(service: Service, method: str, path: str, handler: Callable[[Request, ApiKey], Awaitable[Response]],
              *, template: str | None = None) -> Callable[[Request], Awaitable[Response]]:
    """One route as the main port serves it: request id, access gate, handler, duration metric.

    What the main port does in three middlewares is one closure here: every layer of
    coroutine and every extra ``Response`` was a measurable share of a ~100 µs request.
    ``template`` (patterned routes): the metric label, while the gate checks the request's own
    path (the access table matches templates). Steps, in order:

    - ``X-Request-ID``: the client's (when safe) or a new one, set in ``REQUEST_ID`` for log
      lines and echoed on the answer;
    - the access gate (the same check as the main port's layer); a refusal is answered here;
    - the handler, timed into ``model_router_http_request_duration_seconds`` by route and status.
    """
    gate = service.gate
    histogram = service.metrics.http_duration_s
    label = template or path
    children: dict[int, Any] = {}
    clock = time.perf_counter
    by_path = template is not None

    async def endpoint(request: Request) -> Response:
        started = clock()
        request_id = accepted_request_id(request.header(REQUEST_ID_HEADER))
        token = REQUEST_ID.set(request_id)
        try:
            key = gate.check(method, request.path if by_path else path, request.header, request.client)
            if isinstance(key, Refusal):
                status, headers, body = gate.refusal_response(key)
                response = Response(status, body, (*_extra(headers), *SECURITY_HEADERS))
            else:
                response = await handler(request, key)
        finally:
            REQUEST_ID.reset(token)
        child = children.get(response.status)
        if child is None:
            child = children[response.status] = histogram.labels(route=label, method=method,
                                                                 status=str(response.status))
        child.observe(clock() - started)
        return Response(response.status, response.body, (*response.headers, (REQUEST_ID_HEADER, request_id.encode())),
                        response.content_type)

    return endpoint


def _extra(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """A refusal's headers but the content type (the engine writes it)."""
    return tuple(h for h in headers if h[0] != b"content-type")


def _prediction_route(service: Service, batch: bool, where: str) -> Callable[[Request, ApiKey], Awaitable[Response]]:
    gate, predictor = service.gate, service.predictor

    async def handle(request: Request, key: ApiKey) -> Response:
        body = None
        try:
            body = parse_json(request.body)
            answer = await gate.predict(predictor, key, body, batch=batch)
            return Response(200, orjson.dumps(answer), SECURITY_HEADERS)
        except RouterError as error:
            log_error(where, error, correlation_of(body))
            status, payload = error_payload(error)
        except Exception as exc:
            status, payload = error_payload(internal_error(where, exc))
        return Response(status, payload, SECURITY_HEADERS)

    return handle


def routes(service: Service) -> Routes:
    """The data plane's route table: path -> method -> handler."""

    async def health(request: Request, key: ApiKey) -> Response:
        return Response(200, orjson.dumps(health_body(service)), SECURITY_HEADERS)

    async def ready(request: Request, key: ApiKey) -> Response:
        status, body = ready_body(service)
        return Response(status, orjson.dumps(body), SECURITY_HEADERS)

    oip = oip_handler(service)

    def fixed_oip(endpoint: str) -> Callable[[Request, ApiKey], Awaitable[Response]]:
        async def handle(request: Request, key: ApiKey) -> Response:
            return _oip_response(await oip(OipCall(endpoint, key=key)))

        return handle

    table = {
        "/predict": ("POST", _prediction_route(service, False, "POST /predict")),
        "/predict/batch": ("POST", _prediction_route(service, True, "POST /predict/batch")),
        "/health": ("GET", health),
        "/health/ready": ("GET", ready),
        "/v2/health/live": ("GET", fixed_oip("live")),
        "/v2/health/ready": ("GET", fixed_oip("ready")),
        "/v2": ("GET", fixed_oip("server")),
    }
    return {path: {method: _endpoint(service, method, path, handler)} for path, (method, handler) in table.items()}


def _oip_response(answer: OipAnswer) -> Response:
    headers = tuple((name.encode(), value.encode()) for name, value in answer.headers)
    return Response(answer.status, answer.body, (*headers, *SECURITY_HEADERS), answer.content_type.encode())


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

    async def model_route(request: Request, key: ApiKey) -> Response:
        length = request.header(HEADER_LENGTH.encode())
        call = model_call(request.path, request.body, length.decode("latin-1") if length is not None else None, key)
        return _oip_response(await handle(call))

    def entry(method: str, template: str) -> Handler:
        gated_template = template.replace("<", "{").replace(">", "}")  # the access table's spelling
        return _endpoint(service, method, gated_template, model_route, template=template)

    tables = {key: {method: entry(method, template)} for key, (method, template) in _MODEL_TEMPLATES.items()}

    def resolve(path: str) -> dict[str, Handler] | None:
        if not path.startswith("/v2/models/"):
            return None
        route = match_model_path(path)
        return None if route is None else tables[(route[0], route[2] is not None)]

    return resolve


def chosen_port(option: int | None, configured: int | None) -> int:
    """The data-plane port: the option (or env) first, then the config, then the default; 0 is off."""
    if option is not None:
        return option
    return configured if configured is not None else DEFAULT_DATA_PORT


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
        await data_plane.run(ssl_context=tls, resolve=model_routes(service),
            host=host, port=port, routes=routes(service), limits=limits(settings),
            upgrade_hint=f"this is the data plane (inference only); WebSocket, admin and every other route "
                         f"are on the main port {main_port}",
            reuse_port=reuse_port, shutdown=service.stop, task_status=task_status)
    finally:
        done.set()
