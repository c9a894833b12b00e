"""Close the connection after the answer when the client asked for it (``Connection: close``).

A request with ``Connection: close`` (or any HTTP/1.0 request: h11 never keeps those alive)
was answered, with ``Connection: close`` in the answer, yet the socket stayed open until the
client gave up: a bare QuartTrio app on Hypercorn's trio worker does the same, so the cause
is upstream. Hypercorn closes such a connection from inside the app's last ``send`` (end of
body -> stream closed -> ``http.disconnect`` queued -> close). Quart's receiver takes that
disconnect and cancels the request's task, which is the task still inside ``send``: the
close is cancelled before it runs, and the connection is left open, half-dead.

This ASGI wrapper sees the request ask to close, sets ``connection: close`` on the answer
itself (what h11 would add, made explicit) and shields its sends from that cancellation,
so Hypercorn's close always runs. Keep-alive requests pass through untouched.
(``actors/web/unread_body.py`` does the same for answers that leave a body unread.)
"""

from __future__ import annotations

import trio

from actors.web.unread_body import ASGIApp, Message, Receive, Scope, Send


def asks_to_close(scope: Scope) -> bool:
    """HTTP/1.1 with a ``close`` token in ``Connection``, or HTTP/1.0 (which h11 always closes)."""
    version = scope.get("http_version")
    if version == "1.0":
        return True
    if version != "1.1":
        return False  # HTTP/2 has no Connection header and closes streams, not connections
    for name, value in scope.get("headers", ()):
        if name.lower() == b"connection" and b"close" in (token.strip() for token in value.lower().split(b",")):
            return True
    return False


class CloseWhenAsked:
    """ASGI middleware: ``Connection: close`` honoured, the close shielded from Quart's cancellation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not asks_to_close(scope):
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            with trio.CancelScope(shield=True):
                await send(message)

        await self.app(scope, receive, closing_send)
