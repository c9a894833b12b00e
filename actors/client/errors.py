"""Typed client errors carrying the service's ``{"error": {code, message, details}}``.

A trading engine decides what to do by type, not by parsing messages: a
:class:`BadRequest` is a bug in the caller and must not be retried, a
:class:`ServiceUnavailable` is worth a fallback, a :class:`ServiceUnreachable` means
nothing answered at all. The same types come out of the local (in-process) mode, so
code written against the service runs unchanged against the fallback.
"""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup


class ModelRouterError(Exception):
    """Base of every error the client raises."""


class ServiceUnreachable(ModelRouterError):
    """No HTTP answer: connection refused or timed out, after the retries the policy allows."""


class RequestTimeout(ModelRouterError):
    """The service took the request but did not answer within the client's timeout (not retried)."""


class FeedError(ModelRouterError):
    """The switch feed refused the subscription or closed in a way reconnecting cannot fix."""


class LocalModeUnsupported(ModelRouterError):
    """An operator call (switch, rollback, models ...) made on a client running models in process."""


class ApiError(ModelRouterError):
    """The service answered with an error status and its JSON error body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: Any = details if details is not None else {}

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    """400: malformed JSON or request shape."""


class Unauthorized(ApiError):
    """401: missing or wrong key."""


class Forbidden(ApiError):
    """403: the admin API is disabled, or the key may not do this."""


class NotFound(ApiError):
    """404: unknown model, version, operation, correlation id or path."""


class Conflict(ApiError):
    """409: the state forbids it (a version serving traffic, an operation already over ...)."""


class PayloadTooLarge(ApiError):
    """413: body over the size limit, or a batch over ``max_batch_items``."""


class Unprocessable(ApiError):
    """422: features or fields invalid (wrong names, NaN, out of float32 range, bad switch params)."""


class ServiceUnavailable(ApiError):
    """503: no model could answer (still after the client's retries)."""


class ServerError(ApiError):
    """Any other 5xx: a fault in the service."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: Unprocessable, 503: ServiceUnavailable,
}


def api_error(status: int, body: Any) -> ApiError:
    """The typed error for an error answer; a body without the standard shape keeps its text."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", "error"))
        message = str(error.get("message", ""))
        details = error.get("details", {})
    else:
        code, message, details = "http_error", str(body)[:500], {}
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(status, code, message, details)


def single_error(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one member, else the group itself.

    Trio wraps what a task raises before ``task_status.started()`` in a group; a caller of
    the client should get the FeedError or LocalStartupError itself.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
