"""The data-plane actor: a second listener serving the inference routes with the lean HTTP/1.1 engine.

It binds its own socket (SO_REUSEPORT on request, so ``--workers N`` processes share the
data port exactly as they share the main port), reports the port it got, serves until
``shutdown`` is set and then drains within ``limits.drain_deadline_s``. Started with
``nursery.start`` in the root nursery like every other actor; the caller decides whether
the data plane is enabled at all.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import trio

from actors.web.http1 import Limits, Resolver, Routes, serve

log = logging.getLogger("model_router.data_plane")


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, not yet listening TCP socket; ``port=0`` picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def run(
    *,
    host: str,
    port: int,
    routes: Routes,
    limits: Limits,
    upgrade_hint: str,
    reuse_port: bool,
    shutdown: trio.Event,
    resolve: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (TLS with ``ssl_context``), report the bound port, serve until ``shutdown``."""
    sock = bind_socket(host, port, reuse_port=reuse_port)
    try:
        sock.listen(limits.listen_backlog)
        listener: trio.abc.Listener[Any] = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        if ssl_context is not None:
            listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    log.info("data plane listening on %s:%d", host, bound)
    task_status.started(bound)
    await serve([listener], routes, limits, upgrade_hint=upgrade_hint, shutdown=shutdown, resolve=resolve)
    log.info("data plane on port %d stopped", bound)
