"""The cluster actor: this replica's heartbeat, and the view of every live replica.

Every ``HEARTBEAT_S`` the replica writes its report (id, address, rules version and
hash, active versions, operations in progress, readiness, loaded versions, stream
position) under ``model_router:replica:<id>`` with a TTL of ``TTL_S``: a replica that
stops heartbeating (killed, stopped, partitioned) drops out when its key expires. The
same loop reads every replica's key, so ``GET /cluster`` and the readiness gate answer
from a view at most one beat old. Redis calls are blocking, in a worker thread; without
Redis the cluster is this replica alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import redis
import trio

from actors.core.membership import live
from actors.redis_bus import make_client

log = logging.getLogger("model_router.cluster")

KEY_PREFIX = "model_router:replica:"
HEARTBEAT_S = 0.5
TTL_S = 3.0

Report = Mapping[str, Any]


@attrs.define
class Cluster:
    """The handle: this replica's identity and the last view of all live replicas."""

    replica_id: str
    describe: Callable[[], dict[str, Any]]
    address: str = ""
    enabled: bool = False
    members: tuple[Report, ...] = ()
    last_heartbeat: float | None = None
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def report(self) -> dict[str, Any]:
        """This replica's heartbeat body, as of now."""
        return {"id": self.replica_id, "address": self.address, **self.describe(), "heartbeat_at": time.time()}

    def view(self) -> list[Report]:
        """Every live replica (this one's entry fresh); this replica alone without Redis."""
        others = [m for m in self.members if m.get("id") != self.replica_id]
        return live([*others, self.report()], time.time(), TTL_S)

    def note(self, members: tuple[Report, ...]) -> None:
        self.members = members
        self.last_heartbeat = time.time()
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[Cluster], bool]) -> None:
        while not predicate(self):
            await self._changed.wait()


def default_id(port: int, worker_index: int = 0) -> str:
    """``hostname:port`` (plus ``/w<index>`` for one of ``--workers N``): stable across restarts.

    With port 0 (a free port picked at bind time) the process id stands in for the port.
    """
    where = str(port) if port else f"pid{os.getpid()}"
    return f"{socket.gethostname()}:{where}" + (f"/w{worker_index}" if worker_index else "")


def beat(client: redis.Redis, report: dict[str, Any]) -> tuple[Report, ...]:
    """Blocking: write this replica's report with its TTL, then read every replica's report."""
    client.set(KEY_PREFIX + str(report["id"]), json.dumps(report, separators=(",", ":")), px=int(TTL_S * 1000))
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    members: list[Report] = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:
            continue
        try:
            members.append(json.loads(raw))
        except ValueError:
            continue
    return tuple(members)


def leave(client: redis.Redis, replica_id: str) -> None:
    client.delete(KEY_PREFIX + replica_id)


async def run(cluster: Cluster, url: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
              ) -> None:
    """Heartbeat and refresh the view until cancelled; leave the cluster on the way out."""
    client = make_client(url)
    cluster.enabled = True
    failing = False
    started = False
    try:
        while True:
            try:
                members = await trio.to_thread.run_sync(beat, client, cluster.report(), abandon_on_cancel=True)
                cluster.note(members)
                if failing:
                    log.info("cluster heartbeat restored (%d replicas)", len(members))
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("cluster heartbeat failed (%s); this replica will drop out of /cluster", exc)
                failing = True
            if not started:
                started = True
                log.info("replica %s joined the cluster at %s", cluster.replica_id, cluster.address)
                task_status.started()
            await trio.sleep(HEARTBEAT_S)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(redis.RedisError):
            await trio.to_thread.run_sync(leave, client, cluster.replica_id, abandon_on_cancel=True)
        client.close()
