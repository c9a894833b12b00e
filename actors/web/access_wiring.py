"""Start access control: the audit log, the usage and budget actors, and the gate the web layer checks with.

Kept out of ``app.serve`` so the composition root stays short; called from it once the
Redis bus (when configured) is running, and before the ports open. Budgets and usage run
whether or not an access file is configured at start, so adding one by a hot reload needs
no restart.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

from actors import budget as budget_actor
from actors import usage_flusher
from actors.budget import BudgetActor
from actors.core.access import AccessPolicy, break_glass_key
from actors.core.rate_limit import utc_day
from actors.core.rules import RouterConfig
from actors.core.usage import UsageBook
from actors.lifecycle import ActorGroup
from actors.redis_bus import RedisOutbox
from actors.serving.metrics import Metrics
from actors.storage.audit_log import AuditLog, outbox_offer
from actors.storage.budget_store import BudgetLedger, BudgetStore, LocalBudgetStore, RedisBudgetStore
from actors.storage.usage_store import FileUsageStore, RedisUsageStore, UsageStore
from actors.web.access import AccessGate
from actors.web.audit import Auditor

log = logging.getLogger("model_router.access")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def usage_file(config_path: Path, config: RouterConfig, state_folder: Path) -> Path:
    """Where usage persists without Redis: beside the access file, else in the state folder."""
    access_path, _ = config.access.resolve(config_path)
    if access_path is not None:
        return access_path.with_name(f"{access_path.stem}.usage.json")
    return state_folder / f"{config_path.stem}.usage.json"


async def start_access(group: ActorGroup, *, config_path: Path, config: RouterConfig, policy: AccessPolicy | None,
                       metrics: Metrics, outbox: RedisOutbox, redis_url: str | None, admin_key: str | None,
                       state_folder: Path, host: str) -> AccessGate:
    """Start the usage flusher and the budget actor; return the gate with ``policy`` in force."""
    _, audit_path = config.access.resolve(config_path)
    offer = outbox_offer(outbox) if redis_url else None
    auditor = Auditor(AuditLog(audit_path, offer=offer) if audit_path is not None else None, offer)
    book = UsageBook(utc_day(time.time()))
    usage_store: UsageStore
    budget_store: BudgetStore
    if redis_url:
        usage_store, budget_store = RedisUsageStore.from_url(redis_url), RedisBudgetStore.from_url(redis_url)
    else:
        usage_store, budget_store = FileUsageStore(usage_file(config_path, config, state_folder)), LocalBudgetStore()
    await group.start("usage_flusher", partial(usage_flusher.run, book, usage_store))
    if isinstance(budget_store, LocalBudgetStore):
        # Without Redis the day's spending is known from the usage counts: a restart does not
        # hand a workspace its whole budget again.
        now = time.time()
        totals = book.totals(now)
        for (kind, *rest), count in totals.items():
            if kind == "p":
                budget_store.seed(rest[0], utc_day(now), count)
    budget = BudgetActor(BudgetLedger(budget_store))
    await group.start("budget", partial(budget_actor.run, budget))
    gate = AccessGate(metrics, book, auditor, budget=budget,
                      break_glass=break_glass_key(admin_key) if admin_key else None)
    gate.apply(policy, config.access.cors_origins, initial=True)
    if policy is None and host not in LOOPBACK:
        log.warning("no access.file configured and bound to %s: prediction and read routes are open to "
                    "anyone who can reach this port (see docs/access.md)", host)
    if policy is not None:
        log.info("access control on: %d key(s), %d workspace(s)", len(policy.keys), len(policy.workspaces))
    return gate
