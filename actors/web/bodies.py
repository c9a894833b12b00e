"""Request bodies: bounded reads and one JSON parser for every route and both ports."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from actors.core.errors import InvalidInput, bad_request
from actors.web.errors import MAX_BODY_BYTES, payload_too_large


def _reject_constant(token: str) -> Any:
    raise InvalidInput("non_finite_number", f"non-finite number {token} is not accepted", {"token": token})


def parse_json(data: bytes) -> Any:
    """orjson for speed; the stdlib parser for what orjson refuses, to phrase the error exactly.

    Numbers beyond float range (``1e999``) parse to infinity there and are then refused by
    feature validation with a 422 naming the feature; NaN/Infinity tokens get a 422 here.
    """
    if not data:
        raise bad_request("request body must be JSON")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _parse_to_explain(data)


def _parse_to_explain(data: bytes) -> Any:
    """What orjson refused, through the stdlib parser: its message names the problem precisely."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {str(exc)[:200]}") from exc


def parse_optional_object(data: bytes) -> dict[str, Any]:
    """An optional JSON object body: empty means ``{}``."""
    if not data.strip():
        return {}
    body = parse_json(data)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


async def read_asgi_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body of an ASGI request, bounded by ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise bad_request("client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
