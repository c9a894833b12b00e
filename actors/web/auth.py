"""The admin key guard for operator routes (``X-Admin-Key`` or ``Authorization: Bearer``)."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request

from actors.core.errors import Forbidden, Unauthenticated
from actors.web.service import Service

log = logging.getLogger("model_router.web")

Handler = Callable[..., Awaitable[Response]]


def require_admin(service: Service) -> Callable[[Handler], Handler]:
    """Admin endpoints need the admin key; without one configured they are switched off (403)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            expected = service.settings.admin_key
            if not expected:
                raise Forbidden("admin_disabled",
                                "admin API disabled: set MODEL_ROUTER_ADMIN_KEY (or _FILE) to enable it")
            given = request.headers.get("X-Admin-Key", "")
            auth = request.headers.get("Authorization", "")
            if not given and auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), expected.encode()):
                log.warning("admin request to %s refused: %s admin key", request.path,
                            "wrong" if given else "missing")
                raise Unauthenticated("unauthorized", "missing or wrong admin key", {"header": "X-Admin-Key"})
            return await handler(*args, **kwargs)

        return guarded

    return decorate
