"""Switch operations: start, roll back, list, inspect, abort, promote; prediction feedback."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from actors.core.commands import AbortSwitch, PromoteSwitch, RollbackModel, SwitchModel
from actors.core.errors import bad_request
from actors.web.quart_io import caller, json_response, optional_object, request_object
from actors.web.service import Service


def register(app: QuartTrio, service: Service) -> None:
    @app.post("/models/<name>/switch")
    async def switch_model(name: str) -> Response:
        body = await request_object("{version, strategy, ...}")
        operation = await service.commands.submit(SwitchModel(name, body), caller())
        return json_response({"operation_id": operation.id, "operation": operation.to_dict()}, 202)

    @app.post("/models/<name>/rollback")
    async def rollback_model(name: str) -> Response:
        version = (await optional_object()).get("version")
        command = RollbackModel(name, None if version is None else str(version))
        operation = await service.commands.submit(command, caller())
        return json_response({"operation_id": operation.id, "operation": operation.to_dict()}, 202)

    @app.get("/switches")
    async def switches() -> Response:
        operations = sorted(service.transitions.view.state.operations.values(), key=lambda o: o.created_at,
                            reverse=True)
        return json_response({"operations": [o.to_dict() for o in operations[:100]], "count": len(operations)})

    @app.get("/switches/<operation_id>")
    async def switch_status(operation_id: str) -> Response:
        op = service.transitions.operation(operation_id)
        body = op.to_dict()
        body["candidate_health"] = service.health.snapshot(op.model, op.to_version).to_dict()
        body["stable_health"] = service.health.snapshot(op.model, op.from_version).to_dict()
        if op.params.strategy == "ab":
            body["ab"] = service.health.ab_report(op.id, op.from_version, op.to_version)
        return json_response(body)

    @app.post("/switches/<operation_id>/<any(abort, promote):action>")
    async def switch_stop(operation_id: str, action: str) -> Response:
        """Abort (back to the old version) or promote (on to the new one) a running switch."""
        command = AbortSwitch(operation_id) if action == "abort" else PromoteSwitch(operation_id)
        operation = await service.commands.submit(command, caller())
        return json_response(operation.to_dict())

    @app.post("/feedback")
    async def feedback() -> Response:
        body = await request_object('{"correlation_id": str, "outcome": label}')
        if not isinstance(body.get("correlation_id"), str) or not isinstance(body.get("outcome"), str):
            raise bad_request("body must be {\"correlation_id\": str, \"outcome\": label}")
        return json_response(await service.health.feedback(body["correlation_id"][:128], body["outcome"][:64]))
