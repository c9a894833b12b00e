"""The API's own description: ``GET /openapi.json`` (built from ``actors/web/openapi.py``'s table)."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from actors.web.openapi import openapi
from actors.web.quart_io import json_response
from actors.web.service import SERVICE_VERSION, Service


def register(app: QuartTrio, service: Service) -> None:
    document = openapi(SERVICE_VERSION)

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        return json_response(document)
