"""Accepting connections on a busy event loop: the whole backlog at once, and retry when out of descriptors.

``trio.SocketListener.accept`` passes through the scheduler once per connection. On a busy
server one pass runs every connection's pending request (16 batches of 256 items: ~64 ms
here), so the 16th of 16 clients that connected together waited ~1 s just to be accepted
(the whole of a p99 of 540 ms on ``/predict/batch``). Both ports' accept loops (the data
plane's in ``actors/web/http1.py``, the main port's in ``actors/web/hypercorn_worker.py``)
therefore follow each accept with the connections already waiting (``Backlog.waiting``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import trio

from actors.web.plain_stream import PlainSocketStream

log = logging.getLogger("model_router.http")

#: Connections taken from the backlog per wake-up of an accept loop, beyond the first.
ACCEPT_BATCH = 64
#: ``accept`` failures that mean "out of descriptors or memory": wait and retry, as trio does.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class Backlog:
    """Connections already queued on a plain TCP listener, taken without waiting.

    Reads through a duplicate of the listening socket's descriptor: the same open file, so
    the same queue, and non-blocking like the original (Trio set it so). Closing it (the
    caller's job, see :func:`backlog_of`) must come with the listener's own close, or the
    socket stays open behind it.
    """

    def __init__(self, listener: trio.SocketListener) -> None:
        self.raw = socket.socket(fileno=os.dup(listener.socket.fileno()))

    def accept_now(self) -> PlainSocketStream | None:
        """A connection from the backlog as a plain stream, or None when the backlog is empty."""
        try:
            conn, _ = self.raw.accept()
        except BlockingIOError:
            return None
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as trio.SocketStream sets it
        return PlainSocketStream(conn)

    def waiting(self, most: int) -> Iterator[PlainSocketStream]:
        """Up to ``most`` queued connections; stops early at an empty backlog or when out of
        descriptors (the next ``accept`` reports that)."""
        for _ in range(most):
            try:
                stream = self.accept_now()
            except OSError:
                return
            if stream is None:
                return
            yield stream

    def close(self) -> None:
        self.raw.close()


class _NoBacklog:
    """For listeners with no socket queue to read directly (TLS): nothing is ever waiting."""

    def waiting(self, most: int) -> Iterator[PlainSocketStream]:
        return iter(())


@contextlib.contextmanager
def backlog_of(listener: trio.abc.Listener[Any]) -> Iterator[Backlog | _NoBacklog]:
    """The listener's backlog for as long as its accept loop runs (closed when the loop ends)."""
    if type(listener) is not trio.SocketListener:
        yield _NoBacklog()
        return
    backlog = Backlog(listener)
    try:
        yield backlog
    finally:
        backlog.close()


async def accept_retrying(listener: trio.abc.Listener[Any], where: str) -> trio.abc.Stream | None:
    """One accepted connection, or None after the process ran out of descriptors (or memory):
    that is logged and waited out for 100 ms, as ``trio.serve_listeners`` does; other errors raise."""
    try:
        return await listener.accept()
    except OSError as exc:
        if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
            raise
        log.error("%s: accept failed (%s); retrying in 100 ms", where, errno.errorcode.get(exc.errno, exc.errno))
        await trio.sleep(0.1)
        return None
