"""The Open Inference Protocol (KServe v2) on the main port: thin adapters over ``actors/web/oip_calls.py``."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from actors.web.access import scope_key
from actors.web.oip_calls import HEADER_LENGTH, OipAnswer, OipCall, oip_handler
from actors.web.service import Service


def _response(answer: OipAnswer) -> Response:
    response = Response(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def register(app: QuartTrio, service: Service) -> None:
    handle = oip_handler(service)

    async def call(endpoint: str, name: str | None = None, version: str | None = None) -> Response:
        body = b""
        if endpoint == "infer":
            body = await request.get_data(cache=False)
        return _response(await handle(OipCall(endpoint, name, version, body, request.headers.get(HEADER_LENGTH),
                                              scope_key(request.scope))))

    @app.get("/v2/health/live")
    async def oip_live() -> Response:
        return await call("live")

    @app.get("/v2/health/ready")
    async def oip_ready() -> Response:
        return await call("ready")

    @app.get("/v2")
    async def oip_server() -> Response:
        return await call("server")

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    async def oip_model(name: str, version: str | None = None) -> Response:
        return await call("model", name, version)

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    async def oip_model_ready(name: str, version: str | None = None) -> Response:
        return await call("model_ready", name, version)

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    async def oip_infer(name: str, version: str | None = None) -> Response:
        return await call("infer", name, version)
