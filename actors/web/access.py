"""Access control in front of the main port: one check per request, one ASGI layer for HTTP and WebSockets.

``AccessGate.check(method, path, lookup)`` is the whole per-request decision as a plain
function (no ASGI types), so the data-plane port can call the same check with its own
header lookup: the route's role (``route_access``), the key (``admit``: sha256, one dict
lookup, a constant-time compare), and on prediction routes the workspace's token bucket.
It never awaits. ``refusal_response`` turns a refusal into ``(status, headers, body)``.

``AccessLayer`` wraps the whole ASGI app (hot path + Quart): a refused request never
reaches a handler, and a refused WebSocket handshake is answered with a plain HTTP
401/403 (Hypercorn's ``websocket.http.response`` extension), never accept-then-close.
Admitted requests carry their key in ``scope["model_router.key"]``. The layer also answers
CORS preflights for the configured origins only and adds ``X-Content-Type-Options:
nosniff`` and ``Cache-Control: no-store`` to every answer.

What needs the request body (the daily budget, counted in items, and the model allow-list,
known once routing chose the model) happens in ``predict``, called by the prediction routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import orjson

from actors.budget import UNAVAILABLE, BudgetActor
from actors.core.access import (
    ADMIN_DISABLED,
    ANONYMOUS,
    BUDGET_UNAVAILABLE,
    MODEL_NOT_ALLOWED,
    OPEN,
    RATE_LIMITED,
    UNAUTHENTICATED,
    AccessPolicy,
    ApiKey,
    Refusal,
    Role,
    admit,
    bearer_token,
    refusal_error,
    route_access,
    token_sha256,
)
from actors.core.errors import RouterError
from actors.core.rate_limit import TokenBuckets, rate_refusal, retry_after_header
from actors.core.usage import UsageBook
from actors.serving.metrics import Metrics
from actors.serving.predictor import Predictor
from actors.storage.budget_store import NEED_LEASE
from actors.web.audit import Auditor, Caller
from actors.web.errors import http_status

log = logging.getLogger("model_router.access")

SCOPE_KEY: Final = "model_router.key"
SECURITY_HEADERS: Final = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))
CORS_METHODS: Final = b"GET, POST, DELETE, OPTIONS"
CORS_HEADERS: Final = b"authorization, x-api-key, x-admin-key, content-type"
CORS_MAX_AGE: Final = b"600"
_JSON: Final = (b"content-type", b"application/json")
_ADMIN_DISABLED: Final = Refusal(ADMIN_DISABLED, "admin API disabled: set MODEL_ROUTER_ADMIN_KEY (or _FILE), "
                                                 "or configure access.file with keys")
_PRIVILEGED: Final = (Role.OPERATE, Role.ADMIN)

HeaderLookup = Callable[[bytes], "bytes | None"]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def batch_size(body: Any) -> int:
    """Items a batch body asks for (what the budget counts); 1 when it is not a well-formed batch."""
    items = body.get("requests") if isinstance(body, Mapping) else None
    return len(items) if isinstance(items, list) and items else 1


@attrs.define
class AccessGate:
    """The access policy in force and everything a request is checked and counted against.

    ``policy`` None means no access file: prediction and read routes are open and operate/admin
    routes need the break-glass key (``MODEL_ROUTER_ADMIN_KEY``). ``apply`` swaps the policy
    (one reference: requests read whichever object is current, never a half-built one).
    """

    metrics: Metrics
    book: UsageBook
    auditor: Auditor
    policy: AccessPolicy | None = None
    break_glass: ApiKey | None = None
    budget: BudgetActor | None = None
    cors_origins: frozenset[str] = frozenset()
    buckets: TokenBuckets = attrs.field(factory=TokenBuckets)
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _refusal_children: dict[tuple[str, str], Any] = attrs.field(factory=dict)

    # -- configuration -------------------------------------------------------------------

    def apply(self, policy: AccessPolicy | None, cors_origins: Iterable[str], *, initial: bool = False) -> None:
        """Put a newly loaded policy in force (start and every successful reload)."""
        old = self.policy
        self.policy = policy
        self.cors_origins = frozenset(cors_origins)
        if initial or old == policy:
            return
        keys = 0 if policy is None else len(policy.keys)
        workspaces = 0 if policy is None else len(policy.workspaces)
        log.info("access policy reloaded: %d key(s), %d workspace(s)", keys, workspaces)
        self.auditor.write("keys_reload", "ok", None, None,
                           {"keys": keys, "workspaces": workspaces, "access_control": policy is not None})

    # -- the per-request check -----------------------------------------------------------

    def check(self, method: str, path: str, lookup: HeaderLookup, client: str | None = None) -> ApiKey | Refusal:
        """Who may make this request: the admitted key, or why not. Sync and allocation-light."""
        access = route_access(method, path)
        if access == OPEN:
            return ANONYMOUS
        policy = self.policy
        if policy is None and access in _PRIVILEGED and self.break_glass is None:
            self.refused(None, _ADMIN_DISABLED)
            self.audit_refusal(method, path, _ADMIN_DISABLED, client)
            return _ADMIN_DISABLED
        if policy is None and access not in _PRIVILEGED:
            return ANONYMOUS  # no access file: prediction and read routes stay open, as before
        token = bearer_token(_text(lookup(b"authorization")),
                             _text(lookup(b"x-api-key")) or _text(lookup(b"x-admin-key")))
        key = admit(policy, access, token, self.break_glass)
        if isinstance(key, Refusal):
            self.refused(None if key.code == UNAUTHENTICATED else policy_key(policy, token), key)
            if access in _PRIVILEGED:
                self.audit_refusal(method, path, key, client)
            return key
        if access is Role.PREDICT and key.workspace is not None:
            limited = rate_refusal(self.buckets, key, self.monotonic())
            if limited is not None:
                self.refused(key, limited)
                return limited
        return key

    def rate_check(self, key: ApiKey) -> RouterError | None:
        """The rate limit alone (a WebSocket message is a request of its own), as an error to raise."""
        if key.workspace is None:
            return None
        limited = rate_refusal(self.buckets, key, self.monotonic())
        if limited is None:
            return None
        self.refused(key, limited)
        return refusal_error(limited)

    def refused(self, key: ApiKey | None, refusal: Refusal) -> None:
        """Count a refusal: the metric (by workspace and code) and today's usage."""
        workspace = key.workspace_name if key is not None else None
        label = (workspace or "-", refusal.code)
        child = self._refusal_children.get(label)
        if child is None:
            child = self._refusal_children[label] = self.metrics.access_refusals.labels(*label)
        child.inc()
        self.book.record_refusal(workspace, key.id if key is not None else None, refusal.code, self.clock())

    def audit_refusal(self, method: str, path: str, refusal: Refusal, client: str | None) -> None:
        self.auditor.write("refused", "refused", Caller(None, client), f"{method} {path}"[:200],
                           {"code": refusal.code})

    def refusal_response(self, refusal: Refusal) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The HTTP answer for a refusal: status, headers, the service's JSON error body."""
        error = refusal_error(refusal)
        status = http_status(error)
        headers = [_JSON]
        if refusal.code == UNAUTHENTICATED:
            headers.append((b"www-authenticate", b'Bearer realm="model-router"'))
        if refusal.code == RATE_LIMITED and refusal.retry_after_s is not None:
            headers.append((b"retry-after", str(retry_after_header(refusal.retry_after_s)).encode()))
        elif refusal.reset_at is not None:
            headers.append((b"retry-after", str(retry_after_header(refusal.reset_at - self.clock())).encode()))
        return status, headers, orjson.dumps(error.to_body())

    # -- what needs the body: budget, allow-list, usage -----------------------------------

    async def spend(self, key: ApiKey, n: int) -> Refusal | None:
        """Take ``n`` items of the key's workspace's daily budget; the refusal when they are not there."""
        workspace = key.workspace
        if workspace is None or workspace.daily_predictions is None or self.budget is None:
            return None
        result = self.budget.try_spend(workspace.name, workspace.daily_predictions, n)
        if result.status == NEED_LEASE:
            result = await self.budget.spend(workspace.name, workspace.daily_predictions, n)
        if result.ok:
            return None
        if result.status == UNAVAILABLE:
            refusal = Refusal(BUDGET_UNAVAILABLE, "the budget store is unreachable and this process holds no "
                                                  f"budget for workspace {workspace.name!r}; retry shortly",
                              {"workspace": workspace.name})
        else:
            refusal = result.refusal(workspace.name) or Refusal(BUDGET_UNAVAILABLE, "budget check failed")
        self.refused(key, refusal)
        return refusal

    async def predict(self, predictor: Predictor, key: ApiKey, body: Any, *, batch: bool) -> dict[str, Any]:
        """A prediction as ``key``: budget first, then the predictor (allow-list per item), then usage."""
        refusal = await self.spend(key, batch_size(body) if batch else 1)
        if refusal is not None:
            raise refusal_error(refusal)
        principal = key if key.workspace is not None else None
        now = self.clock()
        if not batch:
            try:
                answer = await predictor.predict_one(body, principal=principal)
            except RouterError as error:
                if error.code == MODEL_NOT_ALLOWED:
                    self.refused(key, Refusal(MODEL_NOT_ALLOWED, error.message))
                raise
            self.book.record_prediction(key.workspace_name, key.id, answer["model"]["name"], 1, now)
            return answer
        answer = await predictor.predict_batch(body, principal=principal)
        by_model: dict[str, int] = {}
        for item in answer["predictions"]:
            model = item.get("model") if item is not None else None
            if model is not None:
                by_model[model["name"]] = by_model.get(model["name"], 0) + 1
            elif item is not None and item.get("error", {}).get("code") == MODEL_NOT_ALLOWED:
                self.refused(key, Refusal(MODEL_NOT_ALLOWED, item["error"]["message"]))
        for model_name, count in by_model.items():
            self.book.record_prediction(key.workspace_name, key.id, model_name, count, now)
        return answer


def policy_key(policy: AccessPolicy | None, token: str | None) -> ApiKey | None:
    """The key a known token belongs to (for counting a ``forbidden`` under its workspace)."""
    if policy is None or not token:
        return None
    return policy.keys.get(token_sha256(token))


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _client(scope: Mapping[str, Any]) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class AccessLayer:
    """ASGI middleware: the gate's check, CORS and security headers in front of the whole app."""

    def __init__(self, app: Callable[..., Awaitable[None]], gate: AccessGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        gate = self.gate
        extra = list(SECURITY_HEADERS)
        origin = headers.get(b"origin")
        allowed_origin = origin is not None and origin.decode("latin-1") in gate.cors_origins
        if allowed_origin:
            assert origin is not None
            extra += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        method = scope["method"]
        if method == "OPTIONS" and origin is not None and b"access-control-request-method" in headers:
            await self.preflight(allowed_origin, extra, send)
            return
        result = gate.check(method, scope["path"], headers.get, _client(scope))
        if isinstance(result, Refusal):
            status, answer_headers, body = gate.refusal_response(result)
            await send({"type": "http.response.start", "status": status,
                        "headers": [*answer_headers, *extra, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope[SCOPE_KEY] = result  # the scope belongs to this request (as Starlette's scope["state"])

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def preflight(self, allowed: bool, extra: list[tuple[bytes, bytes]], send: Send) -> None:
        """A CORS preflight: allowed for the configured origins only (no key: browsers send none here)."""
        if allowed:
            status, body = 204, b""
            headers = [*extra, (b"access-control-allow-methods", CORS_METHODS),
                       (b"access-control-allow-headers", CORS_HEADERS), (b"access-control-max-age", CORS_MAX_AGE)]
        else:
            status = 403
            body = orjson.dumps({"error": {"code": "cors_origin_not_allowed",
                                           "message": "this origin may not call the API from a browser",
                                           "details": {"allowed": sorted(self.gate.cors_origins)}}})
            headers = [_JSON, *extra]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def websocket(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The handshake is checked like a GET; a refusal is an HTTP answer to it, never a closed socket."""
        headers = dict(scope["headers"])
        result = self.gate.check("GET", scope["path"], headers.get, _client(scope))
        if isinstance(result, Refusal):
            status, answer_headers, body = self.gate.refusal_response(result)
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start", "status": status,
                            "headers": [*answer_headers, *SECURITY_HEADERS,
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "websocket.http.response.body", "body": body})
            else:  # a close before accept is answered 403 by ASGI servers
                await send({"type": "websocket.close", "code": 1008})
            return
        scope[SCOPE_KEY] = result
        await self.app(scope, receive, send)


def scope_key(scope: Mapping[str, Any]) -> ApiKey:
    """The key the access layer admitted for this request (ANONYMOUS when it ran without one)."""
    key = scope.get(SCOPE_KEY)
    return key if isinstance(key, ApiKey) else ANONYMOUS
