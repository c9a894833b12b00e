"""The data plane at the socket level: random bytes, random header lines, random chunk framing.

Each example opens a clean connection first and sends the garbage on a second one; while
the bad connection is still open, the clean one must get its /health answer (one bad
client does not disturb another). Then the bad connection is read until the server
closes it: every answer on it is a 4xx (or a 2xx when the garbage happened to be a
request), never a 5xx, within the timeout.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.client import REQUEST_TIMEOUT_S, read_head, receive_all
from tests.fuzz.conftest import Live, fuzz_in_thread

header_names = st.one_of(st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "Expect", "Host",
                                          "Content-Type", "Upgrade"]),
                         st.text(max_size=20).map(lambda t: t.encode("utf-8", "replace").decode("latin-1")))
header_values = st.one_of(st.sampled_from(["-1", "0", "1", "99999999999999999999", "chunked", "gzip, chunked",
                                           "close", "keep-alive", "100-continue", "websocket", "1, 2", " 5 "]),
                          st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
header_lines = st.lists(st.one_of(st.tuples(header_names, header_values).map(lambda kv: f"{kv[0]}: {kv[1]}"),
                                  st.binary(max_size=60).map(lambda b: b.decode("latin-1"))), max_size=6)
request_lines = st.one_of(
    st.sampled_from(["POST /predict HTTP/1.1", "POST /predict/batch HTTP/1.1", "GET /health HTTP/1.1",
                     "GET /health HTTP/1.0", "POST /predict HTTP/2.0", "GET / HTTP/1.1", "BREW /predict HTTP/1.1",
                     "POST /predict/../health HTTP/1.1", "GET /%00 HTTP/1.1", "GET " + "/x" * 20000 + " HTTP/1.1",
                     "POST  /predict  HTTP/1.1", "POST /predict", ""]),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
)


def chunk(data: bytes, size: int | str, end: bytes) -> bytes:
    size_text = format(size, "x") if isinstance(size, int) else size
    return size_text.encode("latin-1") + b"\r\n" + data + end


chunks = st.lists(st.builds(chunk, st.binary(max_size=40),
                            st.one_of(st.integers(0, 64), st.sampled_from(["-1", "zz", "ffffffffffffffffff", "",
                                                                           "5;ext=1", " 5"])),
                            st.sampled_from([b"\r\n", b"", b"\n", b"xx"])), max_size=5)
chunked_requests = st.builds(
    lambda line, extra, body, terminate: (
        f"{line}\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + "".join(f"{h}\r\n" for h in extra) + "\r\n"
    ).encode("latin-1") + b"".join(body) + (b"0\r\n\r\n" if terminate else b""),
    st.sampled_from(["POST /predict HTTP/1.1", "POST /predict/batch HTTP/1.1"]), header_lines, chunks, st.booleans())
headed_requests = st.builds(
    lambda line, lines, body: ("\r\n".join([line, *lines]) + "\r\n\r\n").encode("latin-1") + body,
    request_lines, header_lines, st.binary(max_size=100))
garbage = st.one_of(st.binary(min_size=1, max_size=512), headed_requests, chunked_requests)


def statuses(data: bytes) -> list[int]:
    """The status of every answer in what the server sent before closing."""
    found = []
    while data:
        parsed = read_head(data)
        assert parsed is not None, f"a partial answer: {data[:200]!r}"
        status, headers, rest = parsed
        found.append(status)
        data = rest[int(headers.get("content-length", "0")):]
    return found


def health_on(sock: socket.socket) -> int:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(REQUEST_TIMEOUT_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk_ = sock.recv(65536)
        assert chunk_, "the clean connection was closed"
        data += chunk_
    parsed = read_head(data)
    assert parsed is not None
    return parsed[0]


# The engine's body timeout (actors/web/http1.py Limits.body_timeout_s, 30 s, not settable from the
# config): a request whose body never comes is answered 408 only then. The short pass therefore
# always half-closes (the server sees EOF at once); the long pass also leaves requests hanging.
BODY_TIMEOUT_S = 30.0
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def raw_case(live: Live) -> Callable[[], None]:
    @given(wire=garbage, half_close=st.booleans() if LONG else st.just(True))
    def case(wire: bytes, half_close: bool) -> None:
        with socket.create_connection(("127.0.0.1", live.data_port)) as clean, \
                socket.create_connection(("127.0.0.1", live.data_port)) as bad:
            try:
                bad.sendall(wire)
                if half_close:
                    bad.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused mid-send: closing is an allowed answer
            # The other connection is served while the bad one is still open (used at once: an idle
            # connection is closed by the header timeout, which is no harm done).
            started = time.monotonic()
            assert health_on(clean) == 200
            # Without a half-close an incomplete request waits for the header (2 s) or body timeout: 408.
            answers = statuses(receive_all(bad, started + REQUEST_TIMEOUT_S + (0 if half_close else BODY_TIMEOUT_S)))
            assert all(status < 500 for status in answers), answers
        live.healthy()

    return case


async def test_data_plane_survives_raw_garbage(live: Live) -> None:
    await fuzz_in_thread([("data plane raw bytes", raw_case(live))])
