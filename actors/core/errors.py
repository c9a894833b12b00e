"""The one error type the HTTP layer turns into ``{"error": {code, message, details}}``.

Raising an :class:`ApiError` from anywhere below the HTTP layer (feature validation,
model lookup, admin checks) keeps the status code, the machine-readable code and the
human message together, so every 4xx/5xx body has the same shape.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class ApiError(Exception):
    """A request failure that maps to one HTTP status and a JSON error body."""

    status: int
    code: str
    message: str
    details: Any = attrs.field(factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def bad_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, "bad_request", message, details)


def unprocessable(message: str, **details: Any) -> ApiError:
    return ApiError(422, "invalid_features", message, details)


def not_found(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(404, code, message, details)


def unavailable(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(503, code, message, details)
