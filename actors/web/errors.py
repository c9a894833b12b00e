"""The one place that maps domain errors to HTTP statuses, and the error bodies both ports send.

Actors and the request path raise the classes of ``actors/core/errors.py``; they never
pick a status. Every HTTP answer (Quart routes, the hot path, the data plane), every
WebSocket error message and every failed batch item goes through :func:`http_status`,
so one error reads the same everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from actors.core.errors import (
    Conflict,
    DeadlineExceeded,
    Forbidden,
    InternalError,
    InvalidInput,
    InvalidRequest,
    NotFound,
    RouterError,
    StaleVersion,
    TooLarge,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    VersionRequired,
)

log = logging.getLogger("model_router.web")

MAX_BODY_BYTES = 4 * 1024 * 1024


class MethodNotAllowed(InvalidRequest):
    """The caller used a method the path does not take; the answer lists the ones it does."""

    def __init__(self, path: str, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__("method_not_allowed", f"{path} takes {', '.join(allowed)}",
                         {"path": path, "method": method, "allowed": list(allowed)})
        self.allowed = allowed


class HttpProtocolError(RouterError):
    """An HTTP-level failure with a status of its own (a Werkzeug error Quart raised, 408, 431...)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, details)
        self.status = status


# Most specific first: MethodNotAllowed is an InvalidRequest with its own status.
_STATUS: tuple[tuple[type[RouterError], int], ...] = (
    (MethodNotAllowed, 405),
    (VersionRequired, 428),
    (StaleVersion, 412),
    (InvalidRequest, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (InvalidInput, 422),
    (TooManyRequests, 429),
    (Unavailable, 503),
    (DeadlineExceeded, 504),
    (InternalError, 500),
)
_BY_CLASS: dict[type[RouterError], int] = {}


def http_status(error: RouterError) -> int:
    """The status for a domain error (memoised per class: this runs on every failed request)."""
    if isinstance(error, HttpProtocolError):
        return error.status
    cls = type(error)
    status = _BY_CLASS.get(cls)
    if status is None:
        status = next((s for base, s in _STATUS if issubclass(cls, base)), 500)
        _BY_CLASS[cls] = status
    return status


def item_body(error: RouterError) -> dict[str, Any]:
    """A failed batch item or WebSocket answer: the error shape plus the status it would have had."""
    return {**error.to_body(), "status": http_status(error)}


def log_error(where: str, error: RouterError, correlation_id: Any = None) -> None:
    """Client errors at INFO, service-side ones at WARNING: one rule for every layer.

    ``correlation_id`` (when the failed request gave one) lands in the JSON log line's field.
    """
    status = http_status(error)
    extra = {"correlation_id": correlation_id} if isinstance(correlation_id, str) else None
    log.log(logging.WARNING if status >= 500 else logging.INFO, "%s -> %d %s", where, status, error, extra=extra)


def correlation_of(body: Any) -> Any:
    """The correlation id a request body names, if any (for the log line of a failed prediction)."""
    return body.get("correlation_id") if isinstance(body, dict) else None


def internal_error(where: str, exc: BaseException) -> InternalError:
    """Log an unexpected exception with its traceback; the client gets no internals."""
    log.error("unhandled error on %s", where, exc_info=exc)
    return InternalError.from_exception(exc)


def payload_too_large(limit: int = MAX_BODY_BYTES) -> TooLarge:
    return TooLarge("payload_too_large", f"request body larger than {limit} bytes", {"limit_bytes": limit})


def error_payload(error: RouterError) -> tuple[int, bytes]:
    """Status and JSON body bytes for an error answer."""
    return http_status(error), orjson.dumps(error.to_body())
