"""A lean HTTP/1.1 server on Trio streams for the data plane, parsing with httptools.

Why not Hypercorn: the inference routes answer in a few microseconds of model time, so the
per-request cost of a general ASGI stack (h11 state machine, ASGI message dicts, one task
per request) dominates. Here one task serves one connection for its whole life: it
receives, feeds httptools, runs the handler of every fully read request in order and
sends all their answers with one ``send_all``. Status lines are precomputed, the Date
header is formatted once per second, and nothing is spawned per request.

Protocol behaviour (each case is covered by a raw-socket test in tests/web/test_http1.py):

- keep-alive by default on HTTP/1.1; ``Connection: close`` honoured; HTTP/1.0 closes unless
  it sent ``Connection: keep-alive`` (then the answer says ``connection: keep-alive``);
- pipelining: every request read from one receive is answered in order, the answers sent
  together (flushed every ``max_pipelined`` answers so the output buffer stays bounded); no
  further bytes are read while answers are pending, so the read-ahead is one receive;
- request bodies by Content-Length or chunked; ``Expect: 100-continue`` gets
  ``100 Continue`` only when the server is about to read that body, and a Content-Length
  over the limit gets 413 without it (and the connection closes, body unread);
- HEAD is answered by the GET handler of the path with the body left out (RFC 9110 requires
  HEAD wherever GET is served; load balancers use it for health checks);
- errors: malformed -> 400 and close; request target over ``max_request_line`` or head
  over ``max_header_bytes`` -> 431 and close; unknown path -> 404; wrong method -> 405 with
  ``Allow``; an Upgrade request (WebSocket, h2c, CONNECT) -> 400 ``upgrade_not_supported``
  naming where upgrades are served, then close; a head or body that does not arrive within
  its timeout -> 408 and close; handler exceptions -> 500, connection kept (the request was
  fully read, so the framing is intact). Every error body is
  ``{"error": {"code", "message", "details"}}``.
- limits: at ``max_connections`` the accept loops stop calling ``accept`` (new clients wait
  in the kernel backlog) until a connection ends; idle keep-alive connections close after
  ``keep_alive_timeout_s`` without an answer.
- graceful stop: when ``shutdown`` is set the listeners close, idle connections close at
  once, requests already read are answered (the last answer says ``connection: close``),
  and whatever still runs at ``drain_deadline_s`` is cancelled; then :func:`serve` returns.

Timeouts are a float deadline per connection that one reaper task checks every tick
(min(1 s, shortest timeout / 4)); moving a Trio cancel-scope deadline on every request cost
more than the rest of the loop. A timeout fires at most two ticks late, never early.

httptools does not bound the head: it buffers an unterminated header line for ever. The
connection therefore counts head bytes itself, both from the parser callbacks and from
whole receives that end inside a head, and answers 431 past ``max_header_bytes``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple

import attrs
import httptools
import orjson
import trio

from actors.core.errors import RouterError
from actors.core.trickle import spread_timeout, trickle_delay
from actors.web.accepting import ACCEPT_BATCH, accept_retrying, backlog_of
from actors.web.errors import error_payload
from actors.web.plain_stream import PlainSocketStream

log = logging.getLogger("model_router.data_plane")

Headers = tuple[tuple[bytes, bytes], ...]


class Request(NamedTuple):
    """One fully read request. ``path`` is the raw (still percent-encoded) path; header names are lower case.

    Requests and responses are named tuples rather than frozen attrs classes: as immutable,
    and one of each is built per request, where a frozen attrs instance costs three times as
    much to build (every field goes through ``object.__setattr__``).
    """

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    keep_alive: bool
    client: str | None
    http_version: str = "1.1"

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response(NamedTuple):
    """What a handler answers. ``headers`` must not repeat content-type, content-length or connection."""

    status: int
    body: bytes
    headers: Headers = ()
    content_type: bytes = b"application/json"


Handler = Callable[[Request], Awaitable[Response]]
Routes = Mapping[str, Mapping[str, Handler]]
"""Exact path -> method -> handler."""
Resolver = Callable[[str], "Mapping[str, Handler] | None"]
"""Fallback for paths not in the table (e.g. ``/v2/models/{name}/infer``): the path's method table, or None.

Return the same mapping object for every path of one pattern: its compiled form (``Allow``
value, HEAD alias) is then built once and reused. Handlers read parameters from
``Request.path``.
"""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class Limits:
    """Bounds a production proxy would pick; every one is enforced per connection or per server.

    ``max_request_line`` bounds the request target (URL) bytes; ``max_header_bytes`` bounds the
    whole head including the request line. ``max_pipelined`` is the most answers buffered
    before a ``send_all``.
    """

    max_body_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    max_header_bytes: int = attrs.field(default=32 * 1024, validator=_positive)
    max_request_line: int = attrs.field(default=8 * 1024, validator=_positive)
    header_timeout_s: float = attrs.field(default=20.0, validator=_positive)
    body_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    keep_alive_timeout_s: float = attrs.field(default=75.0, validator=_positive)
    send_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    max_connections: int = attrs.field(default=1024, validator=_positive)
    max_pipelined: int = attrs.field(default=64, validator=_positive)
    drain_deadline_s: float = attrs.field(default=5.0, validator=_positive)
    receive_size: int = attrs.field(default=64 * 1024, validator=_positive)
    listen_backlog: int = attrs.field(default=1024, validator=_positive)


# --------------------------------------------------------------- encoding ----

_STATUS_LINES: dict[int, bytes] = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii") for status in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PLAIN = b"%scontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s"
_BODYLESS = frozenset({100, 101, 102, 103, 204, 304})
_METHODS = {method.encode("ascii"): method for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_KEEP_ALIVE_END = b"\r\n"
_HTTP10_KEEP_ALIVE_END = b"connection: keep-alive\r\n\r\n"
_CLOSE_END = b"connection: close\r\n\r\n"
_RESOLVED_CACHE = 256
_LINGER_S = 1.0
_LINGER_BYTES = 1024 * 1024
#: After a read-after-a-pass that found nothing, this many requests wait for readiness as usual.
READ_AFTER_PASS_BACKOFF = 8

_date_second = -1
_date_line = b""


def _date_header() -> bytes:
    """``date: ...\\r\\n``, formatted at most once per second (RFC 9110 asks origin servers for Date)."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        _date_second = now
    return _date_line


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Status {status}\r\n".encode("ascii")


def encode_response(response: Response, *, head_only: bool = False, close: bool = False, http10: bool = False) -> bytes:
    """The wire bytes of one answer; ``close`` adds ``connection: close``."""
    return _encode(response, head_only, close, http10)


def _encode(response: Response, head_only: bool, close: bool, http10: bool) -> bytes:
    body = response.body
    if response.status in _BODYLESS:
        return _encode_bodyless(response, close)
    if not response.headers and not head_only and not close and not http10:
        # The hot path (keep-alive JSON answer without extra headers): one formatting operation.
        return _PLAIN % (_status_line(response.status), response.content_type, len(body), _date_header(), body)
    parts = [
        _status_line(response.status),
        b"content-type: ",
        response.content_type,
        b"\r\ncontent-length: %d\r\n" % len(body),
        _date_header(),
    ]
    for name, value in response.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(_CLOSE_END if close else _HTTP10_KEEP_ALIVE_END if http10 else _KEEP_ALIVE_END)
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def _encode_bodyless(response: Response, close: bool) -> bytes:
    """1xx, 204 and 304 carry neither a body nor Content-Length (RFC 9110 8.6, 15.3.5)."""
    parts = [_status_line(response.status), _date_header()]
    for name, value in response.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(_CLOSE_END if close else _KEEP_ALIVE_END)
    return b"".join(parts)


def error_response(status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                   headers: Headers = ()) -> Response:
    """The service-wide error shape ``{"error": {"code", "message", "details"}}``."""
    body = orjson.dumps({"error": {"code": code, "message": message, "details": dict(details or {})}})
    return Response(status, body, headers)


# ----------------------------------------------------------------- routes ----


@attrs.frozen
class _Route:
    handlers: Mapping[str, Handler]
    allow: bytes


def _compile_route(methods: Mapping[str, Handler]) -> _Route:
    """Adds HEAD where GET is served and precomputes the ``Allow`` value for 405 answers."""
    handlers = {method.upper(): handler for method, handler in methods.items()}
    if "GET" in handlers and "HEAD" not in handlers:
        handlers["HEAD"] = handlers["GET"]
    return _Route(handlers, ", ".join(sorted(handlers)).encode("ascii"))


# ------------------------------------------------------------- connection ----


class _Reject(Exception):
    """Raised inside a parser callback: the request cannot be read further; answer and close."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Connection:
    """One client connection: httptools callbacks fill ``ready``; :meth:`run` answers them."""

    def __init__(self, server: _Server, stream: trio.abc.Stream) -> None:
        self.server = server
        self.limits = server.limits
        self.max_head = server.limits.max_header_bytes
        self.stream = stream
        # Non-waiting reads, where the transport offers them (plain TCP; not TLS).
        self.read_now: Callable[[int], bytes | None] | None = getattr(stream, "receive_nowait", None)
        self.parser = httptools.HttpRequestParser(self)
        self.client = _peer(stream)
        self.timer = trio.CancelScope()
        self.deadline = math.inf
        self.ready: list[Request] = []
        self.fatal: Response | None = None
        self.linger = False
        self.idle = False
        self.sending = False
        self.served = 0
        self.in_message = False
        self.head_done = False
        self.heads_seen = 0
        self.head_accum = 0
        self.head_reads = 0  # reads that left the current head unfinished (see actors/core/trickle.py)
        self.read_skips = 0  # requests left to wait for as usual before reading after a pass again
        self.head_deadline = math.inf
        self.body_deadline = math.inf
        self._reset_message()

    def _reset_message(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.content_length: int | None = None
        self.expect: bytes | None = None
        self.has_host = False
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.expect_continue = False
        self.continue_sent = False
        self.version = "1.1"

    # httptools callbacks ---------------------------------------------------

    def _begin_message(self) -> None:
        """Called from the first ``on_url`` of a message (one callback fewer than ``on_message_begin``)."""
        self.in_message = True
        self.head_done = False
        self.head_deadline = math.inf
        self.body_deadline = math.inf
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        if not self.in_message:
            self._begin_message()
        self.url += url
        self.head_size += len(url)
        if len(self.url) > self.limits.max_request_line:
            raise _Reject(self.server.too_large_line)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self.head_size = self.head_size + len(name) + len(value) + 4
        if size > self.max_head:
            raise _Reject(self.server.too_large_head)
        name = name.lower()
        self.headers.append((name, value))
        if name == b"content-length":
            if value.isdigit():
                self.content_length = int(value)
        elif name == b"expect":
            self.expect = value.lower()
        elif name == b"host":
            self.has_host = True

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.heads_seen += 1
        self.head_accum = 0
        self.head_reads = 0
        self.head_deadline = math.inf
        parser = self.parser
        if parser.should_upgrade():
            raise _Reject(self.server.upgrade_refused)
        if self.content_length is not None and self.content_length > self.limits.max_body_bytes:
            raise _Reject(self.server.too_large_body)
        self.version = version = parser.get_http_version()
        http11 = version == "1.1"
        if http11 and not self.has_host:
            raise _Reject(error_response(400, "bad_request", "HTTP/1.1 request without a Host header"))
        if self.expect is not None:
            if self.expect != b"100-continue":
                raise _Reject(error_response(417, "expectation_failed", "only 'Expect: 100-continue' is supported",
                                             {"expect": self.expect.decode("latin-1")}))
            self.expect_continue = http11

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body_bytes:
            raise _Reject(self.server.too_large_body)
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.expect_continue = False
        parts = self.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        url = self.url
        if not url.startswith(b"/"):
            url = _origin_form(url)
        mark = url.find(b"?")
        if mark < 0:
            path, query = url.decode("latin-1"), ""
        else:
            path, query = url[:mark].decode("latin-1"), url[mark + 1:].decode("latin-1")
        parser = self.parser
        method = parser.get_method()
        self.ready.append(Request(
            _METHODS.get(method) or method.decode("ascii"), path, query, tuple(self.headers), body,
            parser.should_keep_alive(), self.client, self.version,
        ))

    # feeding -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; complete requests land in ``ready``, a request that cannot be read in ``fatal``."""
        at_head = not (self.in_message and self.head_done)
        heads_before = self.heads_seen
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__
            if isinstance(reject, _Reject):
                self.fatal = reject.response
            else:
                log.error("data plane: parser callback failed", exc_info=reject or exc)
                self.fatal = error_response(500, "internal_error", "the server failed to parse the request")
            self.linger = True
            return
        except httptools.HttpParserUpgrade:
            self.fatal = self.server.upgrade_refused
            self.linger = True
            return
        except httptools.HttpParserError as exc:
            self.fatal = error_response(400, "bad_request", f"malformed HTTP request: {exc}")
            self.linger = True
            return
        if self.in_message:
            if not self.head_done:
                if at_head and self.heads_seen == heads_before:
                    # The whole receive belongs to this unfinished head (possibly one long header line
                    # httptools is buffering without calling back): count it.
                    self.head_accum += len(data)
                    self.head_reads += 1
                    if self.head_accum > self.limits.max_header_bytes:
                        self.fatal = self.server.too_large_head
                        self.linger = True
                        return
                if self.head_deadline == math.inf:
                    self.head_deadline = trio.current_time() + spread_timeout(self.limits.header_timeout_s,
                                                                              random.random())
            elif self.body_deadline == math.inf:
                self.body_deadline = trio.current_time() + self.limits.body_timeout_s

    # the connection loop -------------------------------------------------------

    async def run(self) -> None:
        limits = self.limits
        stream = self.stream
        receive_size = limits.receive_size
        while True:
            if self.in_message:
                self.deadline = self.body_deadline if self.head_done else self.head_deadline
            else:
                if self.server.draining:
                    return
                self.idle = True
                # The reaper's clock lags by up to one tick: the pad keeps the timeout from firing early.
                self.deadline = self.server.now + self.server.tick + (
                    limits.keep_alive_timeout_s if self.served else limits.header_timeout_s)
            try:
                data = None
                if self.served and not self.in_message and self.read_now is not None:
                    data = await self._read_after_a_pass(self.read_now, receive_size)
                if data is None:
                    data = await stream.receive_some(receive_size)
                if not data:
                    return
                self.feed(data)
                if self.read_now is not None and not self._read_rest_of_body(self.read_now, receive_size):
                    return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            finally:
                self.idle = False
            pending = self.ready or self.fatal is not None or (self.expect_continue and not self.continue_sent)
            if pending and not await self.answer():
                return
            if self.head_reads and self.in_message and not self.head_done:
                delay = trickle_delay(self.head_reads, random.random())
                if delay:  # a trickling head: let the kernel gather its bytes (the header deadline still runs)
                    self.deadline = self.head_deadline
                    await trio.sleep(delay)

    async def _read_after_a_pass(self, read_now: Callable[[int], bytes | None], size: int) -> bytes | None:
        """The next request, if it arrived while the other connections had their turn; else None.

        A keep-alive client sends its next request once it has the answer. Under load, one
        pass of the scheduler (every other ready connection's request) usually takes longer
        than that round trip, so after yielding once the request is already buffered, and
        reading it directly saves arming epoll for this socket (an ``epoll_ctl`` per request:
        ~7 % of the loop at 16 connections) and the wake-up through ``epoll_wait``. When the
        request is not there yet (a lone client, a slow one), the read costs a failed
        ``recv``: after a miss the next ``READ_AFTER_PASS_BACKOFF`` requests wait as usual.
        """
        if self.read_skips:
            self.read_skips -= 1
            return None
        await trio.lowlevel.checkpoint()
        data = read_now(size)
        if data is None:
            self.read_skips = READ_AFTER_PASS_BACKOFF
        return data

    def _read_rest_of_body(self, read_now: Callable[[int], bytes | None], size: int) -> bool:
        """Feed what is already buffered of a body in progress; False if the client closed meanwhile.

        A body sent in several segments is usually all buffered by the time its first segment
        is parsed; reading it now saves a trip through the scheduler per segment (during which
        every other connection's request runs). Bounded by the body limit: past it ``fatal`` is set.
        """
        while self.in_message and self.head_done and self.fatal is None:
            data = read_now(size)
            if data is None:
                break
            if not data:
                return False
            self.feed(data)
        return True

    async def answer(self) -> bool:
        """Answer every fully read request in order, then a fatal error or ``100 Continue``; False = close."""
        self.deadline = math.inf
        server = self.server
        ready = self.ready
        out: list[bytes] = []
        close = False
        last = len(ready) - 1
        for index, request in enumerate(ready):
            response = await server.dispatch(request)
            self.served += 1
            close = not request.keep_alive or (index == last and self.fatal is None and server.draining)
            out.append(_encode(response, request.method == "HEAD", close, request.http_version == "1.0"))
            if close:
                break
            if len(out) >= self.limits.max_pipelined:
                await self._send(out)
                out = []
        ready.clear()
        if not close:
            if self.fatal is not None:
                out.append(encode_response(self.fatal, close=True))
                close = True
            elif self.expect_continue and not self.continue_sent and not server.draining:
                out.append(_CONTINUE)
                self.continue_sent = True
        if out:
            await self._send(out)
        return not close

    async def _send(self, out: list[bytes]) -> None:
        self.deadline = self.server.now + self.server.tick + self.limits.send_timeout_s
        self.sending = True
        try:
            await self.stream.send_all(out[0] if len(out) == 1 else b"".join(out))
        finally:
            self.sending = False
            self.deadline = math.inf

    async def timed_out(self) -> None:
        """The head or body did not arrive in time: 408 (best effort), then close."""
        if self.sending or not self.in_message:
            return
        response = encode_response(error_response(
            408, "request_timeout",
            "request head not received in time" if not self.head_done else "request body not received in time",
            {"timeout_s": self.limits.header_timeout_s if not self.head_done else self.limits.body_timeout_s}),
            close=True)
        with trio.move_on_after(self.limits.send_timeout_s):
            await self.stream.send_all(response)
        self.linger = True


def _origin_form(url: bytes) -> bytes:
    """Absolute-form targets (``http://host/p?q``) reduced to ``/p?q``; ``*`` and garbage kept as they are."""
    if url == b"*":
        return url
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError as exc:
        raise _Reject(error_response(400, "bad_request", "malformed request target")) from exc
    path = parsed.path or b"/"
    return path + b"?" + parsed.query if parsed.query else path


def _peer(stream: trio.abc.Stream) -> str | None:
    sock = getattr(stream, "transport_stream", stream).socket  # under TLS: the stream below the SSLStream
    try:
        address = sock.getpeername()
    except OSError:
        return None
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address) or None


async def linger_close(stream: trio.abc.Stream) -> None:
    """Half-close, then discard what the client still sends for a moment, so the kernel does not
    answer unread input with a reset that destroys the error answer in flight."""
    with trio.move_on_after(_LINGER_S):
        # The client hanging up meanwhile is the expected end of a linger, not a fault.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if isinstance(stream, trio.abc.HalfCloseableStream):  # TLS streams cannot half-close
                await stream.send_eof()
            discarded = 0
            while discarded < _LINGER_BYTES:
                data = await stream.receive_some(65536)
                if not data:
                    break
                discarded += len(data)


# ----------------------------------------------------------------- server ----


class _Server:
    """Routes, limits and the set of live connections shared by the accept loops."""

    def __init__(self, routes: Routes, resolve: Resolver | None, limits: Limits, upgrade_hint: str) -> None:
        self.routes = {path: _compile_route(methods) for path, methods in routes.items()}
        self.resolve = resolve
        self.resolved: dict[int, tuple[Mapping[str, Handler], _Route]] = {}
        self.limits = limits
        self.draining = False
        self.active: set[_Connection] = set()
        shortest = min(limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_timeout_s,
                       limits.send_timeout_s)
        self.tick = min(1.0, shortest / 4)
        self.now = trio.current_time()
        self.upgrade_refused = error_response(400, "upgrade_not_supported", upgrade_hint, {})
        self.too_large_body = error_response(
            413, "payload_too_large", f"request body larger than {limits.max_body_bytes} bytes",
            {"limit_bytes": limits.max_body_bytes})
        self.too_large_head = error_response(
            431, "headers_too_large", f"request head larger than {limits.max_header_bytes} bytes",
            {"limit_bytes": limits.max_header_bytes})
        self.too_large_line = error_response(
            431, "headers_too_large", f"request target longer than {limits.max_request_line} bytes",
            {"limit_bytes": limits.max_request_line})

    def route(self, path: str) -> _Route | None:
        """The exact route, else the resolver's; a resolved method table is compiled once per object."""
        route = self.routes.get(path)
        if route is None and self.resolve is not None:
            methods = self.resolve(path)
            if methods is not None:
                cached = self.resolved.get(id(methods))
                if cached is not None and cached[0] is methods:
                    return cached[1]
                route = _compile_route(methods)
                if len(self.resolved) >= _RESOLVED_CACHE:
                    self.resolved.clear()
                self.resolved[id(methods)] = (methods, route)
        return route

    async def dispatch(self, request: Request) -> Response:
        route = self.routes.get(request.path) or self.route(request.path)
        if route is None:
            return error_response(404, "not_found", f"no route for {request.path}", {"path": request.path})
        handler = route.handlers.get(request.method)
        if handler is None:
            return error_response(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                {"method": request.method, "allowed": route.allow.decode("ascii").split(", ")},
                ((b"allow", route.allow),))
        try:
            return await handler(request)
        except RouterError as exc:
            status, body = error_payload(exc)
            return Response(status, body)
        except Exception:
            log.exception("data plane: handler for %s %s failed", request.method, request.path)
            return error_response(500, "internal_error", "the handler failed; see the server log")

    async def handle(self, stream: trio.abc.Stream, slots: trio.Semaphore) -> None:
        """Serve one connection to its end; the connection slot is released whatever happens."""
        try:
            if type(stream) is trio.SocketStream:
                stream = PlainSocketStream.adopt(stream)  # see actors/web/plain_stream.py: why
            connection = _Connection(self, stream)
            self.active.add(connection)
            try:
                with connection.timer:
                    await connection.run()
                if connection.timer.cancelled_caught:
                    await connection.timed_out()
                if connection.linger:
                    await linger_close(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("data plane: connection from %s went away", connection.client)
            except Exception:
                log.exception("data plane: connection from %s failed", connection.client)
            finally:
                self.active.discard(connection)
                await trio.aclose_forcefully(stream)
        finally:
            slots.release()

    async def reap(self) -> None:
        """Cancel every connection past its deadline, checked each ``tick``.

        Connections keep their deadline in a plain float instead of a Trio cancel-scope
        deadline: moving a scope deadline three times per request (idle wait, handler, send)
        cost more than the rest of the connection loop. A timeout therefore fires between its
        configured value and two ticks later, never earlier. ``now`` is the clock as of the last
        tick, cheap to read on every request.

        """
        while True:
            await trio.sleep(self.tick)
            self.now = now = trio.current_time()
            for connection in self.active:
                if connection.deadline <= now:
                    connection.timer.cancel()

    def begin_drain(self) -> None:
        """Idle connections close now; the others close after answering what they have read."""
        self.draining = True
        for connection in list(self.active):
            if connection.idle:
                connection.timer.cancel()


async def _accept_loop(listener: trio.abc.Listener[Any], server: _Server, slots: trio.Semaphore,
                       connections: trio.Nursery) -> None:
    """Accept only while a connection slot is free: back-pressure lives in the kernel backlog.

    After each accept, the connections already waiting are taken too (``accepting.py``), as
    many as free slots allow; each handler releases its slot.
    """
    with backlog_of(listener) as backlog:
        while True:
            await slots.acquire()
            try:
                stream = await accept_retrying(listener, "data plane")
            except BaseException:
                slots.release()
                raise
            if stream is None:
                slots.release()
                continue
            connections.start_soon(server.handle, stream, slots)
            for waiting in backlog.waiting(min(ACCEPT_BATCH, slots.value)):
                slots.acquire_nowait()
                connections.start_soon(server.handle, waiting, slots)


async def serve(
    listeners: Sequence[trio.abc.Listener[Any]],
    routes: Routes,
    limits: Limits | None = None,
    *,
    upgrade_hint: str,
    shutdown: trio.Event,
    resolve: Resolver | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` on ``listeners`` until ``shutdown`` is set, then drain and return.

    ``upgrade_hint`` is the message of the 400 answered to Upgrade requests (say where the
    WebSocket endpoints are). ``resolve`` is consulted for paths missing from ``routes``.
    """
    limits = limits or Limits()
    server = _Server(routes, resolve, limits, upgrade_hint)
    slots = trio.Semaphore(limits.max_connections)
    try:
        async with trio.open_nursery() as timers:
            timers.start_soon(server.reap)
            with trio.CancelScope() as drain:
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(_accept_loop, listener, server, slots, connections)
                        task_status.started()
                        await shutdown.wait()
                        acceptors.cancel_scope.cancel()
                    for listener in listeners:
                        await listener.aclose()
                    drain.deadline = trio.current_time() + limits.drain_deadline_s
                    log.info("data plane: draining %d connections", len(server.active))
                    server.begin_drain()
            timers.cancel_scope.cancel()
        if drain.cancelled_caught:
            log.warning("data plane: drain deadline (%.1f s) reached; remaining connections cut",
                        limits.drain_deadline_s)
    finally:
        for listener in listeners:
            getattr(listener, "transport_listener", listener).socket.close()  # under TLS: the one below
