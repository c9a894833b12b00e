"""Access policy: API keys with roles, workspaces with model allow-lists, and the per-request check.

Pure: no I/O, no clock. ``parse_access`` turns the access file's text into an immutable
``AccessPolicy`` (or an ``AccessConfigError`` naming the path of every problem), so a reload
swaps one object and a bad edit never replaces the policy in force. The request check is a
sha256 of the token, one dict lookup, a constant-time compare and a set membership test:
nothing awaits, nothing allocates on success.

Outcome codes and the HTTP answer the web layer gives for each (the web layer owns statuses):

==================  ======  ============================================================
code                status  extra
==================  ======  ============================================================
unauthenticated     401     ``WWW-Authenticate: Bearer``
forbidden           403     details: role required, key id
model_not_allowed   403     details: model, workspace (per item in a batch)
rate_limited        429     ``Retry-After`` seconds (ceil of ``retry_after_s``)
budget_exhausted    429     details: reset time (next UTC midnight), limit, used
==================  ======  ============================================================
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from fnmatch import translate
from typing import Any, Final, Literal

import attrs

from actors.core.errors import Forbidden, RouterError, TooManyRequests, Unauthenticated, Unavailable
from actors.core.rules.problems import DOCUMENT_PATH
from actors.core.rules.problems import _Problems as _RuleProblems
from actors.core.rules.yaml_reader import _Invalid, _load_yaml

# --------------------------------------------------------------------------- outcome codes

UNAUTHENTICATED: Final = "unauthenticated"
FORBIDDEN: Final = "forbidden"
MODEL_NOT_ALLOWED: Final = "model_not_allowed"
RATE_LIMITED: Final = "rate_limited"
BUDGET_EXHAUSTED: Final = "budget_exhausted"
OUTCOME_CODES: Final = (UNAUTHENTICATED, FORBIDDEN, MODEL_NOT_ALLOWED, RATE_LIMITED, BUDGET_EXHAUSTED)

#: Bound on YAML nodes visited with aliases expanded: a "billion laughs" file is refused, not built.
#: Bound on the allow-list memo of one workspace (model names come from requests).
MODEL_MEMO_LIMIT: Final = 4096

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_GLOB_RE = re.compile(r"^[A-Za-z0-9_\-./:*?\[\]!]+$")


class Role(enum.Enum):
    """What a key may do. ``admin`` implies every other role; the others are independent."""

    PREDICT = "predict"
    READ = "read"
    OPERATE = "operate"
    ADMIN = "admin"


ROLE_NAMES: Final = tuple(role.value for role in Role)

#: Route markers besides roles: no key needed, or any valid key (routes the table does not know,
#: so an unauthenticated caller learns nothing about which paths exist).
OPEN: Final = "open"
ANY_KEY: Final = "any_key"
RouteAccess = Role | Literal["open", "any_key"]


class AccessConfigError(ValueError):
    """Every problem of an access file, each with its path (``keys[2].sha256``), so one edit fixes all.

    ``details`` has one ``{"path": ..., "message": ...}`` per problem: the shape the rules'
    ``ConfigError`` uses, so reload history and the HTTP error body show both the same way.
    """

    def __init__(self, message: str, details: Iterable[Mapping[str, str]] = ()) -> None:
        self.message = message
        self.details: tuple[dict[str, str], ...] = tuple(dict(d) for d in details)
        super().__init__(message)

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  {d['path']}: {d['message']}" for d in self.details)])


# --------------------------------------------------------------------------- value objects


@attrs.frozen
class RateLimit:
    """A token bucket: ``per_second`` refill, ``burst`` capacity (both > 0, burst >= 1)."""

    per_second: float
    burst: float


@attrs.frozen
class Workspace:
    """A tenant: which models its keys may use, their rate limit, its daily prediction budget.

    ``models`` None means every model. ``allows`` memoizes answers (bounded) because the same
    few model names come back on every request and a regex match costs more than a dict hit.
    """

    name: str
    models: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None
    daily_predictions: int | None = None
    _pattern: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _memo: dict[str, bool] = attrs.field(init=False, eq=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        pattern = None
        if self.models is not None:
            pattern = re.compile("|".join(f"(?:{translate(glob)})" for glob in self.models) or "(?!)")
        object.__setattr__(self, "_pattern", pattern)

    def allows(self, model: str) -> bool:
        known = self._memo.get(model)
        if known is not None:
            return known
        allowed = self._pattern is None or self._pattern.match(model) is not None
        if len(self._memo) >= MODEL_MEMO_LIMIT:
            self._memo.clear()
        self._memo[model] = allowed
        return allowed


@attrs.frozen
class ApiKey:
    """One key: its public id (logs, audit, usage), the sha256 of its token, roles and workspace."""

    id: str
    sha256: str
    roles: frozenset[Role]
    workspace: Workspace | None = None
    #: Every role the key may act as (admin expands to all), as a tuple: membership in a small
    #: tuple is an identity check, while hashing an Enum member runs Python code (~10x slower).
    grants: tuple[Role, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        grants = tuple(Role) if Role.ADMIN in self.roles else tuple(r for r in Role if r in self.roles)
        object.__setattr__(self, "grants", grants)

    @property
    def workspace_name(self) -> str | None:
        return None if self.workspace is None else self.workspace.name

    def has(self, role: Role) -> bool:
        return role in self.grants


#: Who calls when no access file is configured: prediction and read routes are open.
ANONYMOUS: Final = ApiKey("anonymous", "", frozenset({Role.PREDICT, Role.READ}))
#: The MODEL_ROUTER_ADMIN_KEY holder: admin, every model, no workspace limits.
BREAK_GLASS_ID: Final = "break-glass-admin"


@attrs.frozen
class AccessPolicy:
    """The parsed access file: workspaces by name, keys by the hex sha256 of their token."""

    workspaces: Mapping[str, Workspace]
    keys: Mapping[str, ApiKey]

    def key_by_id(self, key_id: str) -> ApiKey | None:
        return next((k for k in self.keys.values() if k.id == key_id), None)


EMPTY_POLICY: Final = AccessPolicy({}, {})


@attrs.frozen
class Refusal:
    """Why a request is refused: an outcome code, a message and data for the answer."""

    code: str
    message: str
    details: Mapping[str, Any] = attrs.field(factory=dict)
    retry_after_s: float | None = None
    reset_at: float | None = None


AuthFailure = Refusal


@attrs.frozen
class Decision:
    """The answer of ``authorize``: allowed, or the refusal to send."""

    allowed: bool
    refusal: Refusal | None = None


ALLOWED: Final = Decision(True)
_NO_KEY: Final = Refusal(UNAUTHENTICATED, "an API key is required (Authorization: Bearer TOKEN or X-API-Key)")
_UNKNOWN_KEY: Final = Refusal(UNAUTHENTICATED, "unknown API key")


# --------------------------------------------------------------------------- the request check


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def break_glass_key(admin_token: str) -> ApiKey:
    """The break-glass admin key built from MODEL_ROUTER_ADMIN_KEY (kept as its hash only)."""
    return ApiKey(BREAK_GLASS_ID, token_sha256(admin_token), frozenset({Role.ADMIN}))


def bearer_token(authorization: str | None, api_key: str | None = None) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, else of ``X-API-Key``; None without either."""
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def authenticate(policy: AccessPolicy, token: str | None, break_glass: ApiKey | None = None) -> ApiKey | Refusal:
    """The key whose sha256 matches ``token``, compared in constant time; else ``unauthenticated``.

    The token is hashed first, so the lookup and the compare see only digests: timing reveals
    nothing about the secret. ``break_glass`` (from ``break_glass_key``) works alongside the file.
    """
    if not token:
        return _NO_KEY
    digest = hashlib.sha256(token.encode()).hexdigest()
    found = policy.keys.get(digest)
    if found is not None and hmac.compare_digest(found.sha256, digest):
        return found
    if break_glass is not None and hmac.compare_digest(break_glass.sha256, digest):
        return break_glass
    return _UNKNOWN_KEY


def authorize(key: ApiKey, role: Role) -> Decision:
    if role in key.grants:
        return ALLOWED
    return Decision(False, Refusal(FORBIDDEN, f"key {key.id!r} lacks the {role.value!r} role",
                                   {"key_id": key.id, "required_role": role.value,
                                    "roles": sorted(r.value for r in key.roles)}))


def model_allowed(key: ApiKey, model: str) -> bool:
    """A key without a workspace (admin, operators, anonymous) may use every model."""
    return key.workspace is None or key.workspace.allows(model)


def model_refusal(key: ApiKey, model: str) -> Refusal | None:
    """``model_not_allowed`` naming the model, or None when the key's workspace may use it."""
    if key.workspace is None or key.workspace.allows(model):
        return None
    return Refusal(MODEL_NOT_ALLOWED, f"model {model!r} is not allowed for workspace {key.workspace.name!r}",
                   {"model": model, "workspace": key.workspace.name})


def admit(policy: AccessPolicy | None, access: RouteAccess, token: str | None,
          break_glass: ApiKey | None = None) -> ApiKey | Refusal:
    """Authenticate and authorize one request for a route's access (``route_access``).

    ``policy`` None means no access file: prediction, read and unknown routes stay open (the
    caller is ``ANONYMOUS``) and operate/admin routes need the break-glass key, as before
    access control existed. With a policy every route but the open ones needs a key.
    """
    if access == OPEN:
        return ANONYMOUS
    if policy is None:
        if access in (Role.PREDICT, Role.READ, ANY_KEY):
            return ANONYMOUS
        policy = EMPTY_POLICY
    key = authenticate(policy, token, break_glass)
    if isinstance(key, Refusal) or access == ANY_KEY:
        return key
    assert isinstance(access, Role)
    decision = authorize(key, access)
    return key if decision.refusal is None else decision.refusal


# --------------------------------------------------------------------------- routes


#: Every route of the service and the role it needs (WebSocket handshakes are GETs).
ROUTE_ROLES: Final[Mapping[tuple[str, str], RouteAccess]] = {
    ("POST", "/predict"): Role.PREDICT,
    ("POST", "/predict/batch"): Role.PREDICT,
    ("POST", "/feedback"): Role.PREDICT,
    ("POST", "/route/test"): Role.PREDICT,
    ("GET", "/ws/predict"): Role.PREDICT,
    ("GET", "/models"): Role.READ,
    ("GET", "/models/{name}"): Role.READ,
    ("GET", "/models/{name}/versions"): Role.READ,
    ("GET", "/rules"): Role.READ,
    ("GET", "/stats"): Role.READ,
    ("GET", "/reload/events"): Role.READ,
    ("GET", "/switches"): Role.READ,
    ("GET", "/switches/{operation_id}"): Role.READ,
    ("GET", "/health/detailed"): Role.READ,
    ("GET", "/usage"): Role.READ,
    ("GET", "/openapi.json"): Role.READ,
    ("GET", "/ws/switches"): Role.READ,
    ("POST", "/models/{name}/switch"): Role.OPERATE,
    ("POST", "/models/{name}/rollback"): Role.OPERATE,
    ("POST", "/switches/{operation_id}/abort"): Role.OPERATE,
    ("POST", "/switches/{operation_id}/promote"): Role.OPERATE,
    ("POST", "/reload/{name}"): Role.OPERATE,
    ("POST", "/config/reload"): Role.OPERATE,
    ("POST", "/models"): Role.ADMIN,
    ("DELETE", "/models/{name}/versions/{version}"): Role.ADMIN,
    ("GET", "/audit"): Role.ADMIN,
    ("GET", "/rules/export"): Role.READ,
    ("POST", "/rules/validate"): Role.READ,
    ("PUT", "/rules"): Role.ADMIN,
    ("POST", "/rules/import"): Role.ADMIN,
    ("POST", "/rules/items"): Role.ADMIN,
    ("PATCH", "/rules/items/{index}"): Role.ADMIN,
    ("DELETE", "/rules/items/{index}"): Role.ADMIN,
    ("GET", "/cluster"): Role.READ,
    ("GET", "/v2"): Role.READ,
    ("GET", "/v2/models/{name}"): Role.READ,
    ("GET", "/v2/models/{name}/versions/{version}"): Role.READ,
    ("GET", "/v2/models/{name}/ready"): Role.READ,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Role.READ,
    ("POST", "/v2/models/{name}/infer"): Role.PREDICT,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Role.PREDICT,
    ("GET", "/v2/health/live"): OPEN,
    ("GET", "/v2/health/ready"): OPEN,
    ("GET", "/health"): OPEN,
    ("GET", "/health/ready"): OPEN,
    ("GET", "/metrics"): OPEN,
}


#: ``spend`` could not reach the budget store and this process holds no lease (503).
BUDGET_UNAVAILABLE: Final = "budget_unavailable"
#: No access file and no MODEL_ROUTER_ADMIN_KEY: operate and admin routes are switched off (403).
ADMIN_DISABLED: Final = "admin_disabled"
_ERROR_CLASSES: Final[Mapping[str, type[RouterError]]] = {
    UNAUTHENTICATED: Unauthenticated, FORBIDDEN: Forbidden, MODEL_NOT_ALLOWED: Forbidden,
    ADMIN_DISABLED: Forbidden, RATE_LIMITED: TooManyRequests, BUDGET_EXHAUSTED: TooManyRequests,
    BUDGET_UNAVAILABLE: Unavailable,
}


def refusal_error(refusal: Refusal) -> RouterError:
    """The domain error for a refusal, so it reads like every other error (status chosen by the web layer)."""
    return _ERROR_CLASSES.get(refusal.code, Forbidden)(refusal.code, refusal.message, refusal.details)


def _templates() -> dict[tuple[str, int], list[tuple[tuple[str | None, ...], RouteAccess]]]:
    by_shape: dict[tuple[str, int], list[tuple[tuple[str | None, ...], RouteAccess]]] = {}
    for (method, template), access in ROUTE_ROLES.items():
        if "{" not in template:
            continue
        parts = tuple(None if p.startswith("{") else p for p in template.strip("/").split("/"))
        by_shape.setdefault((method, len(parts)), []).append((parts, access))
    return by_shape


_EXACT: Final = {key: access for key, access in ROUTE_ROLES.items() if "{" not in key[1]}
_TEMPLATES: Final = _templates()


def route_access(method: str, path: str) -> RouteAccess:
    """The role ``method path`` needs; ``OPEN``; or ``ANY_KEY`` for a route the table does not know.

    HEAD is judged as GET. Static paths are one dict lookup; templated ones compare segments.
    """
    if method == "HEAD":
        method = "GET"
    found = _EXACT.get((method, path))
    if found is not None:
        return found
    parts = path.strip("/").split("/")
    for template, access in _TEMPLATES.get((method, len(parts)), ()):
        if all(t is None or t == p for t, p in zip(template, parts, strict=True)) and all(parts):
            return access
    return ANY_KEY


# --------------------------------------------------------------------------- parsing


@attrs.define
class _Problems:
    details: list[dict[str, str]] = attrs.field(factory=list)

    def add(self, path: str, message: str) -> None:
        self.details.append({"path": path, "message": message})


def _describe(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _access_path(path: str) -> str:
    """The rules reader names the document root ``<document>``; the access file calls it ``$``."""
    if path == DOCUMENT_PATH:
        return "$"
    return path.removeprefix(DOCUMENT_PATH + ".")


def load_yaml(text: str) -> Any:
    """The rules file's safe reader: alias expansion bounded, repeated keys refused, errors located."""
    found = _RuleProblems()
    try:
        data = _load_yaml(text, found)
    except _Invalid:
        data = None
    if found.details:
        details = [{"path": _access_path(d["path"]), "message": d["message"]} for d in found.details]
        raise AccessConfigError(f"invalid access file: {len(details)} problem(s)", details)
    return data


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value != float("inf")


def _check_glob(glob: Any, path: str, probs: _Problems) -> bool:
    if not isinstance(glob, str) or not glob:
        probs.add(path, f"must be a non-empty glob string, got {_describe(glob)}")
        return False
    if not _GLOB_RE.match(glob):
        probs.add(path, f"glob {glob!r} has characters outside A-Z a-z 0-9 _ - . / : * ? [ ] !")
        return False
    depth = 0
    for char in glob:
        if char == "[":
            if depth:
                probs.add(path, f"glob {glob!r} nests '['")
                return False
            depth = 1
        elif char == "]" and depth:
            depth = 0
    if depth:
        probs.add(path, f"glob {glob!r} has an unclosed '['")
        return False
    return True


def _parse_workspace(name: Any, body: Any, probs: _Problems) -> Workspace | None:
    path = f"workspaces.{name}"
    ok = True
    if not isinstance(name, str) or not _NAME_RE.match(name):
        probs.add(path, "workspace name must be 1-128 of A-Z a-z 0-9 _ . : @ - (starting alphanumeric)")
        ok = False
    if body is None:
        body = {}
    if not isinstance(body, dict):
        probs.add(path, f"must be a mapping, got {_describe(body)}")
        return None
    for key in body:
        if key not in ("models", "rate_limit", "daily_predictions"):
            probs.add(f"{path}.{key}", "unknown key (allowed: models, rate_limit, daily_predictions)")
            ok = False
    models: tuple[str, ...] | None = None
    if "models" in body:
        raw = body["models"]
        if not isinstance(raw, list) or not raw:
            probs.add(f"{path}.models",
                      f"must be a non-empty list of globs (omit it for all models), got {_describe(raw)}")
            ok = False
        else:
            ok = all([_check_glob(g, f"{path}.models[{i}]", probs) for i, g in enumerate(raw)]) and ok
            models = tuple(str(g) for g in raw)
    rate_limit = None
    if body.get("rate_limit") is not None:
        raw = body["rate_limit"]
        if not isinstance(raw, dict):
            probs.add(f"{path}.rate_limit", f"must be a mapping {{per_second, burst}}, got {_describe(raw)}")
            ok = False
        else:
            for key in raw:
                if key not in ("per_second", "burst"):
                    probs.add(f"{path}.rate_limit.{key}", "unknown key (allowed: per_second, burst)")
                    ok = False
            per_second, burst = raw.get("per_second"), raw.get("burst")
            if not _positive_number(per_second):
                probs.add(f"{path}.rate_limit.per_second", f"must be a number > 0, got {_describe(per_second)}")
                ok = False
            if burst is None and _positive_number(per_second):
                burst = max(1.0, float(per_second))  # default: one second's worth
            elif not _positive_number(burst) or burst < 1:
                probs.add(f"{path}.rate_limit.burst", f"must be a number >= 1, got {_describe(burst)}")
                ok = False
            if ok:
                rate_limit = RateLimit(float(per_second), float(burst))
    daily = body.get("daily_predictions")
    if daily is not None and (not isinstance(daily, int) or isinstance(daily, bool) or daily < 0):
        probs.add(f"{path}.daily_predictions", f"must be an integer >= 0, got {_describe(daily)}")
        ok = False
    if not ok:
        return None
    return Workspace(name, models, rate_limit, daily)


def _parse_key(i: int, body: Any, workspaces: Mapping[str, Workspace], known: set[str], probs: _Problems
               ) -> ApiKey | None:
    path = f"keys[{i}]"
    if not isinstance(body, dict):
        probs.add(path, f"must be a mapping {{id, sha256, roles, workspace}}, got {_describe(body)}")
        return None
    ok = True
    for key in body:
        if key not in ("id", "sha256", "roles", "workspace"):
            probs.add(f"{path}.{key}", "unknown key (allowed: id, sha256, roles, workspace)")
            ok = False
    key_id = body.get("id")
    if not isinstance(key_id, str) or not _NAME_RE.match(key_id):
        probs.add(f"{path}.id", f"must be 1-128 of A-Z a-z 0-9 _ . : @ - (starting alphanumeric), got "
                                f"{_describe(key_id)}")
        ok = False
    digest = body.get("sha256")
    if not isinstance(digest, str) or not _HEX64_RE.match(digest.lower()):
        probs.add(f"{path}.sha256", "must be 64 hex chars (the sha256 of the token)")
        ok = False
    roles_raw = body.get("roles")
    roles: set[Role] = set()
    if not isinstance(roles_raw, list) or not roles_raw:
        probs.add(f"{path}.roles", f"must be a non-empty list of {', '.join(ROLE_NAMES)}, got {_describe(roles_raw)}")
        ok = False
    else:
        for j, name in enumerate(roles_raw):
            if name not in ROLE_NAMES:
                probs.add(f"{path}.roles[{j}]", f"unknown role {name!r} (one of {', '.join(ROLE_NAMES)})")
                ok = False
            else:
                roles.add(Role(name))
    ws_name = body.get("workspace")
    workspace = None
    if ws_name is not None:
        if not isinstance(ws_name, str) or ws_name not in workspaces:
            if isinstance(ws_name, str) and ws_name in known:
                pass  # the workspace exists but is invalid: its own problems are already reported
            else:
                probs.add(f"{path}.workspace", f"unknown workspace {ws_name!r} (defined: {sorted(known) or 'none'})")
            ok = False
        else:
            workspace = workspaces[ws_name]
    elif Role.PREDICT in roles:
        probs.add(f"{path}.workspace", "required for a key with the predict role")
        ok = False
    if not ok:
        return None
    assert isinstance(key_id, str) and isinstance(digest, str)
    return ApiKey(key_id, digest.lower(), frozenset(roles), workspace)


def parse_access(text: str) -> AccessPolicy:
    """Parse and validate an access file; raise ``AccessConfigError`` listing every problem."""
    data = load_yaml(text)
    probs = _Problems()
    if data is None:
        # Nothing but blanks or comments: also what a reader sees between an editor's truncate
        # and its write. Taken as "no keys" it would lock every client out; ``keys: []`` says so.
        raise AccessConfigError("invalid access file: it is empty", [{
            "path": "$", "message": "the file holds no workspaces and no keys (a write in progress?); "
                                    "write `keys: []` for a policy without keys"}])
    if not isinstance(data, dict):
        raise AccessConfigError("invalid access file", [{
            "path": "$", "message": f"top level must be a mapping with workspaces and keys, got {_describe(data)}"}])
    for key in data:
        if key not in ("workspaces", "keys"):
            probs.add(str(key), "unknown top-level key (allowed: workspaces, keys)")
    raw_ws = data.get("workspaces") or {}
    workspaces: dict[str, Workspace] = {}
    known: set[str] = set()
    if not isinstance(raw_ws, dict):
        probs.add("workspaces", f"must be a mapping of name to workspace, got {_describe(raw_ws)}")
    else:
        for name, body in raw_ws.items():
            known.add(str(name))
            workspace = _parse_workspace(name, body, probs)
            if workspace is not None:
                workspaces[workspace.name] = workspace
    raw_keys = data.get("keys") or []
    keys: dict[str, ApiKey] = {}
    if not isinstance(raw_keys, list):
        probs.add("keys", f"must be a list of keys, got {_describe(raw_keys)}")
    else:
        first_id: dict[str, int] = {}
        first_hash: dict[str, int] = {}
        for i, body in enumerate(raw_keys):
            key = _parse_key(i, body, workspaces, known, probs)
            if not isinstance(body, dict):
                continue
            # Duplicates are judged on the raw entries, so they are reported even beside other problems.
            raw_id, raw_hash = body.get("id"), body.get("sha256")
            duplicate = False
            if isinstance(raw_id, str):
                if raw_id in first_id:
                    probs.add(f"keys[{i}].id", f"duplicate id {raw_id!r} (also keys[{first_id[raw_id]}])")
                    duplicate = True
                first_id.setdefault(raw_id, i)
            if isinstance(raw_hash, str) and _HEX64_RE.match(raw_hash.lower()):
                digest = raw_hash.lower()
                if digest in first_hash:
                    probs.add(f"keys[{i}].sha256",
                              f"duplicate hash (also keys[{first_hash[digest]}]): two ids for one token")
                    duplicate = True
                first_hash.setdefault(digest, i)
            if key is not None and not duplicate:
                keys[key.sha256] = key
    if probs.details:
        raise AccessConfigError(f"invalid access file: {len(probs.details)} problem(s)", probs.details)
    return AccessPolicy(workspaces, keys)
