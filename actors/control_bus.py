"""The control bus actor: keeps worker processes in step through Redis.

With several worker processes (``--workers N``) each runs its own actors. An operator
command reaches one of them (the kernel spreads connections over ``SO_REUSEPORT``), so
that worker publishes it on channel ``model_router.control`` and every other worker
applies it too: config and model reloads, switch operations (with the same operation
id, so the sticky assignment — a pure function of id and key — matches everywhere),
abort, promote, rollback, registration, and automatic rollbacks after a breach.

Messages carry the sender's ``origin`` (a random id per process) and are ignored by the
process that sent them. Subscribing runs in a worker thread (redis-py's blocking
pub/sub), reconnecting with backoff, and reports ready only once Redis has confirmed the
subscription; publishing goes through the Redis bus, which never blocks the caller.
Pub/sub does not replay: a worker that is disconnected from Redis when a command is
published misses it (its log shows the outage); restart that worker to converge.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import redis
import trio

from actors.core.commands import Command, from_wire, mirrored, settled, to_wire
from actors.core.errors import RouterError
from actors.redis_bus import RedisMessage, RedisOutbox

log = logging.getLogger("model_router.control")

CHANNEL = "model_router.control"
POLL_S = 0.5
SUBSCRIBE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 5.0

# Runs a command in this process (routes it to the actor that owns it) and returns its result.
Executor = Callable[[Command], Awaitable[Any]]
# Told of every submitted command: (command, result, error or None, caller as the web layer gave it).
AuditHook = Callable[[Command, Any, "BaseException | None", Any], None]


@attrs.define
class ControlBus:
    """The one entry point for operator commands: run here, then mirror to the other workers.

    ``submit`` is what the HTTP layer calls, so no command can be applied without being
    mirrored; ``enabled`` only with Redis and more than one worker.
    """

    outbox: RedisOutbox
    execute: Executor
    enabled: bool = False
    origin: str = attrs.field(factory=lambda: os.urandom(8).hex())
    #: The audit trail's hook: every submitted command, its outcome and who asked (``caller``).
    audit: AuditHook | None = None

    async def submit(self, command: Command, caller: Any = None) -> Any:
        """Run ``command`` here; once it succeeded, publish it (with its operation id) to the others.

        ``caller`` (who asked, from the web layer) is passed to the audit hook only: being the
        single entry point for operator commands makes this the one place to audit them.
        """
        try:
            result = await self.execute(command)
        except Exception as exc:
            if self.audit is not None:
                self.audit(command, None, exc, caller)
            raise
        if self.audit is not None:
            self.audit(command, result, None, caller)
        self.publish(settled(command, result))
        return result

    def automatic(self, command: Command) -> None:
        """A command this worker already carried out on its own (an automatic rollback): audited, mirrored."""
        if self.audit is not None:
            self.audit(command, None, None, None)
        self.publish(command)

    def publish(self, command: Command) -> None:
        if self.enabled:
            payload = {"origin": self.origin, **to_wire(command)}
            sent = self.outbox.offer(RedisMessage("publish", CHANNEL, payload))
            log.debug("published %s from %s (queued: %s)", payload["kind"], self.origin, sent)


@attrs.define
class _Subscription:
    """The client and its pub/sub, owned together.

    The client must outlive the pub/sub: when a ``Redis`` client is garbage-collected it
    disconnects its connection pool, including the pub/sub connection; redis-py then
    reconnects and re-subscribes silently, and commands published meanwhile are lost.
    """

    client: redis.Redis
    pubsub: redis.client.PubSub

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


def _subscribe(url: str) -> _Subscription:
    """Subscribe and wait for Redis to confirm it: from then on no published command is missed."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=POLL_S + 5,
                                  health_check_interval=30)
    subscription = _Subscription(client, client.pubsub())
    subscription.pubsub.subscribe(CHANNEL)
    confirmation = subscription.pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
    if confirmation is None or confirmation.get("type") != "subscribe":
        subscription.close()
        raise redis.ConnectionError(f"no subscribe confirmation for {CHANNEL} within {SUBSCRIBE_TIMEOUT_S} s")
    return subscription


async def _dispatch(bus: ControlBus, raw: bytes) -> None:
    try:
        message = json.loads(raw)
        origin = message["origin"]
        command = mirrored(from_wire(message))
    except (ValueError, KeyError, TypeError) as exc:  # UnknownCommand is a ValueError
        log.warning("ignoring a malformed control message: %s", exc)
        return
    log.debug("received %s from %s", message["kind"], origin)
    if origin == bus.origin:
        return
    try:
        await bus.execute(command)
    except RouterError as exc:  # refused here (e.g. already done): the state says why
        log.info("control command %s from %s refused here: %s", message["kind"], origin, exc)
    except Exception:  # supervision: one bad command must not stop the bus
        log.exception("control command %s from %s failed here", message["kind"], origin)


async def run(
    bus: ControlBus,
    url: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Subscribe, then apply other workers' commands in arrival order until cancelled."""
    backoff = 0.1
    subscription: _Subscription | None = None
    started = False
    try:
        while True:
            try:
                if subscription is None:
                    subscription = await trio.to_thread.run_sync(_subscribe, url, abandon_on_cancel=True)
                    log.info("control bus subscribed to %s", CHANNEL)
                    backoff = 0.1
                if not started:
                    started = True
                    task_status.started()
                message = await trio.to_thread.run_sync(
                    lambda p=subscription.pubsub: p.get_message(timeout=POLL_S), abandon_on_cancel=True)
            except redis.RedisError as exc:
                if not started:
                    started = True
                    task_status.started()
                log.warning("control bus: redis unavailable (%s); retrying in %.1f s", exc, backoff)
                if subscription is not None:
                    subscription.close()
                subscription = None
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if message is not None and message.get("type") == "message":
                await _dispatch(bus, message["data"])
    finally:
        if subscription is not None:
            subscription.close()
