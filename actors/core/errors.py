"""Domain errors: why a request or an operator command could not be carried out.

Every failure the service reports to a caller is one of these classes. Each says *who*
caused it (the caller's request, the state of the service, or a fault inside it) and
carries a machine-readable ``code``, a human ``message`` and JSON-able ``details``.
They know nothing of HTTP: ``actors/web/errors.py`` is the one place that maps a class
to a status code, so the same error reads the same on the main port, the data plane,
a WebSocket answer, and a batch item.

Raise the most specific class; catch :class:`RouterError` to handle them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RouterError(Exception):
    """Base class: a request or command that the service refuses or cannot complete."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: Mapping[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and isinstance(other, RouterError)
                and (self.code, self.message, self.details) == (other.code, other.message, other.details))

    __hash__ = Exception.__hash__

    def to_body(self) -> dict[str, Any]:
        """The one JSON error shape: ``{"error": {code, message, details}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": dict(self.details)}}


class InvalidRequest(RouterError):
    """The caller's request is malformed: not JSON, a wrong field type, an unknown field."""


class InvalidInput(RouterError):
    """The caller's request is well formed but a value is refused (features, settings, a config)."""


class NotFound(RouterError):
    """The caller named a model, version or operation that does not exist."""


class Conflict(RouterError):
    """The caller asked for something the current state forbids (deregistering a serving version)."""


class StaleVersion(Conflict):
    """The caller edited a version of a shared document that is no longer the newest (If-Match)."""


class VersionRequired(InvalidRequest):
    """The caller must say which version it edits (If-Match) and did not."""


class TooLarge(RouterError):
    """The caller sent more than a limit allows (a body, a batch, an upload)."""


class Unauthenticated(RouterError):
    """The caller presented no credentials, or credentials the service does not know."""


class Forbidden(RouterError):
    """The caller is known but may not do this (a role it lacks, an admin API switched off)."""


class TooManyRequests(RouterError):
    """The caller is over a limit that frees up with time (a rate limit, a daily budget)."""


class Unavailable(RouterError):
    """The service cannot answer now: no model could load, a breaker is open, inference failed."""


class DeadlineExceeded(RouterError):
    """The service did not finish within the request's deadline (a model call hung)."""


class InternalError(RouterError):
    """A fault inside the service (a bug). The message hides internals; the log has the traceback."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> InternalError:
        return cls("internal_error", "internal error; see the service log", {"type": type(exc).__name__})


def bad_request(message: str, **details: Any) -> InvalidRequest:
    return InvalidRequest("bad_request", message, details)


def unprocessable(message: str, **details: Any) -> InvalidInput:
    return InvalidInput("invalid_features", message, details)


def not_found(code: str, message: str, **details: Any) -> NotFound:
    return NotFound(code, message, details)


def unavailable(code: str, message: str, **details: Any) -> Unavailable:
    return Unavailable(code, message, details)
