"""The rollout leader actor: one replica steps each gradual or canary switch; the others follow.

For every switch operation in progress, replicas compete for a Redis lease
(``SET NX PX``) whose value carries a fencing token (a per-operation counter, larger on
every acquisition). The holder steps the rollout; each step is recorded by a Lua script
that checks the lease is still this holder's before it stores the operation under
``model_router:rollout:<id>`` and appends a :class:`RecordStep` to the command stream, so
a deposed leader can never record a step. Followers apply recorded steps from the
stream (ignoring an older fence) and try the lease every ``FOLLOW_CHECK_S``: if the
leader dies its lease expires after ``LEASE_TTL_S`` and another replica takes it,
adopts the recorded operation and continues from the last recorded step.

The leader judges health on all replicas' windows together (each heartbeat carries the
replica's window for candidate versions) and holds the first step until the target is
loaded and warm on every live replica (the readiness gate), failing the switch with the
replicas' reasons after ``gate_timeout_s``. This actor renews the leases held. Without
Redis, :class:`Rollouts` is local: this replica always leads, as a single process did.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import attrs
import redis
import trio

from actors.cluster import Cluster
from actors.control_bus import STREAM, STREAM_MAXLEN, ControlBus
from actors.core.command_log import entry_fields
from actors.core.commands import RecordStep
from actors.core.health_stats import HealthSnapshot
from actors.core.membership import not_ready_for
from actors.core.rollout import accepts_step, snapshot_from
from actors.core.switch_policy import Operation
from actors.redis_bus import make_client

log = logging.getLogger("model_router.rollouts")

LEASE_TTL_S = 3.0
RENEW_S = 0.75
FOLLOW_CHECK_S = 1.0
GATE_CHECK_S = 0.2
RECORD_TTL_S = 7 * 86400
LEASE_PREFIX = "model_router:lease:"
FENCE_PREFIX = "model_router:fence:"
RECORD_PREFIX = "model_router:rollout:"

# KEYS: lease, fence counter. ARGV: replica id, ttl ms, lowest acceptable fence - 1.
# Renews this replica's lease, or takes a free one with a new, larger fencing token.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local id, fence = string.match(holder, '^(.*)|(%d+)$')
  if id == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(fence)
  end
  return false
end
local f = redis.call('INCR', KEYS[2])
if f <= tonumber(ARGV[3]) then
  f = tonumber(ARGV[3]) + 1
  redis.call('SET', KEYS[2], f)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. f, 'PX', ARGV[2])
return f
"""

# KEYS: lease. ARGV: holder token, ttl ms. Extends the lease only while this holder has it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lease, record, stream. ARGV: holder token, operation JSON, record ttl s, maxlen, fields...
# The fenced write: nothing is recorded unless the caller still holds the lease.
_RECORD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _gate_timeout() -> float:
    return float(os.environ.get("MODEL_ROUTER_READINESS_TIMEOUT_S", "30"))


@attrs.define
class Rollouts:
    """Who leads which rollout; the transition manager asks before every step."""

    cluster: Cluster | None = None
    bus: ControlBus | None = None
    client: redis.Redis | None = None
    gate_timeout_s: float = attrs.field(factory=_gate_timeout)
    held: dict[str, int] = attrs.field(factory=dict)
    fences: dict[str, int] = attrs.field(factory=dict)
    gates: dict[str, dict[str, str]] = attrs.field(factory=dict)

    @property
    def shared(self) -> bool:
        return self.client is not None

    def alone(self) -> bool:
        """No other replica was live at the last heartbeat.

        Then a Redis outage need not stop a rollout: nobody else could lead it, so this
        replica steps it on its own (fence 0, unrecorded) and the state file keeps it. With
        peers, a rollout waits for Redis rather than risk two leaders.
        """
        return self.cluster is None or all(m.get("id") == self.cluster.replica_id for m in self.cluster.members)

    def _token(self, operation_id: str) -> str:
        assert self.cluster is not None
        return f"{self.cluster.replica_id}|{self.held[operation_id]}"

    async def lead(self, operation_id: str) -> int | None:
        """This replica's fencing token if it leads the rollout (taking a free lease), else None."""
        if self.client is None or self.cluster is None:
            return 0
        keys = (LEASE_PREFIX + operation_id, FENCE_PREFIX + operation_id)
        args = (self.cluster.replica_id, int(LEASE_TTL_S * 1000), self.fences.get(operation_id, 0))
        try:
            fence = await trio.to_thread.run_sync(
                lambda: self.client.eval(_ACQUIRE, 2, *keys, *args), abandon_on_cancel=True)  # type: ignore[union-attr]
        except redis.RedisError as exc:
            self.held.pop(operation_id, None)
            if self.alone():
                log.info("rollout %s: Redis unavailable (%s); no other replica, stepping it here", operation_id, exc)
                return 0
            log.debug("lease for %s unavailable: %s", operation_id, exc)
            return None
        if fence is None:
            if self.held.pop(operation_id, None) is not None:
                log.warning("lost the lease of rollout %s", operation_id)
            return None
        fence = int(fence)
        if operation_id not in self.held:
            log.info("leading rollout %s (fence %d)", operation_id, fence)
        self.held[operation_id] = fence
        self.fences[operation_id] = max(self.fences.get(operation_id, 0), fence)
        return fence

    async def recorded(self, operation_id: str) -> Operation | None:
        """The last step recorded by any leader (None without Redis or without a record)."""
        if self.client is None:
            return None
        try:
            raw = await trio.to_thread.run_sync(self.client.get, RECORD_PREFIX + operation_id,
                                                abandon_on_cancel=True)
            return None if raw is None else Operation.from_dict(json.loads(raw))
        except (redis.RedisError, ValueError, KeyError) as exc:
            log.warning("cannot read the recorded step of %s: %s", operation_id, exc)
            return None

    async def record(self, op: Operation, fence: int) -> bool:
        """Record a step under the lease (fenced); False when the lease is lost or Redis is down."""
        if self.client is None or self.bus is None:
            return True
        if fence == 0 and op.id not in self.held and self.alone():
            return True  # stepped alone while Redis is down (see ``alone``)
        if self.held.get(op.id) != fence:
            return False
        command_id = uuid.uuid4().hex
        data = op.to_dict()
        fields = entry_fields(RecordStep(op.id, data, fence), command_id=command_id, origin=self.bus.origin)
        flat = [item for pair in fields.items() for item in pair]
        keys = (LEASE_PREFIX + op.id, RECORD_PREFIX + op.id, STREAM)
        args = (self._token(op.id), json.dumps(data, separators=(",", ":")), RECORD_TTL_S, STREAM_MAXLEN, *flat)
        self.bus.note(self.bus.cursor.recorded(command_id))  # our own step: never applied twice here
        try:
            entry = await trio.to_thread.run_sync(
                lambda: self.client.eval(_RECORD, 3, *keys, *args), abandon_on_cancel=True)  # type: ignore[union-attr]
        except redis.RedisError as exc:
            log.warning("rollout %s: step not recorded (%s); retrying", op.id, exc)
            return False
        if entry is None:
            log.warning("rollout %s: lease lost before the step was recorded", op.id)
            self.held.pop(op.id, None)
            return False
        return True

    async def release(self, operation_id: str) -> None:
        fence = self.held.get(operation_id)
        self.gates.pop(operation_id, None)
        if self.client is None or fence is None:
            return
        token = self._token(operation_id)
        self.held.pop(operation_id, None)
        try:
            await trio.to_thread.run_sync(
                lambda: self.client.eval(_RELEASE, 1, LEASE_PREFIX + operation_id, token),  # type: ignore[union-attr]
                abandon_on_cancel=True)
        except redis.RedisError as exc:
            log.debug("lease of %s not released (%s): it expires", operation_id, exc)

    def accept(self, operation_id: str, fence: int) -> bool:
        """A recorded step from ``fence``: apply it unless a newer leader was seen (fencing)."""
        if not accepts_step(self.fences.get(operation_id, 0), fence):
            return False
        self.fences[operation_id] = fence
        return True

    def waiting(self, model: str, version: str) -> dict[str, str]:
        """Live replicas that cannot serve ``model@version`` yet, and why (the readiness gate)."""
        if self.client is None or self.cluster is None:
            return {}
        return not_ready_for(self.cluster.view(), model, version)

    def peer_health(self, model: str, version: str) -> list[HealthSnapshot]:
        """The other live replicas' windows for ``model@version`` (from their heartbeats)."""
        if self.cluster is None or self.client is None:
            return []
        key = f"{model}@{version}"
        return [snapshot_from(report["health"][key]) for report in self.cluster.view()
                if report.get("id") != self.cluster.replica_id and key in report.get("health", {})]

    def describe(self) -> dict[str, Any]:
        return {"leading": dict(self.held), "gates": {k: dict(v) for k, v in self.gates.items()}}


def _renew(client: redis.Redis, leases: list[tuple[str, str]]) -> list[bool]:
    pipe = client.pipeline(transaction=False)
    for key, token in leases:
        pipe.eval(_RENEW, 1, key, token, int(LEASE_TTL_S * 1000))
    return [bool(int(r)) for r in pipe.execute()]


async def run(rollouts: Rollouts, url: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
              ) -> None:
    """Connect, then renew the leases this replica holds until cancelled."""
    rollouts.client = make_client(url)
    task_status.started()
    try:
        while True:
            await trio.sleep(RENEW_S)
            held = [(op_id, rollouts._token(op_id)) for op_id in list(rollouts.held)]
            if not held:
                continue
            try:
                kept = await trio.to_thread.run_sync(
                    _renew, rollouts.client, [(LEASE_PREFIX + op_id, token) for op_id, token in held],
                    abandon_on_cancel=True)
            except redis.RedisError as exc:
                log.warning("lease renewal failed (%s)", exc)
                continue
            for (op_id, _), ok in zip(held, kept, strict=True):
                if not ok and rollouts.held.pop(op_id, None) is not None:
                    log.warning("lost the lease of rollout %s", op_id)
    finally:
        rollouts.client.close()
