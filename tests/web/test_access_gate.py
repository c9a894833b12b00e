"""The per-request check as a plain function (what the data-plane port calls), without ASGI."""

from __future__ import annotations

import json

from actors.core.access import ANONYMOUS, ApiKey, Refusal, break_glass_key, parse_access, token_sha256
from actors.core.usage import UsageBook
from actors.serving.metrics import Metrics
from actors.web.access import AccessGate
from actors.web.audit import Auditor


def policy_text(ops_token: str = "tok-ops") -> str:
    return f"""
workspaces:
  w: {{models: ["fast"], rate_limit: {{per_second: 1, burst: 2}}}}
keys:
  - {{id: eng, sha256: "{token_sha256('tok-eng')}", roles: [predict], workspace: w}}
  - {{id: ops, sha256: "{token_sha256(ops_token)}", roles: [operate]}}
"""


POLICY = policy_text()


def lookup(**headers: str):  # type: ignore[no-untyped-def]
    raw = {name.replace("_", "-").encode(): value.encode() for name, value in headers.items()}
    return raw.get


def gate(policy: str | None = POLICY, admin: str | None = "glass") -> AccessGate:
    clock = [1000.0]
    made = AccessGate(Metrics(), UsageBook(0), Auditor(), break_glass=break_glass_key(admin) if admin else None,
                      monotonic=lambda: clock[0], clock=lambda: 86_400.0 * 3 + 5)
    made.apply(parse_access(policy) if policy else None, (), initial=True)
    return made


def test_check_admits_refuses_and_limits() -> None:
    g = gate()
    assert g.check("GET", "/health", lookup()) is ANONYMOUS
    assert g.check("POST", "/predict", lookup()).code == "unauthenticated"  # type: ignore[union-attr]
    key = g.check("POST", "/predict", lookup(authorization="Bearer tok-eng"))
    assert isinstance(key, ApiKey) and key.id == "eng"
    assert isinstance(g.check("POST", "/predict", lookup(x_api_key="tok-eng")), ApiKey)
    third = g.check("POST", "/predict", lookup(x_api_key="tok-eng"))  # burst 2, no time passed
    assert isinstance(third, Refusal) and third.code == "rate_limited" and third.retry_after_s == 1.0
    forbidden = g.check("POST", "/config/reload", lookup(authorization="Bearer tok-eng"))
    assert isinstance(forbidden, Refusal) and forbidden.code == "forbidden"
    assert g.check("POST", "/config/reload", lookup(x_admin_key="glass")).id == "break-glass-admin"  # type: ignore[union-attr]
    assert g.check("POST", "/config/reload", lookup(authorization="Bearer tok-ops")).id == "ops"  # type: ignore[union-attr]
    totals = g.book.totals(86_400.0 * 3 + 5)
    assert totals[("r", "-", "unauthenticated")] == 1
    assert totals[("r", "w", "rate_limited")] == 1 and totals[("rk", "w", "eng", "forbidden")] == 1


def test_refusal_response_statuses_and_headers() -> None:
    g = gate()
    cases = {
        "unauthenticated": (401, b"www-authenticate"),
        "forbidden": (403, None),
        "model_not_allowed": (403, None),
        "admin_disabled": (403, None),
        "rate_limited": (429, b"retry-after"),
        "budget_exhausted": (429, b"retry-after"),
        "budget_unavailable": (503, None),
    }
    for code, (status, header) in cases.items():
        refusal = Refusal(code, f"because {code}", {"x": 1}, retry_after_s=0.2 if code == "rate_limited" else None,
                          reset_at=86_400.0 * 4 if code == "budget_exhausted" else None)
        got_status, headers, body = g.refusal_response(refusal)
        assert got_status == status, code
        assert json.loads(body) == {"error": {"code": code, "message": f"because {code}", "details": {"x": 1}}}
        names = dict(headers)
        if header is not None:
            assert header in names, code
    assert dict(g.refusal_response(Refusal("rate_limited", "m", retry_after_s=0.2))[1])[b"retry-after"] == b"1"
    reset = dict(g.refusal_response(Refusal("budget_exhausted", "m", reset_at=86_400.0 * 4))[1])
    assert reset[b"retry-after"] == str(86_400 - 5).encode()


def test_without_access_file_open_routes_and_admin_disabled() -> None:
    g = gate(policy=None, admin=None)
    assert g.check("POST", "/predict", lookup()) is ANONYMOUS
    assert g.check("GET", "/rules", lookup()) is ANONYMOUS
    refused = g.check("POST", "/config/reload", lookup(x_admin_key="anything"))
    assert isinstance(refused, Refusal) and refused.code == "admin_disabled"
    g = gate(policy=None, admin="glass")
    assert g.check("POST", "/config/reload", lookup()).code == "unauthenticated"  # type: ignore[union-attr]
    assert isinstance(g.check("DELETE", "/models/a/versions/1", lookup(authorization="Bearer glass")), ApiKey)


def test_apply_swaps_the_policy_and_audits_key_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from actors.storage.audit_log import AuditLog

    g = gate()
    g.auditor = Auditor(AuditLog(tmp_path / "audit.jsonl"))
    g.apply(g.policy, ["https://a.example"])  # same policy: no record
    assert g.auditor.written == 0 and g.cors_origins == {"https://a.example"}
    g.apply(parse_access(policy_text("tok-ops-2")), [])
    assert g.check("POST", "/config/reload", lookup(authorization="Bearer tok-ops")).code == "unauthenticated"  # type: ignore[union-attr]
    refused, reloaded = g.auditor.log.read_newest(2)  # type: ignore[union-attr]
    assert reloaded["action"] == "keys_reload" and reloaded["details"]["keys"] == 2
    assert refused["action"] == "refused" and refused["target"] == "POST /config/reload"


def test_auditor_records_commands_with_caller_outcome_and_automatic_rollbacks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from actors.core.commands import ReloadModel, RollbackOperation
    from actors.core.errors import NotFound
    from actors.storage.audit_log import AuditLog
    from actors.web.audit import Caller

    auditor = Auditor(AuditLog(tmp_path / "audit.jsonl"), clock=lambda: 1764644645.678)
    key = parse_access(POLICY).key_by_id("eng")
    auditor.command(ReloadModel("fast"), {"ok": True}, None, Caller(key, "10.0.0.7", "req-1"))
    auditor.command(ReloadModel("nope"), None, NotFound("model_not_found", "no"), Caller(key, "10.0.0.7"))
    auditor.command(RollbackOperation("op-3", "breaker open"), None, None, None)
    automatic, failed, ok = auditor.log.read_newest(3)  # type: ignore[union-attr]
    assert ok["action"] == "model_reload" and ok["outcome"] == "ok" and ok["key_id"] == "eng"
    assert ok["workspace"] == "w" and ok["client"] == "10.0.0.7" and ok["request_id"] == "req-1"
    assert ok["time"] == "2025-12-02T03:04:05.678Z" and ok["target"] == "fast"
    assert failed["outcome"] == "failed" and failed["details"] == {"error": "model_not_found"}
    assert automatic["action"] == "rollback" and automatic["key_id"] is None
    assert automatic["target"] == "op-3" and automatic["details"] == {"reason": "breaker open"}
