"""The lean ASGI routes of the main port: ``POST /predict``, ``POST /predict/batch`` and ``/ws/switches``.

Quart's request and context machinery costs several times what a prediction does, and
these two endpoints need none of it: this reads the body (bounded), runs the predictor
and writes the JSON answer straight through ASGI; everything else goes to Quart. Errors
keep the service's one shape and statuses (``actors/web/errors.py``). The switch feed's
WebSocket is here for the same reason, per message rather than per request
(``actors/web/websockets.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from quart_trio import QuartTrio

from actors.core.errors import RouterError
from actors.web.access import scope_key
from actors.web.bodies import parse_json, read_asgi_body
from actors.web.errors import MethodNotAllowed, correlation_of, error_payload, internal_error, log_error
from actors.web.service import Service
from actors.web.websockets import FEED_PATH, stream_switches

JSON_HEADERS = [(b"content-type", b"application/json")]
HOT_PATHS = frozenset({"/predict", "/predict/batch"})

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HotPath:
    """ASGI app: the two prediction routes here, everything else to the Quart app."""

    def __init__(self, app: QuartTrio, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] == "http" and path in HOT_PATHS:
            await self.predict(path, scope["method"], receive, send, scope)
        elif scope["type"] == "websocket" and path == FEED_PATH:
            await stream_switches(self.service, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def predict(self, path: str, method: str, receive: Receive, send: Send, scope: dict[str, Any]) -> None:
        headers = JSON_HEADERS
        body = None
        try:
            if method != "POST":
                headers = [*JSON_HEADERS, (b"allow", b"POST")]
                raise MethodNotAllowed(path, method, ("POST",))
            body = parse_json(await read_asgi_body(receive))
            service = self.service
            answer = await service.gate.predict(service.predictor, scope_key(scope), body,
                                                batch=path != "/predict")
            status, payload = 200, orjson.dumps(answer)
        except RouterError as error:
            log_error(f"{method} {path}", error, correlation_of(body))
            status, payload = error_payload(error)
            if status == 413:  # the unread rest of the body makes this connection unusable
                headers = [*headers, (b"connection", b"close")]
        except Exception as exc:
            status, payload = error_payload(internal_error(f"{method} {path}", exc))
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
