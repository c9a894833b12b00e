"""JSON in and out of Quart handlers."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request

from actors.core.errors import RouterError, bad_request
from actors.web.access import scope_key
from actors.web.audit import Caller
from actors.web.bodies import parse_json, parse_optional_object
from actors.web.errors import http_status


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json")


def error_response(error: RouterError) -> Response:
    return json_response(error.to_body(), http_status(error))


async def request_json() -> Any:
    return parse_json(await request.get_data(cache=False))


async def request_object(what: str) -> dict[str, Any]:
    """The body, which must be a JSON object; ``what`` describes it in the error."""
    body = await request_json()
    if not isinstance(body, dict):
        raise bad_request(f"body must be an object: {what}")
    return body


async def optional_object() -> dict[str, Any]:
    return parse_optional_object(await request.get_data(cache=False))


def caller() -> Caller:
    """Who sent the current request (its admitted key and address): what the audit trail records."""
    return Caller(scope_key(request.scope), request.remote_addr, request.headers.get("X-Request-ID"))
