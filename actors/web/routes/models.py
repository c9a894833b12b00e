"""Models and versions: list and describe them, reload, register, deregister."""

from __future__ import annotations

from typing import Any

import trio
from quart import Response
from quart_trio import QuartTrio

from actors.core.commands import DeregisterVersion, ReloadModel, register_command
from actors.core.errors import not_found
from actors.web.quart_io import caller, json_response, request_json
from actors.web.service import Service
from actors.web.views import catalog, describe_model


def register(app: QuartTrio, service: Service) -> None:
    async def detail_of(name: str) -> dict[str, Any]:
        models = await catalog(service)
        if name not in models:
            raise not_found("model_not_found", f"model {name!r} is not in the repository",
                            model=name, available=sorted(models))
        return await trio.to_thread.run_sync(describe_model, service, name, models)

    @app.get("/models")
    async def models() -> Response:
        found = await catalog(service)
        described = await trio.to_thread.run_sync(
            lambda: [describe_model(service, name, found) for name in sorted(found)])
        return json_response({"models": described, "count": len(described)})

    @app.get("/models/<name>")
    async def model_detail(name: str) -> Response:
        return json_response(await detail_of(name))

    @app.get("/models/<name>/versions")
    async def model_versions(name: str) -> Response:
        detail = await detail_of(name)
        return json_response({"model_name": name, "active_version": detail["active_version"],
                              "versions": detail["versions"]})

    @app.post("/reload/<name>")
    async def reload_model(name: str) -> Response:
        return json_response(await service.commands.submit(ReloadModel(name), caller()))

    @app.post("/models")
    async def register_model() -> Response:
        command = register_command(await request_json())
        return json_response(await service.commands.submit(command, caller()), 201)

    @app.delete("/models/<name>/versions/<version>")
    async def deregister_model(name: str, version: str) -> Response:
        return json_response(await service.commands.submit(DeregisterVersion(name, version), caller()))
