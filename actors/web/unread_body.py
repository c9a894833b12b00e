"""Finish a request whose body was answered before it was read.

A handler may answer before it reads the body: the admin guard refuses a request without
a key, a 413 refuses an oversized one, a 404 or 405 never looks at it. Hypercorn hands the
body to the app through a queue of ``max_app_queue_size`` (10) messages. When the app has
stopped reading, the connection's reading task blocks on the full queue, and so does the
``http.disconnect`` Hypercorn queues when the response ends: the connection never answers
again, never sees the client leave, and its socket stays in CLOSE-WAIT. A client without
a key could leak one socket per request that way.

This ASGI wrapper watches ``receive``. When a response starts while the request still has
body to come, it adds ``Connection: close`` and starts a drain task that reads and discards
the rest of the body until the request ends or the client goes away. The drained bytes are
only those that arrive while the answer is sent: with ``Connection: close`` h11 closes the
connection right after the answer, which queues the disconnect that ends the drain. The
client gets its answer and a clean close, and the server drops the socket. Requests whose
body was read (every normal request) keep their connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def expects_body(scope: Scope) -> bool:
    """True when the request declares a body (a non-zero Content-Length, or chunked)."""
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"content-length":
            return value.strip() not in (b"0", b"")
        if lowered == b"transfer-encoding":
            return True
    return False


class CloseOnUnreadBody:
    """ASGI middleware: close and drain when the answer starts before the body was read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not expects_body(scope):
            await self.app(scope, receive, send)
            return
        body_done = False
        closing = False
        drain_scope = trio.CancelScope()

        async def tracking_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True  # the whole body arrived, or the client went away
                drain_scope.cancel()
            return message

        async def drain() -> None:
            with drain_scope:
                while not body_done:
                    await tracking_receive()

        async with trio.open_nursery() as nursery:

            async def closing_send(message: Message) -> None:
                nonlocal closing
                if message["type"] == "http.response.start" and not body_done:
                    closing = True
                    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
                    nursery.start_soon(drain)
                if closing:
                    # The app's own receiver (Quart's) may take the disconnect this very send
                    # queues and cancel the sender; shielded, Hypercorn still closes the socket.
                    with trio.CancelScope(shield=True):
                        await send(message)
                else:
                    await send(message)

            await self.app(scope, tracking_receive, closing_send)
