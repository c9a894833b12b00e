"""Usage and audit: today's predictions and refusals per workspace, and the audit trail."""

from __future__ import annotations

import trio
from quart import Response, request
from quart_trio import QuartTrio

from actors.core.access import refusal_error
from actors.core.errors import bad_request
from actors.core.usage import BudgetView, usage_report, usage_scope
from actors.web.access import scope_key
from actors.web.quart_io import json_response
from actors.web.service import Service

AUDIT_LIMIT_MAX = 1000


def register(app: QuartTrio, service: Service) -> None:
    @app.get("/usage")
    async def usage() -> Response:
        gate = service.gate
        policy = gate.policy
        workspaces = policy.workspaces if policy is not None else {}
        requested = request.args.get("workspace")
        scope = usage_scope(scope_key(request.scope), workspaces, requested)
        if not isinstance(scope, list):
            raise refusal_error(scope)
        now = gate.clock()
        budgets = {name: BudgetView(ws.daily_predictions, gate.book.totals(now).get(("p", name), 0))
                   for name, ws in workspaces.items() if name in scope}
        return json_response(usage_report(gate.book.totals(now), now, scope, budgets))

    @app.get("/audit")
    async def audit() -> Response:
        raw = request.args.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_LIMIT_MAX:
            raise bad_request(f"'limit' must be an integer 1..{AUDIT_LIMIT_MAX}", limit=raw[:20])
        log = service.gate.auditor.log
        records = [] if log is None else await trio.to_thread.run_sync(log.read_newest, int(raw))
        return json_response({"records": records, "count": len(records),
                              "file": None if log is None else str(log.path)})
