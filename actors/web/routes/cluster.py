"""The cluster: every live replica as its last heartbeat describes it."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from actors.web.quart_io import json_response
from actors.web.service import Service


def register(app: QuartTrio, service: Service) -> None:
    @app.get("/cluster")
    async def cluster() -> Response:
        handle = service.cluster
        replicas = handle.view()
        return json_response({"self": handle.replica_id, "shared": handle.enabled, "count": len(replicas),
                              "replicas": replicas})
