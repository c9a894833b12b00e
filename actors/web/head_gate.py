"""The main port's first request head, read cheaply before Hypercorn sees the connection.

Hypercorn parses every received chunk with h11 in its connection task. Against a slow-loris
client (a request head sent a byte at a time, never finished) that costs ~110 µs of the
event loop per byte; 500 such connections at ten bytes a second took 55 % of a core, and
the other clients' p99 rose eightfold. Hypercorn also has no header timeout: an unfinished
first head counts as idle, so it lived for the keep-alive timeout.

So each plain-TCP connection of the main port starts here: its bytes are gathered (no
parsing, a search for the blank line that ends a head) until the first head is complete,
then the stream goes to Hypercorn with those bytes given back (``PlainSocketStream.unread``),
and Hypercorn reads them as if it had received them itself. A head that trickles is read in
larger and larger pieces (``actors/core/trickle.py``), one that is not complete within
``timeout_s`` (plus a spread of up to 25 %) is answered 408 and closed, and one longer than h11 would accept is answered
431. Only the first head of a connection passes here; TLS connections go to Hypercorn
directly (the TLS handshake comes first, and Hypercorn does it).
"""

from __future__ import annotations

import logging
import random

import trio

from actors.core.trickle import spread_timeout, trickle_delay
from actors.web.http1 import encode_response, error_response, linger_close
from actors.web.plain_stream import PlainSocketStream

log = logging.getLogger("model_router.http")

#: From the accept to the end of the first request head (the data plane's ``header_timeout_s`` default).
HEAD_TIMEOUT_S = 20.0
_ENDS = (b"\r\n\r\n", b"\n\n")  # h11 accepts bare LF line endings too
_SEND_BOUND_S = 1.0


def head_complete(buffer: bytes | bytearray, searched: int) -> bool:
    """Does ``buffer`` hold a whole head? Only bytes from ``searched`` (less 3, for a split end) are scanned."""
    start = max(0, searched - 3)
    return any(buffer.find(end, start) >= 0 for end in _ENDS)


async def read_first_head(stream: PlainSocketStream, *, timeout_s: float = HEAD_TIMEOUT_S,
                          max_bytes: int = 16 * 1024) -> bool:
    """Gather the first request head and give it back to ``stream``; False if the connection is done.

    False means the client left, sent nothing within ``timeout_s`` (closed without a word, as
    an idle connection), or was answered 408 (head unfinished in time) or 431 (head over
    ``max_bytes``); the caller closes the stream.
    """
    buffer = bytearray()
    incomplete = 0
    with trio.move_on_after(spread_timeout(timeout_s, random.random())):
        while True:
            searched = len(buffer)
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            if not data:
                return False
            buffer += data
            if head_complete(buffer, searched):
                stream.unread(bytes(buffer))
                return True
            if len(buffer) > max_bytes:
                await _refuse(stream, 431, "headers_too_large", f"request head over {max_bytes} bytes",
                              {"limit": max_bytes})
                return False
            incomplete += 1
            delay = trickle_delay(incomplete, random.random())
            if delay:
                await trio.sleep(delay)
    if buffer:
        log.info("main port: request head unfinished after %.0f s (%d bytes); answered 408", timeout_s, len(buffer))
        await _refuse(stream, 408, "request_timeout", "request head not received in time",
                      {"timeout_s": timeout_s})
    return False


async def _refuse(stream: PlainSocketStream, status: int, code: str, message: str, details: dict[str, object]) -> None:
    """Best effort: the answer, then a lingering close (so unread input does not reset it away)."""
    with trio.move_on_after(_SEND_BOUND_S):
        try:
            await stream.send_all(encode_response(error_response(status, code, message, details), close=True))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
    await linger_close(stream)
