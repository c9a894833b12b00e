"""The main port: Hypercorn serving the access layer, the hot path and the Quart app, on one or many workers."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig

from actors.web.access import AccessLayer
from actors.web.app import create_app
from actors.web.connection_close import CloseWhenAsked
from actors.web.errors import MAX_BODY_BYTES
from actors.web.hot_path import HOT_PATHS, HotPath
from actors.web.hypercorn_worker import serve as hypercorn_serve
from actors.web.request_ids import RequestIds
from actors.web.request_metrics import RequestMetrics, RouteTemplates
from actors.web.service import Service
from actors.web.unread_body import CloseOnUnreadBody


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound with SO_REUSEPORT so every worker process listens on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def hypercorn_config(host: str, port: int, *, shared_port: bool, access_log: bool,
                     certfile: Path | None = None, keyfile: Path | None = None) -> HypercornConfig:
    config = HypercornConfig()
    if certfile is not None and keyfile is not None:
        config.certfile = str(certfile)
        config.keyfile = str(keyfile)
    if shared_port:
        sock = listening_socket(host, port)
        sock.set_inheritable(True)
        config.bind = [f"fd://{sock.detach()}"]
    else:
        config.bind = [f"{host}:{port}"]
    config.accesslog = logging.getLogger("model_router.access") if access_log else None
    config.errorlog = logging.getLogger("model_router.http")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = 75.0
    config.include_server_header = False
    config.websocket_max_message_size = MAX_BODY_BYTES
    return config


async def serve_main_port(service: Service, config: HypercornConfig, done: trio.Event,
                          *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until ``service.stop``; Hypercorn drains in-flight requests before returning.

    Hypercorn's own worker, except that each plain-TCP connection's first request head is
    read by ``actors/web/head_gate.py`` first (slow-loris clients: cheap, and cut at a timeout).
    """
    try:
        quart_app = create_app(service)
        # The access layer wraps the hot path and Quart alike; the metrics layer times refusals too.
        timed = RequestMetrics(AccessLayer(HotPath(quart_app, service), service.gate), service.metrics,
                               RouteTemplates(quart_app.url_map, fixed_routes=HOT_PATHS))
        await hypercorn_serve(CloseWhenAsked(CloseOnUnreadBody(RequestIds(timed))), config,
                              shutdown_trigger=service.stop.wait, task_status=task_status)
    finally:
        done.set()
