"""``X-Request-ID`` on both ports: accepted (or generated), echoed, and bound for the log lines.

The id is set in ``REQUEST_ID`` (``actors/serving/request_context.py``) while the request's
handler runs, so the JSON log formatter stamps every line the request causes with it. Both
ports echo it in the answer, so a client, a proxy and the service's logs name one request
the same way. The data port does the same inside its one endpoint wrapper
(``actors/web/data_port.py``, ``_endpoint``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from actors.serving.request_context import REQUEST_ID, accepted_request_id

HEADER = b"x-request-id"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIds:
    """ASGI middleware for the main port (HTTP only; WebSocket frames carry their own ids)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", ()) if name == HEADER), None)
        request_id = accepted_request_id(given)
        echoed = (HEADER, request_id.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
