"""Request/reply and the supervision rule every actor follows."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from actors import mailbox
from actors.core.errors import Conflict, InternalError
from actors.mailbox import Envelope, ask, tell


async def echo_actor(inbox: trio.MemoryReceiveChannel[Envelope[Any]],
                     *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async def answer(message: Any) -> Any:
        if message == "conflict":
            raise Conflict("busy", "already doing it")
        if message == "bug":
            raise ZeroDivisionError("a bug")
        return f"got {message}"

    async with inbox:
        task_status.started()
        async for envelope in inbox:
            await mailbox.handle("echo", envelope, answer)


async def test_ask_returns_the_answer_and_raises_domain_errors_as_they_are() -> None:
    send, recv = trio.open_memory_channel[Envelope[Any]](4)
    async with trio.open_nursery() as nursery:
        await nursery.start(echo_actor, recv)
        assert await ask(send, "x") == "got x"
        with pytest.raises(Conflict) as refused:
            await ask(send, "conflict")
        assert refused.value.code == "busy"
        nursery.cancel_scope.cancel()


async def test_a_bug_fails_that_message_only_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    send, recv = trio.open_memory_channel[Envelope[Any]](4)
    async with trio.open_nursery() as nursery:
        await nursery.start(echo_actor, recv)
        with caplog.at_level(logging.ERROR, logger="model_router.mailbox"), pytest.raises(InternalError) as bug:
            await ask(send, "bug")
        assert bug.value.details == {"type": "ZeroDivisionError"}
        assert "a bug" not in bug.value.message  # no internals to the caller
        assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
        assert await ask(send, "after") == "got after"  # the actor went on
        nursery.cancel_scope.cancel()


async def test_a_caller_that_left_does_not_break_the_actor() -> None:
    send, recv = trio.open_memory_channel[Envelope[Any]](4)
    reply_send, reply_recv = trio.open_memory_channel[Any](1)
    reply_recv.close()
    async with trio.open_nursery() as nursery:
        await nursery.start(echo_actor, recv)
        await send.send(Envelope("gone", reply_send))
        assert tell(send, "no answer wanted")
        assert await ask(send, "still here") == "got still here"
        nursery.cancel_scope.cancel()


def test_tell_reports_a_full_mailbox() -> None:
    send, _recv = trio.open_memory_channel[Envelope[Any]](1)
    assert tell(send, 1)
    assert not tell(send, 2)
