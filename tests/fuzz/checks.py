"""What every fuzzed answer must satisfy: no 5xx but a documented 503, JSON errors in the one shape."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ADMIN_KEY
from tests.fuzz.client import Answer
from tests.fuzz.routes import AVAILABILITY_CODES, Route


def error_shape(body: Any, where: str) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"}}`` with the right types; returns the inner object."""
    assert isinstance(body, dict) and set(body) >= {"error"}, f"{where}: not an error object: {str(body)[:300]}"
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message", "details"}, f"{where}: {str(body)[:300]}"
    assert isinstance(error["code"], str) and error["code"], where
    assert isinstance(error["message"], str), where
    assert isinstance(error["details"], dict), where
    return error


def oip_error_shape(body: Any, where: str) -> None:
    """The Open Inference Protocol's error form: ``{"error": "<message>"}``."""
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], \
        f"{where}: not a protocol error: {str(body)[:300]}"


def documented_503(route: Route, body: Any) -> bool:
    if not route.may_503:
        return False
    if route.oip:  # not ready / model unavailable, in the protocol's form
        return isinstance(body, dict) and (isinstance(body.get("error"), str) or body.get("ready") is False)
    if route.path == "/health/ready":
        return isinstance(body, dict) and body.get("status") == "not_ready"
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("code") in AVAILABILITY_CODES


def holds_admin_key(headers: dict[str, str]) -> bool:
    return headers.get("X-Admin-Key") == ADMIN_KEY or (
        not headers.get("X-Admin-Key") and headers.get("Authorization") == f"Bearer {ADMIN_KEY}")


def check_answer(route: Route, method: str, headers: dict[str, str], answer: Answer) -> None:
    where = f"{method} {route.path} -> {answer.status}"
    if method == "HEAD" or answer.status < 400:  # successes: their shapes are other tests' business
        # A redirect (308 for "//" in a path) acts on nothing; a 2xx without the key would have.
        if route.admin and route.method == method and answer.status < 300 and not holds_admin_key(headers):
            raise AssertionError(f"{where}: an admin route acted without the admin key")
        return
    try:
        body = json.loads(answer.body)
    except ValueError as exc:
        raise AssertionError(f"{where}: answer is not JSON: {answer.body[:300]!r}") from exc
    if answer.status >= 500:
        assert answer.status == 503 and documented_503(route, body), f"{where}: {answer.body[:500]!r}"
        if route.path != "/health/ready" and not route.oip:
            error_shape(body, where)
        return
    assert answer.headers.get("content-type", "").startswith("application/json"), where
    if route.oip and not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        oip_error_shape(body, where)  # refusals by the access layer keep the service's shape
        return
    error_shape(body, where)
