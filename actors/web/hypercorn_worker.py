"""Hypercorn's Trio worker for the main port, with each plain-TCP connection's first head read first.

This is ``hypercorn.trio.run.worker_serve`` (Hypercorn 0.18) with two changes: each accept
also takes the connections already waiting in the backlog (``_accept_loop``), and each
connection's first request head is read here
(``actors/web/head_gate.py``: trickling heads cost little, an unfinished one is cut at a
timeout) before Hypercorn's ``TCPServer`` takes the connection. Hypercorn offers no hook for
that, so the worker is reproduced here, from the same parts, in the same order: the
lifespan runs first, the listeners start, ``task_status.started`` reports the binds, the
shutdown trigger (or a worker-context termination) ends serving, and in-flight
connections get ``config.graceful_timeout`` to finish. pyproject.toml pins the Hypercorn
minor version these parts were read from; tests/web/test_main_port_gate.py fails if they move.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from actors.web.accepting import ACCEPT_BATCH, accept_retrying, backlog_of
from actors.web.head_gate import HEAD_TIMEOUT_S, read_first_head
from actors.web.plain_stream import PlainSocketStream

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class _Gates:
    """Connections still in the head gate: closed at once when the worker terminates.

    Hypercorn closes its idle connections on termination; these are not Hypercorn's yet,
    and without this a client that never finishes its head would hold a graceful shutdown
    for the whole grace period.
    """

    def __init__(self) -> None:
        self.scopes: set[trio.CancelScope] = set()
        self.closing = False

    def close_all(self) -> None:
        self.closing = True
        for scope in self.scopes:
            scope.cancel()


async def _connection(app: AppWrapper, config: Config, context: WorkerContext, state: LifespanState,
                      gates: _Gates, head_timeout_s: float, stream: trio.abc.Stream) -> None:
    """One accepted connection: through the head gate if it is plain TCP, then Hypercorn's."""
    try:
        await _gated(app, config, context, state, gates, head_timeout_s, stream)
    finally:
        await trio.aclose_forcefully(stream)  # as trio.serve_listeners does; a no-op once closed


async def _gated(app: AppWrapper, config: Config, context: WorkerContext, state: LifespanState,
                 gates: _Gates, head_timeout_s: float, stream: trio.abc.Stream) -> None:
    if type(stream) is trio.SocketStream or type(stream) is PlainSocketStream:
        plain = stream if type(stream) is PlainSocketStream else PlainSocketStream.adopt(stream)
        passed = False
        with trio.CancelScope() as scope:
            if gates.closing:
                scope.cancel()
            gates.scopes.add(scope)
            try:
                passed = await read_first_head(plain, timeout_s=head_timeout_s,
                                               max_bytes=config.h11_max_incomplete_size)
            finally:
                gates.scopes.discard(scope)
        if not passed:
            await trio.aclose_forcefully(plain)
            return
        stream = plain
    await TCPServer(app, config, context, ConnectionState(state.copy()), stream)  # type: ignore[arg-type]


async def _accept_loop(listener: trio.abc.Listener[Any], handler: Callable[[trio.abc.Stream], Awaitable[None]],
                       connections: trio.Nursery) -> None:
    """``trio.serve_listeners`` for one listener, with the backlog taken after each accept
    (``actors/web/accepting.py``). The listener is closed when serving ends, as
    ``serve_listeners`` does, so new clients are refused while in-flight requests drain."""
    with backlog_of(listener) as backlog:
        async with listener:
            while True:
                stream = await accept_retrying(listener, "main port")
                if stream is None:
                    continue
                connections.start_soon(handler, stream)
                for waiting in backlog.waiting(ACCEPT_BATCH):
                    connections.start_soon(handler, waiting)


async def serve(
    app: Any,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    head_timeout_s: float = HEAD_TIMEOUT_S,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` as ``hypercorn.trio.serve`` does, with the head gate in front."""
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    gates = _Gates()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                sock.listen(config.backlog)
            listeners: list[trio.abc.Listener[Any]] = []
            binds = []
            ssl_context = config.create_ssl_context()
            for sock in sockets.secure_sockets:
                listeners.append(trio.SSLListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                                                  ssl_context, https_compatible=True))
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            for bind in binds:
                await config.log.info(f"Running on {bind}")

            task_status.started(binds)
            handler = partial(_connection, wrapped, config, context, lifespan_state, gates, head_timeout_s)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    for listener in listeners:
                        nursery.start_soon(_accept_loop, listener, handler, server_nursery)
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors from None
            finally:
                await context.terminated.set()
                gates.close_all()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
