"""The HTTP/1.1 engine over raw sockets: every protocol case written and read byte by byte.

No HTTP client library sits between the test and the server, so nothing smooths over a
missing header, a merged answer or a connection that should have closed. A tiny reader
below splits answers by Content-Length; timeouts are configured short and every wait is
bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import attrs
import orjson
import pytest
import trio
import trio.testing

from actors.core.errors import InvalidInput
from actors.core.trickle import HEADER_TIMEOUT_SPREAD
from actors.web.accepting import Backlog
from actors.web.http1 import READ_AFTER_PASS_BACKOFF, Handler, Limits, Request, Response, serve
from actors.web.plain_stream import PlainSocketStream

HINT = "WebSocket is served on the main port 8000 (ws://<host>:8000/ws/predict)"
BOUND = 5.0


# ------------------------------------------------------------------ server ----


@attrs.define
class Handlers:
    """The in-test route table; ``gate`` holds /slow until a test opens it."""

    started: trio.Event = attrs.Factory(trio.Event)
    gate: trio.Event = attrs.Factory(trio.Event)

    async def hello(self, request: Request) -> Response:
        return Response(200, b'{"hello":"world"}')

    async def echo(self, request: Request) -> Response:
        return Response(200, orjson.dumps({
            "method": request.method, "path": request.path, "query": request.query,
            "body": request.body.decode(), "client": request.client,
            "agent": (request.header(b"user-agent") or b"").decode(),
        }), headers=((b"x-echo", b"1"),))

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("handler bug")

    async def refuse(self, request: Request) -> Response:
        raise InvalidInput("invalid_features", "feature x missing", {"missing": ["x"]})

    async def empty(self, request: Request) -> Response:
        return Response(204, b"", headers=((b"x-empty", b"yes"),))

    async def slow(self, request: Request) -> Response:
        self.started.set()
        await self.gate.wait()
        return Response(200, b'{"slow":true}')

    def routes(self) -> dict[str, dict[str, Handler]]:
        return {"/hello": {"GET": self.hello}, "/echo": {"POST": self.echo, "PUT": self.echo},
                "/boom": {"GET": self.boom}, "/refuse": {"GET": self.refuse}, "/slow": {"GET": self.slow},
                "/empty": {"DELETE": self.empty}}

    async def infer(self, request: Request) -> Response:
        return Response(200, orjson.dumps({"model": request.path.split("/")[3]}))

    def resolve(self, path: str) -> Mapping[str, Handler] | None:
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "v2", "models"] and parts[4] == "infer":
            return {"POST": self.infer}
        return None


class CountingStream(trio.abc.HalfCloseableStream):
    """A server-side SocketStream that records the size of every ``send_all``."""

    def __init__(self, inner: trio.SocketStream, sends: list[int]) -> None:
        self.inner = inner
        self.socket = inner.socket
        self.sends = sends

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(len(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingListener(trio.abc.Listener[CountingStream]):
    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        self.socket = inner.socket
        self.sends: list[int] = []

    async def accept(self) -> CountingStream:
        return CountingStream(await self.inner.accept(), self.sends)

    async def aclose(self) -> None:
        await self.inner.aclose()


class LoggedPlainStream(PlainSocketStream):
    """The data plane's stream (non-waiting reads included), logging how each read went."""

    reads: list[str]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.reads.append("wait")
        return await super().receive_some(max_bytes)

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        data = super().receive_nowait(max_bytes)
        self.reads.append("now:miss" if data is None else "now:hit")
        return data


class PlainListener(trio.abc.Listener[LoggedPlainStream]):
    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        self.socket = inner.socket
        self.sends: list[int] = []
        self.reads: list[str] = []

    async def accept(self) -> LoggedPlainStream:
        stream = LoggedPlainStream.adopt(await self.inner.accept())
        stream.reads = self.reads
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.frozen
class Server:
    port: int
    shutdown: trio.Event
    handlers: Handlers
    stopped: trio.Event
    sends: list[int]
    reads: list[str] = attrs.Factory(list)


@asynccontextmanager
async def running(limits: Limits | None = None, *, plain: bool = False) -> AsyncIterator[Server]:
    """The engine on a free port; ``plain``: over the data plane's own stream, reads logged."""
    handlers = Handlers()
    shutdown, stopped = trio.Event(), trio.Event()
    wrap = PlainListener if plain else CountingListener
    listeners = [wrap(listener) for listener in await trio.open_tcp_listeners(0, host="127.0.0.1")]
    port = listeners[0].socket.getsockname()[1]

    async def serve_then_mark(task_status: trio.TaskStatus[None]) -> None:
        await serve(listeners, handlers.routes(), limits or Limits(), upgrade_hint=HINT,  # type: ignore[arg-type]
                    shutdown=shutdown, resolve=handlers.resolve, task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_then_mark)
        yield Server(port, shutdown, handlers, stopped, listeners[0].sends, getattr(listeners[0], "reads", []))
        shutdown.set()
        with trio.fail_after(BOUND):
            await stopped.wait()


# ------------------------------------------------------------------ client ----


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    head_bytes: int

    def json(self) -> dict:
        return orjson.loads(self.body)


class Raw:
    """A TCP connection plus a reader that splits answers by Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed; unread {self.buffer!r}")
        self.buffer += data

    async def exactly(self, n: int) -> bytes:
        with trio.fail_after(BOUND):
            while len(self.buffer) < n:
                await self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def answer(self, *, head_only: bool = False, bound: float = BOUND) -> Answer:
        with trio.fail_after(bound):
            while b"\r\n\r\n" not in self.buffer:
                await self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        head_bytes = len(head) + 4
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            assert name == name.lower(), "header names are sent lower case"
            assert name not in headers, f"duplicate header {name}"
            headers[name] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        body = await self.exactly(length)
        return Answer(int(status), headers, body, head_bytes)

    async def closed(self) -> bool:
        """True once the server closes (EOF or reset) with nothing more sent."""
        with trio.fail_after(BOUND):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return self.buffer == b""
                if not data:
                    return self.buffer == b""
                self.buffer += data

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def connect(server: Server) -> AsyncIterator[Raw]:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    raw = Raw(stream)
    try:
        yield raw
    finally:
        await raw.aclose()


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *extra]) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = "\r\n".join([f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *extra])
    return head.encode() + b"\r\n\r\n" + body


def assert_error(answer: Answer, status: int, code: str) -> dict:
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


# --------------------------------------------------------------- keep-alive ----


async def test_keep_alive_is_the_default_on_http11() -> None:
    async with running() as server, connect(server) as raw:
        for _ in range(3):
            await raw.send(get("/hello"))
            answer = await raw.answer()
            assert answer.status == 200
            assert answer.body == b'{"hello":"world"}'
            assert "connection" not in answer.headers
            assert answer.headers["date"].endswith(" GMT")
            assert answer.headers["content-type"] == "application/json"


async def test_connection_close_is_honoured() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/hello", "Connection: close"))
        answer = await raw.answer()
        assert answer.status == 200
        assert answer.headers["connection"] == "close"
        assert await raw.closed()


async def test_http10_closes_unless_it_asks_for_keep_alive() -> None:
    async with running() as server:
        async with connect(server) as raw:
            await raw.send(b"GET /hello HTTP/1.0\r\n\r\n")
            answer = await raw.answer()
            assert answer.status == 200
            assert answer.headers["connection"] == "close"
            assert await raw.closed()
        async with connect(server) as raw:
            for _ in range(2):
                await raw.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                answer = await raw.answer()
                assert answer.status == 200
                assert answer.headers["connection"] == "keep-alive"


async def test_a_request_that_arrived_during_the_pass_is_read_without_waiting() -> None:
    """The next keep-alive request, already buffered once the answer is out, is read directly."""
    async with running(plain=True) as server, connect(server) as raw:
        await raw.send(get("/slow"))
        with trio.fail_after(BOUND):
            await server.handlers.started.wait()
        await raw.send(get("/hello"))  # arrives while the first is being answered
        server.handlers.gate.set()
        assert (await raw.answer()).body == b'{"slow":true}'
        assert (await raw.answer()).body == b'{"hello":"world"}'
        await trio.testing.wait_all_tasks_blocked()
        assert server.reads[:2] == ["wait", "now:hit"], server.reads


async def test_after_a_read_that_found_nothing_requests_wait_as_usual_for_a_while() -> None:
    """A lone client's next request is never there after one pass: the engine stops trying for a while."""
    async with running(plain=True) as server, connect(server) as raw:
        for _ in range(READ_AFTER_PASS_BACKOFF + 3):
            await raw.send(get("/hello"))
            assert (await raw.answer()).status == 200
            await trio.testing.wait_all_tasks_blocked()  # the server is back waiting before the next one
        after_first = server.reads[1:]
        assert after_first[:2] == ["now:miss", "wait"], server.reads
        # the backoff: that many requests read by waiting, with no non-waiting read among them
        skipped = after_first[2:2 + READ_AFTER_PASS_BACKOFF]
        assert skipped == ["wait"] * READ_AFTER_PASS_BACKOFF, server.reads
        assert after_first[2 + READ_AFTER_PASS_BACKOFF] == "now:miss", server.reads


async def test_pipelined_requests_are_answered_in_order_in_one_send() -> None:
    async with running() as server, connect(server) as raw:
        request = post("/echo", b"first") + get("/hello") + post("/echo?n=3", b"third")
        await raw.send(request)
        first, second, third = [await raw.answer() for _ in range(3)]
        assert first.json()["body"] == "first"
        assert second.body == b'{"hello":"world"}'
        assert third.json()["body"] == "third"
        assert third.json()["query"] == "n=3"
        assert raw.buffer == b""
        total = sum(len(answer.body) + answer.head_bytes for answer in (first, second, third))
        assert server.sends == [total], "one send_all for the three answers"


async def test_a_long_pipeline_is_flushed_every_max_pipelined_answers() -> None:
    async with running(Limits(max_pipelined=4)) as server, connect(server) as raw:
        await raw.send(get("/hello") * 10)
        answers = [await raw.answer() for _ in range(10)]
        assert all(a.status == 200 for a in answers)
        assert len(server.sends) == 3, "answers 1-4, 5-8, 9-10"


async def test_pipelined_answers_stop_after_a_close_request() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/hello") + get("/hello", "Connection: close") + get("/hello"))
        assert (await raw.answer()).status == 200
        second = await raw.answer()
        assert second.headers["connection"] == "close"
        assert await raw.closed()


async def test_idle_keep_alive_connection_closes_after_the_timeout() -> None:
    async with running(Limits(keep_alive_timeout_s=0.3)) as server, connect(server) as raw:
        await raw.send(get("/hello"))
        assert (await raw.answer()).status == 200
        started = trio.current_time()
        assert await raw.closed(), "idle close sends nothing"
        assert trio.current_time() - started >= 0.25


# -------------------------------------------------------------------- bodies ----


async def test_chunked_request_body_is_reassembled() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        await raw.send(b"5\r\nhello\r\n")
        await raw.send(b"6\r\n world\r\n0\r\n\r\n")
        answer = await raw.answer()
        assert answer.status == 200
        assert answer.json()["body"] == "hello world"
        assert answer.headers["x-echo"] == "1"


async def test_expect_100_continue_is_sent_before_the_body_is_read() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert await raw.exactly(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        await raw.send(b"hello")
        answer = await raw.answer()
        assert answer.status == 200
        assert answer.json()["body"] == "hello"


async def test_expect_100_continue_with_an_oversized_length_gets_413_without_continue() -> None:
    async with running(Limits(max_body_bytes=100)) as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n")
        answer = await raw.answer()
        error = assert_error(answer, 413, "payload_too_large")
        assert error["details"] == {"limit_bytes": 100}
        assert answer.headers["connection"] == "close"
        assert await raw.closed()


async def test_unknown_expectation_gets_417() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nExpect: teapot\r\n\r\nhi")
        assert_error(await raw.answer(), 417, "expectation_failed")


async def test_oversized_content_length_gets_413_before_the_body_is_sent() -> None:
    async with running(Limits(max_body_bytes=1024)) as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n")
        answer = await raw.answer()
        assert_error(answer, 413, "payload_too_large")
        assert answer.headers["connection"] == "close"
        assert await raw.closed()


async def test_oversized_chunked_body_gets_413() -> None:
    async with running(Limits(max_body_bytes=10)) as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        await raw.send(b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
        assert_error(await raw.answer(), 413, "payload_too_large")
        assert await raw.closed()


async def test_body_exactly_at_the_limit_is_accepted() -> None:
    async with running(Limits(max_body_bytes=10)) as server, connect(server) as raw:
        await raw.send(post("/echo", b"0123456789"))
        assert (await raw.answer()).json()["body"] == "0123456789"


# ------------------------------------------------------------ limits on heads ----


async def test_oversized_request_line_gets_431() -> None:
    async with running(Limits(max_request_line=200)) as server, connect(server) as raw:
        await raw.send(get("/hello?" + "x" * 300))
        error = assert_error(await raw.answer(), 431, "headers_too_large")
        assert error["details"] == {"limit_bytes": 200}
        assert await raw.closed()


async def test_too_many_header_bytes_get_431() -> None:
    async with running(Limits(max_header_bytes=2048)) as server, connect(server) as raw:
        await raw.send(get("/hello", *[f"X-Filler-{i}: {'v' * 60}" for i in range(40)]))
        assert_error(await raw.answer(), 431, "headers_too_large")
        assert await raw.closed()


async def test_an_unterminated_header_line_is_cut_at_the_limit() -> None:
    """httptools would buffer one endless header value for ever; the engine counts raw bytes."""
    async with running(Limits(max_header_bytes=4096)) as server, connect(server) as raw:
        await raw.send(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Endless: ")
        with trio.fail_after(BOUND):
            while b"HTTP/1.1 431" not in raw.buffer:
                with trio.move_on_after(0.05):
                    await raw._fill()
                try:
                    await raw.send(b"a" * 1024)
                except trio.BrokenResourceError:
                    break
        assert_error(await raw.answer(), 431, "headers_too_large")


async def test_headers_just_under_the_limit_are_served() -> None:
    async with running(Limits(max_header_bytes=4096)) as server, connect(server) as raw:
        await raw.send(get("/hello", "X-Filler: " + "v" * 3000))
        assert (await raw.answer()).status == 200


# ------------------------------------------------------------------- errors ----


async def test_malformed_request_gets_400_and_close() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"GET /hello HTTP/1.1\r\nHost test no colon\r\n\r\n")
        error = assert_error(await raw.answer(), 400, "bad_request")
        assert "malformed" in error["message"]
        assert await raw.closed()


async def test_content_length_with_chunked_is_refused_as_smuggling() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert_error(await raw.answer(), 400, "bad_request")
        assert await raw.closed()


async def test_requests_before_a_malformed_one_are_answered_first() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(post("/echo", b"good") + b"NOT HTTP AT ALL\r\n\r\n")
        assert (await raw.answer()).json()["body"] == "good"
        assert_error(await raw.answer(), 400, "bad_request")
        assert await raw.closed()


async def test_http11_without_host_gets_400() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"GET /hello HTTP/1.1\r\n\r\n")
        assert_error(await raw.answer(), 400, "bad_request")
        assert await raw.closed()


async def test_unknown_path_gets_404_and_the_connection_stays() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/nowhere"))
        error = assert_error(await raw.answer(), 404, "not_found")
        assert error["details"] == {"path": "/nowhere"}
        await raw.send(get("/hello"))
        assert (await raw.answer()).status == 200


async def test_wrong_method_gets_405_with_allow() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(post("/hello", b"{}"))
        answer = await raw.answer()
        error = assert_error(answer, 405, "method_not_allowed")
        assert answer.headers["allow"] == "GET, HEAD"
        assert error["details"]["allowed"] == ["GET", "HEAD"]
        await raw.send(get("/echo"))
        assert (await raw.answer()).headers["allow"] == "POST, PUT"


async def test_head_is_answered_by_get_without_a_body() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n" + get("/hello"))
        head = await raw.answer(head_only=True)
        assert head.status == 200
        assert head.headers["content-length"] == str(len(b'{"hello":"world"}'))
        following = await raw.answer()
        assert following.body == b'{"hello":"world"}', "no body bytes were sent for HEAD"


async def test_204_has_neither_body_nor_content_length() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"DELETE /empty HTTP/1.1\r\nHost: test\r\n\r\n" + get("/hello"))
        empty = await raw.answer(head_only=True)
        assert empty.status == 204
        assert "content-length" not in empty.headers and "content-type" not in empty.headers
        assert empty.headers["x-empty"] == "yes"
        assert (await raw.answer()).body == b'{"hello":"world"}'


async def test_upgrade_request_is_refused_with_the_hint_and_closed() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/ws/predict", "Connection: Upgrade", "Upgrade: websocket",
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"))
        answer = await raw.answer()
        error = assert_error(answer, 400, "upgrade_not_supported")
        assert error["message"] == HINT
        assert answer.headers["connection"] == "close"
        assert await raw.closed()


async def test_handler_exception_gets_500_and_the_connection_stays_usable() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/boom"))
        error = assert_error(await raw.answer(), 500, "internal_error")
        assert "handler bug" not in error["message"], "exception text is logged, not sent"
        await raw.send(get("/hello"))
        assert (await raw.answer()).status == 200


async def test_api_error_from_a_handler_keeps_its_status_and_body() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/refuse"))
        error = assert_error(await raw.answer(), 422, "invalid_features")
        assert error["details"] == {"missing": ["x"]}


async def test_resolver_serves_patterned_paths() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(post("/v2/models/tlob_tiny/infer", b"{}"))
        assert (await raw.answer()).json() == {"model": "tlob_tiny"}
        await raw.send(post("/v2/models/other/infer", b"{}"))
        assert (await raw.answer()).json() == {"model": "other"}
        await raw.send(get("/v2/models/other/infer"))
        assert (await raw.answer()).headers["allow"] == "POST"
        await raw.send(post("/v2/models/infer", b"{}"))
        assert_error(await raw.answer(), 404, "not_found")


async def test_absolute_form_target_is_routed_by_its_path() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"POST http://test/echo?a=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nok")
        answer = (await raw.answer()).json()
        assert (answer["path"], answer["query"], answer["body"]) == ("/echo", "a=1", "ok")


async def test_request_carries_client_address_and_lowercased_headers() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(post("/echo", b"", "USER-AGENT: raw-test"))
        answer = (await raw.answer()).json()
        assert answer["agent"] == "raw-test"
        host, port = raw.stream.socket.getsockname()[:2]
        assert answer["client"] == f"{host}:{port}"


# ------------------------------------------------------------------ timeouts ----


async def test_slow_headers_are_cut_with_408_and_do_not_stall_others() -> None:
    async with running(Limits(header_timeout_s=1.0)) as server, connect(server) as slow:
        await slow.send(b"GET /hello HTTP/1.1\r\nHost: te")
        started = trio.current_time()
        async with connect(server) as other:
            for _ in range(5):
                await other.send(get("/hello"))
                assert (await other.answer()).status == 200
        assert trio.current_time() - started < 1.0, "the other client was served while the slow one waited"
        answer = await slow.answer()
        assert_error(answer, 408, "request_timeout")
        assert trio.current_time() - started >= 0.95
        assert await slow.closed()


async def test_slow_body_is_cut_with_408() -> None:
    async with running(Limits(body_timeout_s=0.3)) as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
        assert_error(await raw.answer(), 408, "request_timeout")
        assert await raw.closed()


async def test_connection_that_never_speaks_is_closed_silently() -> None:
    async with running(Limits(header_timeout_s=0.3)) as server, connect(server) as raw:
        assert await raw.closed()


# ----------------------------------------------------------- connection limit ----


async def test_connection_limit_holds_new_clients_in_the_backlog_until_one_ends() -> None:
    async with running(Limits(max_connections=2)) as server, connect(server) as first, connect(server) as second:
        for raw in (first, second):
            await raw.send(get("/hello"))
            assert (await raw.answer()).status == 200
        async with connect(server) as third:
            await third.send(get("/hello"))
            with trio.move_on_after(0.5):
                await third._fill()
            assert third.buffer == b"", "the third connection must not be served while two are open"
            await first.aclose()
            answer = await third.answer()
            assert answer.status == 200
        await second.send(get("/hello"))
        assert (await second.answer()).status == 200, "the server kept serving throughout"


# ------------------------------------------------------------- graceful stop ----


async def test_shutdown_answers_read_requests_closes_idle_and_refuses_new() -> None:
    async with running() as server:
        async with connect(server) as idle, connect(server) as busy:
            await idle.send(get("/hello"))
            assert (await idle.answer()).status == 200
            await busy.send(get("/slow"))
            with trio.fail_after(BOUND):
                await server.handlers.started.wait()
            server.shutdown.set()
            assert await idle.closed(), "idle connections close at once"
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", server.port)
            assert not server.stopped.is_set()
            server.handlers.gate.set()
            answer = await busy.answer()
            assert answer.status == 200
            assert answer.body == b'{"slow":true}'
            assert answer.headers["connection"] == "close"
            assert await busy.closed()
        with trio.fail_after(BOUND):
            await server.stopped.wait()


async def test_shutdown_answers_every_pipelined_request_already_read() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(get("/slow") + get("/hello") + get("/hello"))
        with trio.fail_after(BOUND):
            await server.handlers.started.wait()
        server.shutdown.set()
        await trio.testing.wait_all_tasks_blocked()
        server.handlers.gate.set()
        answers = [await raw.answer() for _ in range(3)]
        assert [a.status for a in answers] == [200, 200, 200]
        assert "connection" not in answers[0].headers
        assert answers[2].headers["connection"] == "close"
        assert await raw.closed()


async def test_shutdown_lets_a_request_in_progress_finish_and_answers_it() -> None:
    async with running() as server, connect(server) as raw:
        await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nab")
        await trio.testing.wait_all_tasks_blocked()
        server.shutdown.set()
        await trio.testing.wait_all_tasks_blocked()
        assert not server.stopped.is_set(), "a connection reading a request is not idle"
        await raw.send(b"cd")
        answer = await raw.answer()
        assert answer.json()["body"] == "abcd"
        assert answer.headers["connection"] == "close"
        assert await raw.closed()
        with trio.fail_after(BOUND):
            await server.stopped.wait()


async def test_drain_deadline_cuts_a_handler_that_never_finishes() -> None:
    async with running(Limits(drain_deadline_s=0.3)) as server, connect(server) as raw:
        await raw.send(get("/slow"))
        with trio.fail_after(BOUND):
            await server.handlers.started.wait()
        server.shutdown.set()
        with trio.fail_after(BOUND):
            await server.stopped.wait()
        assert await raw.closed()


async def test_serve_answers_on_every_listener() -> None:
    handlers = Handlers()
    shutdown = trio.Event()
    listeners = [*await trio.open_tcp_listeners(0, host="127.0.0.1"),
                 *await trio.open_tcp_listeners(0, host="127.0.0.1")]
    ports = [listener.socket.getsockname()[1] for listener in listeners]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, listeners, handlers.routes(), Limits(), upgrade_hint=HINT,
                                    shutdown=shutdown))
        for port in ports:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                raw = Raw(stream)
                await raw.send(get("/hello"))
                assert (await raw.answer()).status == 200
        shutdown.set()
    for port in ports:
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=0)
    with pytest.raises(ValueError, match="header_timeout_s"):
        Limits(header_timeout_s=-1.0)


async def test_serve_many_sequential_connections_returns_every_slot() -> None:
    async with running(Limits(max_connections=3)) as server:
        for _ in range(10):
            async with connect(server) as raw:
                await raw.send(get("/hello", "Connection: close"))
                assert (await raw.answer()).status == 200
                assert await raw.closed()



# ------------------------------------------------------------ trickling heads ----


class _NoPeer:
    """What the engine asks of a socket (the peer's address, a close at shutdown), in memory."""

    def getpeername(self) -> tuple[str, int]:
        raise OSError("in-memory stream")

    def close(self) -> None:
        return None


class CountedMemoryStream(trio.abc.HalfCloseableStream):
    """The server end of an in-memory connection that counts the server's reads."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, reads: list[int]) -> None:
        self.inner = inner
        self.reads = reads
        self.socket = _NoPeer()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.reads.append(len(data))
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class MemoryListener(trio.abc.Listener[CountedMemoryStream]):
    def __init__(self) -> None:
        self.pending_send, self.pending = trio.open_memory_channel[CountedMemoryStream](8)
        self.reads: list[int] = []
        self.socket = _NoPeer()

    async def connect(self) -> Raw:
        client, server = trio.testing.memory_stream_pair()
        await self.pending_send.send(CountedMemoryStream(server, self.reads))
        return Raw(client)  # type: ignore[arg-type]

    async def accept(self) -> CountedMemoryStream:
        return await self.pending.receive()

    async def aclose(self) -> None:
        await self.pending.aclose()


@asynccontextmanager
async def in_memory(limits: Limits) -> AsyncIterator[MemoryListener]:
    listener, shutdown = MemoryListener(), trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, [listener], Handlers().routes(), limits, upgrade_hint=HINT,
                                    shutdown=shutdown))
        yield listener
        shutdown.set()


async def test_a_trickling_head_is_read_in_few_pieces_and_loses_no_byte(
        autojump_clock: trio.testing.MockClock) -> None:
    """A head sent a byte every 100 ms (slow-loris pace) but finished in time is answered, read in
    a few large pieces instead of one wake-up per byte (actors/core/trickle.py)."""
    async with in_memory(Limits(header_timeout_s=20.0)) as listener:
        raw = await listener.connect()
        head = get("/hello", "X-Slow: " + "a" * 100)
        for byte in head:
            await raw.send(bytes([byte]))
            await trio.sleep(0.1)
        answer = await raw.answer()
        assert answer.status == 200 and answer.json() == {"hello": "world"}
        assert sum(listener.reads) == len(head)
        assert len(listener.reads) < 30, f"{len(listener.reads)} reads for {len(head)} bytes"
        started = trio.current_time()
        await raw.send(get("/hello"))  # the next head on the connection is not delayed
        assert (await raw.answer()).status == 200
        assert trio.current_time() - started < 0.01


async def test_a_trickling_head_that_never_ends_is_cut_at_the_header_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory(Limits(header_timeout_s=20.0)) as listener:
        raw = await listener.connect()
        started = trio.current_time()
        await raw.send(b"GET /hello HTTP/1.1\r\nX-Slow: ")
        while trio.current_time() - started < 19.0:  # a byte every 100 ms until just before the timeout
            await trio.sleep(0.1)
            await raw.send(b"a")
        # the timeout is lengthened by up to 25 % (HEADER_TIMEOUT_SPREAD): up to 6 s past the last byte sent
        assert_error(await raw.answer(bound=20.0 * HEADER_TIMEOUT_SPREAD + BOUND), 408, "request_timeout")
        # the timeout, lengthened by up to 25 % (HEADER_TIMEOUT_SPREAD), seen by the reaper within a tick
        assert 20.0 <= trio.current_time() - started < 20.0 * (1 + HEADER_TIMEOUT_SPREAD) + 1.0
        assert len(listener.reads) < 50, f"{len(listener.reads)} reads in 20-26 s (one per byte: 200+)"


# ------------------------------------------------------------ accept backlog ----


async def test_the_backlog_gives_every_waiting_connection_without_waiting() -> None:
    """What the accept loop drains after each accept: all connections queued, then None at once."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    backlog = Backlog(listener)
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
    try:
        # Each connect returned once the kernel had completed its handshake: all five are queued.
        taken = list(backlog.waiting(3))  # at most what was asked
        assert len(taken) == 3
        taken += backlog.waiting(10)  # then what is left, and it stops at the empty backlog
        assert len(taken) == 5
        assert backlog.accept_now() is None
        for client in clients:
            await client.send_all(b"x")
        for stream in taken:
            assert stream is not None
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            with trio.fail_after(BOUND):
                assert await stream.receive_some(10) == b"x"
            await stream.aclose()
    finally:
        backlog.close()
        for client in clients:
            await client.aclose()
        await listener.aclose()
    assert listener.socket.fileno() == -1  # closing the duplicate left the listener's own close to it


async def test_connections_arriving_together_are_all_served() -> None:
    async with running() as server:
        raws = [Raw(await trio.open_tcp_stream("127.0.0.1", server.port)) for _ in range(20)]
        for raw in raws:
            await raw.send(get("/hello"))
        for raw in raws:
            assert (await raw.answer()).status == 200
            await raw.aclose()
