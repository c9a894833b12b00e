"""Health, readiness, detailed health and Prometheus metrics."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from actors.web.quart_io import json_response
from actors.web.service import Service
from actors.web.views import detailed_health, health_body, ready_body


def register(app: QuartTrio, service: Service) -> None:
    @app.get("/health")
    async def health() -> Response:
        return json_response(health_body(service))

    @app.get("/health/ready")
    async def ready() -> Response:
        status, body = ready_body(service)
        return json_response(body, status)

    @app.get("/health/detailed")
    async def health_detailed() -> Response:
        return json_response(detailed_health(service))

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.exposition()
        return Response(body, status=200, content_type=content_type)
