"""A raw HTTP/1.1 client over a plain socket: sends the request target and body bytes exactly as given.

httpx and h11 normalise or refuse what the fuzzer wants to send (``..`` segments, ``%00``,
odd content types), so requests are written by hand, one per connection
(``Connection: close``), and read until the answer is whole, under a hard timeout.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

import attrs

REQUEST_TIMEOUT_S = 10.0  # generous: the machine is shared; a hang is far longer than this


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.body)


class Hang(AssertionError):
    """The server neither answered nor closed within the per-request timeout."""


def read_head(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers, rest) once a whole response head is in ``data``."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, rest


def dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2:]
    return b"".join(out)


def complete(data: bytes, head_only: bool = False) -> bool:
    """Whether ``data`` holds one whole answer (head and Content-Length body, or a chunked body's end)."""
    parsed = read_head(data)
    if parsed is None:
        return False
    status, headers, rest = parsed
    if head_only or status in (204, 304) or status < 200:
        return True
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return rest.endswith(b"0\r\n\r\n")
    return "content-length" in headers and len(rest) >= int(headers["content-length"])


def receive_all(sock: socket.socket, deadline: float, *, until_close: bool = True, head_only: bool = False) -> bytes:
    """What the server sends until it closes (or, unless ``until_close``, until one answer is whole)."""
    chunks: list[bytes] = []
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError as exc:
            raise Hang(f"no answer or close within the timeout; got {b''.join(chunks)[:300]!r}") from exc
        except ConnectionResetError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if not until_close and complete(b"".join(chunks), head_only):
            return b"".join(chunks)


def request(port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = REQUEST_TIMEOUT_S) -> Answer:
    """One request on a fresh connection; the whole answer, or :class:`Hang`."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if body or method in ("POST", "PUT", "PATCH", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    started = time.monotonic()
    deadline = started + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer (413) and close before reading the whole body.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(wire)
        data = receive_all(sock, deadline, until_close=False, head_only=method == "HEAD")
    parsed = read_head(data)
    if parsed is None:
        raise AssertionError(f"{method} {target[:200]}: connection closed without an answer ({data[:200]!r})")
    status, answer_headers, rest = parsed
    if method == "HEAD":
        rest = b""
    elif answer_headers.get("transfer-encoding", "").lower() == "chunked":
        rest = dechunk(rest)
    elif "content-length" in answer_headers:
        rest = rest[: int(answer_headers["content-length"])]
    return Answer(status, answer_headers, rest, time.monotonic() - started)
