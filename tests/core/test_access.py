"""The access policy: parsing with located problems, authentication, roles, model allow-lists, routes."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest

from actors.core.access import (
    ANONYMOUS,
    ANY_KEY,
    BREAK_GLASS_ID,
    FORBIDDEN,
    MODEL_NOT_ALLOWED,
    OPEN,
    ROUTE_ROLES,
    UNAUTHENTICATED,
    AccessConfigError,
    ApiKey,
    RateLimit,
    Refusal,
    Role,
    admit,
    authenticate,
    authorize,
    bearer_token,
    break_glass_key,
    model_allowed,
    model_refusal,
    parse_access,
    route_access,
)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


POLICY_TEXT = textwrap.dedent(f"""\
    workspaces:
      desk-a:
        models: ["tlob_*", "patchtst_small"]
        rate_limit: {{per_second: 200, burst: 400}}
        daily_predictions: 5000000
      open-desk: {{}}
    keys:
      - id: desk-a-engine
        sha256: "{sha('token-a')}"
        roles: [predict]
        workspace: desk-a
      - id: reader
        sha256: "{sha('token-r')}"
        roles: [read]
      - id: ops
        sha256: "{sha('token-o').upper()}"
        roles: [operate]
      - id: boss
        sha256: "{sha('token-boss')}"
        roles: [admin]
    """)


def problems(text: str) -> dict[str, str]:
    with pytest.raises(AccessConfigError) as caught:
        parse_access(text)
    return {d["path"]: d["message"] for d in caught.value.details}


def test_parses_the_schema_of_the_issue() -> None:
    policy = parse_access(POLICY_TEXT)
    desk = policy.workspaces["desk-a"]
    assert desk.models == ("tlob_*", "patchtst_small")
    assert desk.rate_limit == RateLimit(200.0, 400.0)
    assert desk.daily_predictions == 5_000_000
    assert policy.workspaces["open-desk"].models is None
    key = policy.keys[sha("token-a")]
    assert (key.id, key.roles, key.workspace) == ("desk-a-engine", frozenset({Role.PREDICT}), desk)
    assert policy.keys[sha("token-o")].id == "ops"  # hashes are case-insensitive hex, stored lower-case
    assert policy.key_by_id("reader") is not None and policy.key_by_id("nobody") is None


def test_an_empty_file_is_refused_and_no_keys_must_be_said() -> None:
    """Empty is what a reader sees mid-write (truncated, not yet written): never "lock everyone out"."""
    for text in ("", "\n  \n", "# nothing yet\n"):
        with pytest.raises(AccessConfigError) as caught:
            parse_access(text)
        assert caught.value.details[0]["path"] == "$" and "keys: []" in caught.value.details[0]["message"]
    policy = parse_access("keys: []\n")
    assert dict(policy.keys) == {} and dict(policy.workspaces) == {}
    assert dict(parse_access("keys:\nworkspaces:\n").keys) == {}


def test_every_problem_is_reported_with_its_path() -> None:
    found = problems(textwrap.dedent(f"""\
        workspaces:
          w1:
            models: ["ok_*", "bad glob!", "[unclosed"]
            rate_limit: {{per_second: 0, burst: 0.5, extra: 1}}
            daily_predictions: -1
            colour: blue
          "bad name": {{}}
        keys:
          - id: a
            sha256: "{sha('x')}"
            roles: [predict]
          - id: b
            sha256: "{sha('y')}"
            roles: [read, sudo]
          - id: c
            sha256: "abc"
            roles: [read]
          - id: d
            sha256: "{sha('z')}"
            roles: [predict]
            workspace: nowhere
          - id: a
            sha256: "{sha('w')}"
            roles: [read]
          - id: e
            sha256: "{sha('x')}"
            roles: [read]
          - id: f
            sha256: "{sha('v')}"
            roles: []
            owner: me
        extra: 1
        """))
    assert found == {
        "workspaces.w1.models[1]": found["workspaces.w1.models[1]"],
        "workspaces.w1.models[2]": "glob '[unclosed' has an unclosed '['",
        "workspaces.w1.rate_limit.extra": "unknown key (allowed: per_second, burst)",
        "workspaces.w1.rate_limit.per_second": "must be a number > 0, got int 0",
        "workspaces.w1.rate_limit.burst": "must be a number >= 1, got float 0.5",
        "workspaces.w1.daily_predictions": "must be an integer >= 0, got int -1",
        "workspaces.w1.colour": "unknown key (allowed: models, rate_limit, daily_predictions)",
        "workspaces.bad name": found["workspaces.bad name"],
        "keys[0].workspace": "required for a key with the predict role",
        "keys[1].roles[1]": "unknown role 'sudo' (one of predict, read, operate, admin)",
        "keys[2].sha256": "must be 64 hex chars (the sha256 of the token)",
        "keys[3].workspace": "unknown workspace 'nowhere' (defined: ['bad name', 'w1'])",
        "keys[4].id": "duplicate id 'a' (also keys[0])",
        "keys[5].sha256": "duplicate hash (also keys[0]): two ids for one token",
        "keys[6].roles": "must be a non-empty list of predict, read, operate, admin, got list []",
        "keys[6].owner": "unknown key (allowed: id, sha256, roles, workspace)",
        "extra": "unknown top-level key (allowed: workspaces, keys)",
    }
    assert "characters outside" in found["workspaces.w1.models[1]"]


def test_error_message_lists_problems_one_per_line() -> None:
    with pytest.raises(AccessConfigError) as caught:
        parse_access("keys:\n  - id: x\n    sha256: nope\n    roles: [read]\n")
    assert str(caught.value).splitlines()[1] == "  keys[0].sha256: must be 64 hex chars (the sha256 of the token)"


def test_duplicate_mapping_keys_are_refused_with_their_path() -> None:
    found = problems("workspaces:\n  w: {}\n  w: {daily_predictions: 1}\n")
    assert list(found) == ["workspaces.w"]
    assert found["workspaces.w"].startswith("duplicate key 'w' at line 3")


def test_invalid_yaml_and_wrong_top_level() -> None:
    assert problems("keys: [\n")["$"].startswith("invalid YAML at line")
    assert problems("- a\n- b\n")["$"].startswith("top level must be a mapping")
    assert problems("keys: 3\n") == {"keys": "must be a list of keys, got int 3"}


def test_alias_expansion_is_bounded() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    found = problems("\n".join(lines) + "\n")
    assert "once aliases are expanded" in found["$"]


def test_rate_limit_burst_defaults_to_one_second() -> None:
    policy = parse_access("workspaces:\n  w: {rate_limit: {per_second: 50}}\n")
    assert policy.workspaces["w"].rate_limit == RateLimit(50.0, 50.0)
    policy = parse_access("workspaces:\n  w: {rate_limit: {per_second: 0.5}}\n")
    assert policy.workspaces["w"].rate_limit == RateLimit(0.5, 1.0)


def test_workspace_globs_allow_and_memoize() -> None:
    desk = parse_access(POLICY_TEXT).workspaces["desk-a"]
    assert desk.allows("tlob_tiny") and desk.allows("patchtst_small")
    assert not desk.allows("patchtst_small_v2") and not desk.allows("timesnet_base") and not desk.allows("TLOB_x")
    assert desk.allows("tlob_tiny")  # from the memo, same answer
    assert desk._memo == {"tlob_tiny": True, "patchtst_small": True, "patchtst_small_v2": False,
                          "timesnet_base": False, "TLOB_x": False}
    glob = parse_access('workspaces:\n  w: {models: ["m[0-2]", "x?"]}\n').workspaces["w"]
    assert glob.allows("m1") and not glob.allows("m3") and glob.allows("xy") and not glob.allows("xyz")


def test_authenticate_by_hash_and_break_glass() -> None:
    policy = parse_access(POLICY_TEXT)
    key = authenticate(policy, "token-a")
    assert isinstance(key, ApiKey) and key.id == "desk-a-engine"
    for token in (None, "", "token-b"):
        failure = authenticate(policy, token)
        assert isinstance(failure, Refusal) and failure.code == UNAUTHENTICATED
    glass = break_glass_key("the-admin-key")
    assert authenticate(policy, "the-admin-key") == authenticate(policy, "nope")
    admin = authenticate(policy, "the-admin-key", glass)
    assert isinstance(admin, ApiKey) and admin.id == BREAK_GLASS_ID and admin.has(Role.OPERATE)
    assert "the-admin-key" not in repr(glass)


def test_roles_are_independent_except_admin() -> None:
    policy = parse_access(POLICY_TEXT)
    by_id = {k.id: k for k in policy.keys.values()}
    allowed = {(key_id, role) for key_id, key in by_id.items() for role in Role if authorize(key, role).allowed}
    assert allowed == {("desk-a-engine", Role.PREDICT), ("reader", Role.READ), ("ops", Role.OPERATE),
                       *(("boss", role) for role in Role)}
    refused = authorize(by_id["ops"], Role.READ)
    assert refused.refusal is not None and refused.refusal.code == FORBIDDEN
    assert refused.refusal.details == {"key_id": "ops", "required_role": "read", "roles": ["operate"]}


def test_model_allowed_by_workspace() -> None:
    policy = parse_access(POLICY_TEXT)
    engine = policy.keys[sha("token-a")]
    boss = policy.keys[sha("token-boss")]
    assert model_allowed(engine, "tlob_tiny") and not model_allowed(engine, "timesnet_base")
    assert model_allowed(boss, "timesnet_base")  # no workspace: every model
    refusal = model_refusal(engine, "timesnet_base")
    assert refusal is not None and refusal.code == MODEL_NOT_ALLOWED
    assert refusal.details == {"model": "timesnet_base", "workspace": "desk-a"}
    assert model_refusal(engine, "tlob_tiny") is None


def test_bearer_token_sources() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc  ") == "abc"
    assert bearer_token("Basic abc", "xyz") == "xyz"
    assert bearer_token(None, " k ") == "k"
    assert bearer_token("Bearer ", None) is None
    assert bearer_token(None, None) is None


def test_route_table_covers_every_route_with_the_issue_roles() -> None:
    cases = {
        ("POST", "/predict"): Role.PREDICT, ("POST", "/predict/batch"): Role.PREDICT,
        ("POST", "/feedback"): Role.PREDICT, ("POST", "/route/test"): Role.PREDICT,
        ("GET", "/ws/predict"): Role.PREDICT,
        ("GET", "/models"): Role.READ, ("HEAD", "/models"): Role.READ, ("GET", "/models/tlob"): Role.READ,
        ("GET", "/models/tlob/versions"): Role.READ, ("GET", "/rules"): Role.READ, ("GET", "/stats"): Role.READ,
        ("GET", "/reload/events"): Role.READ, ("GET", "/switches"): Role.READ,
        ("GET", "/switches/op-1"): Role.READ, ("GET", "/usage"): Role.READ, ("GET", "/ws/switches"): Role.READ,
        ("GET", "/health/detailed"): Role.READ,
        ("POST", "/models/tlob/switch"): Role.OPERATE, ("POST", "/models/tlob/rollback"): Role.OPERATE,
        ("POST", "/switches/op-1/abort"): Role.OPERATE, ("POST", "/switches/op-1/promote"): Role.OPERATE,
        ("POST", "/reload/tlob"): Role.OPERATE, ("POST", "/config/reload"): Role.OPERATE,
        ("POST", "/models"): Role.ADMIN, ("DELETE", "/models/tlob/versions/2"): Role.ADMIN,
        ("GET", "/audit"): Role.ADMIN, ("GET", "/openapi.json"): Role.READ,
        ("GET", "/health"): OPEN, ("GET", "/health/ready"): OPEN, ("GET", "/metrics"): OPEN,
        ("GET", "/nowhere"): ANY_KEY, ("POST", "/models/tlob"): ANY_KEY, ("GET", "/models//versions"): ANY_KEY,
        ("POST", "/switches/op-1/explode"): ANY_KEY,
    }
    assert {case: route_access(*case) for case in cases} == cases
    assert len(ROUTE_ROLES) == 29 + 8 + 9  # + the rules API and /cluster, + the Open Inference Protocol


def test_route_table_matches_the_apps_routes() -> None:
    """Every route the service declares is in the table (a new route without a role fails here)."""
    root = Path(__file__).resolve().parents[2]
    source = "\n".join(p.read_text() for p in [root / "app.py", *sorted((root / "actors").rglob("*.py"))])
    declared = set()
    for method, template in re.findall(r'@app\.(get|post|delete|websocket)\("([^"]+)"\)', source):
        template = re.sub(r"<(?:any\([^)]*\):)?(\w+)>", r"{\1}", template)
        method = "GET" if method == "websocket" else method.upper()
        if "{action}" in template:
            declared |= {(method, template.replace("{action}", a)) for a in ("abort", "promote")}
        else:
            declared.add((method, template))
    declared |= {("POST", "/predict"), ("POST", "/predict/batch")}
    assert len(declared) >= 25  # the scan found the routes (it must not pass vacuously)
    missing = {route for route in declared if route not in ROUTE_ROLES}
    assert missing == set()


def test_admit_with_and_without_an_access_file() -> None:
    policy = parse_access(POLICY_TEXT)
    glass = break_glass_key("admin-secret")
    # No access file: predict and read open, operate/admin need the break-glass key.
    assert admit(None, Role.PREDICT, None) is ANONYMOUS
    assert admit(None, Role.READ, None) is ANONYMOUS
    refused = admit(None, Role.OPERATE, None, glass)
    assert isinstance(refused, Refusal) and refused.code == UNAUTHENTICATED
    admin = admit(None, Role.ADMIN, "admin-secret", glass)
    assert isinstance(admin, ApiKey) and admin.id == BREAK_GLASS_ID
    # With one: everything but the open routes needs a key.
    assert admit(policy, OPEN, None) is ANONYMOUS
    unauth = admit(policy, Role.READ, None)
    assert isinstance(unauth, Refusal) and unauth.code == UNAUTHENTICATED
    forbidden = admit(policy, Role.READ, "token-a")
    assert isinstance(forbidden, Refusal) and forbidden.code == FORBIDDEN
    engine = admit(policy, Role.PREDICT, "token-a")
    assert isinstance(engine, ApiKey) and engine.id == "desk-a-engine"
    any_key = admit(policy, ANY_KEY, "token-a")
    assert isinstance(any_key, ApiKey)
    glass_admin = admit(policy, Role.ADMIN, "admin-secret", glass)
    assert isinstance(glass_admin, ApiKey) and glass_admin.id == BREAK_GLASS_ID
