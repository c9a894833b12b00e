"""A plain-TCP Trio stream for the data plane: one syscall per receive and per send, no extra yields.

Why not ``trio.SocketStream``: its ``receive_some`` first tries ``recv`` and only then waits,
so on a keep-alive connection (where the next request has never arrived yet when the
previous answer went out) every request pays a failed ``recv`` and a ``BlockingIOError``
raised and caught in Python; and every ``send_all`` ends with a cancel-shielded checkpoint,
one more trip through the scheduler per answer. Both are right for a general-purpose
stream; for an inference port that answers in tens of microseconds they are a third of the
server's own cost.

This stream owns a non-blocking stdlib socket and uses Trio's I/O primitives directly:
``receive_some`` waits for readability first (``trio.lowlevel.wait_readable``, the one
checkpoint per request) and then reads; ``send_all`` writes at once and waits for
writability only when the kernel buffer is full. ``send_all`` therefore does not yield
when the answer fits the socket buffer: the connection loop's next ``receive_some`` is its
checkpoint, so a connection can never run twice without yielding. TLS connections keep
``trio.SSLStream`` (the TLS record layer needs it).
"""

from __future__ import annotations

import errno
import socket

import trio

_BROKEN_ERRNOS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ETIMEDOUT})


class PlainSocketStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket as a Trio stream; the socket is owned (closed by :meth:`aclose`)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self._fd = sock.fileno()
        self._recv = sock.recv
        self._send = sock.send
        self._closed = False
        self._unread = b""

    @classmethod
    def adopt(cls, stream: trio.SocketStream) -> PlainSocketStream:
        """Take over the socket of an accepted ``trio.SocketStream`` (which is left detached and inert)."""
        return cls(socket.socket(fileno=stream.socket.detach()))

    def unread(self, data: bytes) -> None:
        """Give bytes back: the next receive returns them (before anything from the socket).

        The main port reads each connection's first request head itself
        (``actors/web/head_gate.py``), then hands the stream, head included, to Hypercorn.
        """
        self._unread = data + self._unread

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait until readable, then read up to ``max_bytes`` (default 64 KiB); b"" at end of stream."""
        size = 65536 if max_bytes is None else max_bytes
        if self._unread:
            await trio.lowlevel.checkpoint()
            data, self._unread = self._unread[:size], self._unread[size:]
            return data
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            await trio.lowlevel.wait_readable(self._fd)
            if self._closed:  # another task (Hypercorn's closer) closed it while this one was waking
                raise trio.ClosedResourceError("the stream was closed")
            try:
                return self._recv(size)
            except BlockingIOError:
                continue  # a spurious wake-up: wait again
            except OSError as exc:
                _raise_broken_if_gone(exc)
                raise

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What is already buffered (b"" at end of stream), or None when nothing is: no waiting.

        The connection loop uses it for the rest of a request body that arrived in several
        segments: reading it now saves a trip through the scheduler per segment, during which
        every other connection's request runs first.
        """
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._unread:
            data, self._unread = self._unread[:max_bytes], self._unread[max_bytes:]
            return data
        try:
            return self._recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            _raise_broken_if_gone(exc)
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write everything; waits (a checkpoint) only while the socket buffer is full."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        view = memoryview(data)
        sent = self._send_now(view)
        while sent < len(view):
            await trio.lowlevel.wait_writable(self._fd)
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            sent += self._send_now(view[sent:])

    def _send_now(self, view: memoryview) -> int:
        """The bytes the kernel took without waiting: 0 while its buffer is full."""
        try:
            return self._send(view)
        except BlockingIOError:
            return 0
        except OSError as exc:
            _raise_broken_if_gone(exc)
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd)

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        await trio.lowlevel.checkpoint()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            _raise_broken_if_gone(exc)
            raise

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()


def _raise_broken_if_gone(exc: OSError) -> None:
    """A peer that went away is a broken stream (what the connection loop expects); other errors pass on."""
    if exc.errno in _BROKEN_ERRNOS or isinstance(exc, ConnectionError):
        raise trio.BrokenResourceError(f"socket error: {exc}") from exc
