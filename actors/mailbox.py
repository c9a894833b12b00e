"""Request and reply between tasks and actors, and the supervision rule every actor follows.

An actor owns a receive channel of :class:`Envelope`. A caller that needs an answer uses
:func:`ask`: it sends the message with a one-slot reply channel and waits for the
:class:`outcome.Outcome` (a value, or the exception to raise in the caller). A caller
that needs none uses :func:`tell`.

The supervision rule lives in :func:`handle`: a failure while handling one message
fails that message only. A domain error (``actors/core/errors.py``) goes back to the
caller as it is; any other exception is a bug, so it is logged with its traceback and
answered as :class:`InternalError`, and the actor goes on with the next message.
Cancellation is never caught: the service ends only on a signal or a start-up failure.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio

from actors.core.errors import InternalError, RouterError

M = TypeVar("M")

log = logging.getLogger("model_router.mailbox")


@attrs.frozen(eq=False)
class Envelope(Generic[M]):
    """A message and where its answer goes (None: the sender does not wait)."""

    message: M
    reply: trio.MemorySendChannel[outcome.Outcome[Any]] | None = None

    def answer(self, result: outcome.Outcome[Any]) -> None:
        """Deliver the answer; a caller that gave up (timeout, client gone) is not an error."""
        if self.reply is None:
            if isinstance(result, outcome.Error):
                log.warning("%s failed with no one waiting: %s", type(self.message).__name__, result.error)
            return
        # An outcome unwraps once: each envelope gets its own (coalesced waiters share a result).
        fresh = outcome.Value(result.value) if isinstance(result, outcome.Value) else outcome.Error(result.error)
        try:
            self.reply.send_nowait(fresh)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            log.debug("the sender of %s left before its answer", type(self.message).__name__)


Mailbox = trio.MemorySendChannel[Envelope[Any]]


async def ask(mailbox: Mailbox, message: Any) -> Any:
    """Send ``message`` and wait for its answer: the value, or the error raised here."""
    reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome[Any]](1)
    async with reply_recv:
        await mailbox.send(Envelope(message, reply_send))
        result = await reply_recv.receive()
    return result.unwrap()


def tell(mailbox: Mailbox, message: Any) -> bool:
    """Send without waiting for an answer or for room; False when the mailbox is full."""
    try:
        mailbox.send_nowait(Envelope(message))
    except trio.WouldBlock:
        return False
    return True


def failure(actor: str, message: object, exc: Exception) -> outcome.Error:
    """The supervision rule for one failed message: domain errors pass, bugs are logged and hidden."""
    if isinstance(exc, RouterError):
        return outcome.Error(exc)
    log.error("%s: handling %s failed; the actor goes on", actor, type(message).__name__, exc_info=exc)
    return outcome.Error(InternalError.from_exception(exc))


async def handle(actor: str, envelope: Envelope[M], handler: Callable[[M], Awaitable[Any]]) -> None:
    """Run ``handler`` on one message under the supervision rule and answer its sender."""
    try:
        result: outcome.Outcome[Any] = outcome.Value(await handler(envelope.message))
    except Exception as exc:
        result = failure(actor, envelope.message, exc)
    envelope.answer(result)
