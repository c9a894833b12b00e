"""The API description: a declarative table of every route, rendered as OpenAPI 3.1 and as Markdown.

``ROUTES`` says, per route, what it does, what it takes and what it answers; the role each
needs comes from the access table (``actors.core.access.ROUTE_ROLES``), so the document and
the enforcement cannot disagree. ``openapi()`` builds the document served at
``GET /openapi.json``; ``markdown()`` renders docs/api.md (``make api-docs``). A test checks
the table against the routes the app actually serves, and docs/api.md against ``markdown()``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any, Final

import attrs

from actors.core.access import ROUTE_ROLES, Role
from actors.core.switch_policy import STRATEGIES

TITLE: Final = "model-router API"

_ERROR: Final = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message", "details"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}},
}
_PREDICT_REQUEST: Final = {
    "type": "object", "required": ["features"], "additionalProperties": False,
    "properties": {
        "features": {"type": "object", "description": "feature name -> number (or list for windowed models)"},
        "model_name": {"type": "string"}, "model_version": {"type": "string"},
        "asset_class": {"type": "string"}, "horizon_ms": {"type": "number", "minimum": 0},
        "symbol": {"type": "string"}, "correlation_id": {"type": "string"}, "timestamp": {},
    },
    "description": "either model_name, or asset_class and horizon_ms (routed by the rules)",
}
_PREDICTION: Final = {
    "type": "object", "required": ["prediction", "model", "correlation_id", "config_hash", "latency_ms"],
    "properties": {
        "prediction": {"type": "object", "properties": {
            "signal": {"type": "string"}, "confidence": {"type": "number"},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}}}},
        "model": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
        "rule_index": {"type": ["integer", "null"]}, "correlation_id": {"type": "string"},
        "config_hash": {"type": "string"}, "latency_ms": {"type": "number"}, "symbol": {"type": "string"},
        "fallback_from": {"type": "string"},
    },
}
_OBJECT: Final = {"type": "object"}
SCHEMAS: Final[Mapping[str, Any]] = {
    "Error": _ERROR,
    "PredictRequest": _PREDICT_REQUEST,
    "Prediction": _PREDICTION,
    "BatchRequest": {"type": "object", "required": ["requests"], "additionalProperties": False,
                     "properties": {"requests": {"type": "array", "minItems": 1,
                                                 "items": {"$ref": "#/components/schemas/PredictRequest"}}}},
    "BatchResponse": {"type": "object", "required": ["predictions", "count", "failed"], "properties": {
        "predictions": {"type": "array", "items": {"oneOf": [
            {"$ref": "#/components/schemas/Prediction"},
            {"allOf": [{"$ref": "#/components/schemas/Error"},
                       {"type": "object", "properties": {"index": {"type": "integer"},
                                                         "status": {"type": "integer"}}}]}]}},
        "count": {"type": "integer"}, "failed": {"type": "integer"}, "latency_ms": {"type": "number"}}},
    "Feedback": {"type": "object", "required": ["correlation_id", "outcome"], "properties": {
        "correlation_id": {"type": "string"}, "outcome": {"type": "string"}}},
    "RouteProbe": {"type": "object", "required": ["asset_class", "horizon_ms"], "properties": {
        "asset_class": {"type": "string"}, "horizon_ms": {"type": "number"}, "symbol": {"type": "string"}}},
    "SwitchRequest": {"type": "object", "properties": {
        "version": {"type": "string"}, "strategy": {"type": "string", "enum": list(STRATEGIES)}},
        "description": "target version, strategy and its parameters"},
    "RegisterRequest": {"type": "object", "required": ["name", "version"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"}, "metadata": {"type": "object"},
        "model_base64": {"type": "string"}}},
    "Usage": {"type": "object", "required": ["day", "resets_at", "workspaces"], "properties": {
        "day": {"type": "string"}, "resets_at": {"type": "number"}, "workspaces": {"type": "object"}}},
    "AuditRecords": {"type": "object", "required": ["records", "count"], "properties": {
        "records": {"type": "array", "items": {"type": "object"}}, "count": {"type": "integer"},
        "file": {"type": ["string", "null"]}}},
    "Object": _OBJECT,
}

#: Error codes the access layer may answer on a route of each kind (besides the route's own).
_ACCESS_ERRORS: Final[Mapping[str, tuple[int, ...]]] = {
    "open": (), "predict": (401, 403, 429, 503), "read": (401, 403),
    "operate": (401, 403), "admin": (401, 403),
}


@attrs.frozen
class Route:
    """One route: what it does, its body and answers (schema names), the error statuses of its own."""

    summary: str
    request: str | None = None
    response: str = "Object"
    status: int = 200
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    websocket: bool = False
    content_type: str = "application/json"


ROUTES: Final[Mapping[tuple[str, str], Route]] = {
    ("POST", "/predict"): Route("One prediction, by model name or routed by asset class and horizon",
                                "PredictRequest", "Prediction", errors=(400, 404, 413, 422, 503)),
    ("POST", "/predict/batch"): Route("Many predictions; each item answers on its own (per-item errors)",
                                      "BatchRequest", "BatchResponse", errors=(400, 413)),
    ("POST", "/feedback"): Route("The observed outcome of an earlier prediction (accuracy statistics)",
                                 "Feedback", errors=(400,)),
    ("POST", "/route/test"): Route("Which rule and model a request would be routed to", "RouteProbe",
                                   errors=(400,)),
    ("GET", "/ws/predict"): Route("WebSocket: stream prediction requests, one answer message per message",
                                  websocket=True),
    ("GET", "/models"): Route("Every model in the repository with its versions and state"),
    ("GET", "/models/{name}"): Route("One model: versions, active version, metadata", errors=(404,)),
    ("GET", "/models/{name}/versions"): Route("A model's versions", errors=(404,)),
    ("GET", "/rules"): Route("The rules and settings in force"),
    ("GET", "/stats"): Route("Reload statistics"),
    ("GET", "/reload/events"): Route("Recent config reload attempts", errors=(400,),
                                     query=(("limit", "1..history size, default 20"),)),
    ("GET", "/switches"): Route("Switch operations, newest first"),
    ("GET", "/switches/{operation_id}"): Route("One switch operation with the health of both versions",
                                               errors=(404,)),
    ("GET", "/health/detailed"): Route("Health of every model version, breakers, cache"),
    ("GET", "/usage"): Route("Today's predictions and refusals per workspace, key and model; budgets",
                             response="Usage", query=(("workspace", "one workspace (default: all you may see)"),)),
    ("GET", "/openapi.json"): Route("This document"),
    ("GET", "/ws/switches"): Route("WebSocket: live switch events", websocket=True,
                                   query=(("symbol", "filter"), ("asset_class", "filter"), ("model", "filter"),
                                          ("since", "resume after this stream id (Redis)"))),
    ("POST", "/models/{name}/switch"): Route("Start moving a model to a version with a strategy", "SwitchRequest",
                                             status=202, errors=(400, 404, 409, 422)),
    ("POST", "/models/{name}/rollback"): Route("Roll a model back (its running switch, or to a version)",
                                               status=202, errors=(404, 409)),
    ("POST", "/switches/{operation_id}/abort"): Route("Abort a running switch: all traffic back",
                                                      errors=(404, 409)),
    ("POST", "/switches/{operation_id}/promote"): Route("Finish a running switch at once", errors=(404, 409)),
    ("POST", "/reload/{name}"): Route("Rescan and load the newest version of a model", errors=(404, 503)),
    ("POST", "/config/reload"): Route("Reload the rules (and access) files now", errors=(422,)),
    ("POST", "/models"): Route("Register a model version (optionally uploading the file)", "RegisterRequest",
                               status=201, errors=(400, 409, 413, 422)),
    ("DELETE", "/models/{name}/versions/{version}"): Route("Take a version out of service for good",
                                                           errors=(404, 409)),
    ("GET", "/audit"): Route("The newest audit records, newest first", response="AuditRecords", errors=(400,),
                             query=(("limit", "1..1000, default 100"),)),
    ("GET", "/rules/export"): Route("The rules document in force, as YAML, with its version",
                                    content_type="application/yaml"),
    ("POST", "/rules/validate"): Route("Dry run: problems, warnings and the routes whose model would change",
                                      "Object", errors=(400, 422)),
    ("PUT", "/rules"): Route("Replace the whole rules document (YAML or JSON); needs If-Match: <version>",
                             "Object", errors=(400, 412, 422, 428)),
    ("POST", "/rules/import"): Route("Import a rules document (YAML or JSON) as the next version", "Object",
                                     errors=(400, 422)),
    ("POST", "/rules/items"): Route("Append a rule", "Object", status=201, errors=(400, 422)),
    ("PATCH", "/rules/items/{index}"): Route("Change fields of one rule", "Object", errors=(400, 404, 422)),
    ("DELETE", "/rules/items/{index}"): Route("Remove one rule", errors=(400, 404, 422)),
    ("GET", "/cluster"): Route("Every live replica: id, address, rules version, versions, readiness, heartbeat"),
    ("GET", "/v2"): Route("Open Inference Protocol: server metadata (docs/oip.md)"),
    ("GET", "/v2/models/{name}"): Route("Open Inference Protocol: model metadata (inputs, outputs)", errors=(404,)),
    ("GET", "/v2/models/{name}/versions/{version}"): Route("Open Inference Protocol: model version metadata",
                                                           errors=(404,)),
    ("GET", "/v2/models/{name}/ready"): Route("Open Inference Protocol: model readiness", errors=(404, 503)),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Route("Open Inference Protocol: version readiness",
                                                                 errors=(404, 503)),
    ("POST", "/v2/models/{name}/infer"): Route("Open Inference Protocol: inference on JSON (or binary) tensors",
                                               "Object", errors=(400, 404, 422, 503)),
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Route(
        "Open Inference Protocol: inference on one version", "Object", errors=(400, 404, 422, 503)),
    ("GET", "/v2/health/live"): Route("Open Inference Protocol: liveness"),
    ("GET", "/v2/health/ready"): Route("Open Inference Protocol: readiness", errors=(503,)),
    ("GET", "/health"): Route("Liveness"),
    ("GET", "/health/ready"): Route("Readiness: 200 once the default model is loaded, else 503", errors=(503,)),
    ("GET", "/metrics"): Route("Prometheus metrics", content_type="text/plain"),
}

_STATUS_TEXT: Final = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad request", 401: "Unauthenticated",
                       403: "Forbidden", 404: "Not found", 409: "Conflict", 413: "Too large",
                       412: "Precondition failed (stale version)", 422: "Unprocessable",
                       428: "Precondition required (If-Match)", 429: "Too many requests", 503: "Unavailable"}


def role_name(method: str, path: str) -> str:
    access = ROUTE_ROLES[(method, path)]
    return access.value if isinstance(access, Role) else str(access)


def _operation(method: str, path: str, route: Route) -> dict[str, Any]:
    role = role_name(method, path)
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(route.status, "OK")}
    if route.websocket:
        ok = {"description": "Switching Protocols (WebSocket); a refused handshake is a plain HTTP answer"}
    elif route.content_type == "application/json":
        ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.response}"}}}
    else:
        ok["content"] = {route.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(101 if route.websocket else route.status): ok}
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for status in sorted({*route.errors, *_ACCESS_ERRORS[role]}):
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": error_ref}
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_"),
        "x-role": role,
        "responses": responses,
    }
    if role != "open":
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    else:
        operation["security"] = []
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)}", path)]
    parameters += [{"name": name, "in": "query", "required": False, "description": text,
                    "schema": {"type": "string"}} for name, text in route.query]
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{route.request}"}}}}
    if route.websocket:
        operation["x-websocket"] = True
    return operation


def openapi(version: str = "0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``ROUTES``."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), route in ROUTES.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, route)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": version,
                 "description": "Roles per route are in x-role (docs/access.md). Errors share one shape."},
        "paths": paths,
        "components": {
            "schemas": dict(SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }


def markdown(version: str = "0") -> str:
    """docs/api.md: a reference rendered from the same document."""
    document = openapi(version)
    lines = [f"# {TITLE} reference", "",
             "Generated from `actors/web/openapi.py` by `make api-docs`; do not edit by hand. The same",
             "description is served as OpenAPI 3.1 at `GET /openapi.json`. Roles: docs/access.md; every error",
             'answer is `{"error": {"code", "message", "details"}}`.', "",
             "| Method | Path | Role | Summary |", "| --- | --- | --- | --- |"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            lines.append(f"| {method.upper()} | `{path}` | {op['x-role']} | {op['summary']} |")
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            lines += ["", f"## {method.upper()} `{path}`", "", op["summary"] + ".", "", f"Role: **{op['x-role']}**."]
            if op.get("x-websocket"):
                lines.append("WebSocket handshake (GET); the key goes in the handshake's headers.")
            for parameter in op.get("parameters", ()):
                text = parameter.get("description", "")
                lines.append(f"- `{parameter['name']}` ({parameter['in']}){': ' + text if text else ''}")
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                lines.append(f"- Body: `{ref}`")
            answers = ", ".join(f"{code} {value['description']}" for code, value in op["responses"].items())
            lines.append(f"- Answers: {answers}")
    lines += ["", "## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += [f"### {name}", "", "```json", json.dumps(schema, indent=2), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
