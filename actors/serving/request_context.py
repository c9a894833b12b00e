"""Which request (and which prediction) the current task is working on, for log lines.

Both ports set ``REQUEST_ID`` for the duration of a request (from ``X-Request-ID``, or a
generated one) and the JSON log formatter reads it, so every line a request causes carries
its id without passing it through every call (Hypercorn's access line included: it is
written from the request's own send). A line about one prediction passes its correlation
id as ``extra={"correlation_id": ...}``: a request may carry many predictions, so that id
belongs to the line, not to the context.
"""

from __future__ import annotations

import itertools
import os
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128

# Random per process (processes and restarts never collide), then a counter: no syscall per request.
_PREFIX = "r" + os.urandom(5).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):012x}"


def accepted_request_id(given: bytes | str | None) -> str:
    """The client's id when it is safe to log and echo (printable ASCII, bounded), else a new one.

    An id with control characters or of unbounded length would let a client forge log lines
    or bloat every line of its request; such an id is replaced, not rejected.
    """
    if given:
        text = given.decode("latin-1") if isinstance(given, bytes) else given
        if len(text) <= MAX_REQUEST_ID_LENGTH and text.isascii() and text.isprintable():
            return text
    return new_request_id()
