"""The Quart-Trio app of the main port: error handlers and the resource routes.

Who may call which route is decided before the app, by the access layer
(``actors/web/access.py``) that wraps it together with the hot path.
"""

from __future__ import annotations

from quart import Response, has_request_context, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors.core.errors import RouterError
from actors.web.errors import MAX_BODY_BYTES, HttpProtocolError, internal_error, log_error, payload_too_large
from actors.web.quart_io import error_response
from actors.web.routes import access, api, cluster, health, models, oip, rules, rules_api, switches
from actors.web.service import SERVICE_NAME, Service
from actors.web.websockets import stream_predictions


def _current_path() -> str:
    if has_request_context():
        return request.path
    if has_websocket_context():
        return websocket.path
    return "?"


def create_app(service: Service) -> QuartTrio:
    """The Quart-Trio app: thin handlers over the service's actors and predictor."""
    app = QuartTrio(SERVICE_NAME)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.errorhandler(RouterError)
    async def on_router_error(error: RouterError) -> Response:
        log_error(_current_path(), error)
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        if error.code == 413:
            # The unread rest of the body makes this connection unusable: tell the client.
            response = error_response(payload_too_large())
            response.headers["Connection"] = "close"
            return response
        code = (error.name or "http_error").lower().replace(" ", "_")
        message = error.description or error.name or "HTTP error"
        return error_response(HttpProtocolError(error.code or 400, code, message, {"path": _current_path()}))

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        return error_response(internal_error(_current_path(), error))

    for routes in (models, switches, rules, rules_api, cluster, health, oip, access, api):
        routes.register(app, service)

    @app.websocket("/ws/predict")
    async def ws_predict() -> None:
        await stream_predictions(service)

    return app
