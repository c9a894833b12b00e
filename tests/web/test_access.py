"""Access control end to end: a real app on a free port with an access file made by the keys command.

Every route x {no key, unknown key, each role}; rate limits and budgets under concurrent load;
the model allow-list (routed, by name, per batch item, WebSocket); hot reload and revocation;
WebSocket handshake refusals; CORS and security headers; TLS; no token in any log line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
import yaml

from actors.core.access import ROUTE_ROLES, Role
from actors.storage.access_file import keys_main
from actors.web.openapi import ROUTES
from tests.conftest import (
    ADMIN_KEY,
    Harness,
    fast_features,
    free_port,
    render_config,
    running_app,
    wait_ready,
    window_features,
)

ORIGIN = "https://app.example.com"


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a sibling and rename it over ``path``: the watcher never sees it half written."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def make_key(access: Path, key_id: str, *roles: str, workspace: str | None = None) -> str:
    out, err = io.StringIO(), io.StringIO()
    argv = ["create", "--file", str(access), "--id", key_id, *[a for r in roles for a in ("--role", r)]]
    if workspace is not None:
        argv += ["--workspace", workspace]
    assert keys_main(argv, out, err) == 0, err.getvalue()
    return out.getvalue().strip()


WORKSPACES = """\
workspaces:
  desk-a:
    models: ["fast", "backup"]
  desk-b: {}
  limited:
    models: ["fast"]
    rate_limit: {per_second: 0.001, burst: 5}
  budgeted:
    daily_predictions: 7
keys: []
"""


def access_config(repo: Path, extra: str = "") -> str:
    return render_config(repo) + (
        "  access:\n    file: access.yml\n    audit_file: audit.jsonl\n"
        f"    cors_origins: [\"{ORIGIN}\"]\n{extra}")


@pytest.fixture
def tokens(config_path: Path, repo: Path) -> dict[str, str]:
    """An access file beside the rules with one key per role (and per test workspace)."""
    access = config_path.parent / "access.yml"
    access.write_text(WORKSPACES)
    made = {
        "predict": make_key(access, "engine-a", "predict", workspace="desk-a"),
        "read": make_key(access, "dashboard", "read"),
        "operate": make_key(access, "ops", "operate"),
        "admin": make_key(access, "root", "admin"),
        "limited": make_key(access, "burst", "predict", workspace="limited"),
        "budgeted": make_key(access, "spender", "predict", workspace="budgeted"),
        "reader-a": make_key(access, "reader-a", "read", workspace="desk-a"),
    }
    config_path.write_text(access_config(repo))
    return made


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


# Requests that pass the gate without changing anything the other cases rely on.
BODIES: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/predict"): ("/predict", {"model_name": "fast", "features": fast_features()}),
    ("POST", "/predict/batch"): ("/predict/batch", {"requests": [{"model_name": "fast",
                                                                  "features": fast_features()}]}),
    ("POST", "/feedback"): ("/feedback", {"correlation_id": "c-1", "outcome": "up"}),
    ("POST", "/route/test"): ("/route/test", {"asset_class": "crypto", "horizon_ms": 5}),
    ("POST", "/models/{name}/switch"): ("/models/nosuch/switch", {"version": "1"}),
    ("POST", "/models/{name}/rollback"): ("/models/nosuch/rollback", None),
    ("POST", "/switches/{operation_id}/abort"): ("/switches/nosuch/abort", None),
    ("POST", "/switches/{operation_id}/promote"): ("/switches/nosuch/promote", None),
    ("POST", "/reload/{name}"): ("/reload/nosuch", None),
    ("POST", "/config/reload"): ("/config/reload", None),
    ("POST", "/models"): ("/models", {}),
    ("DELETE", "/models/{name}/versions/{version}"): ("/models/nosuch/versions/9", None),
}


def concrete(method: str, template: str) -> tuple[str, Any]:
    if (method, template) in BODIES:
        return BODIES[(method, template)]
    return template.replace("{name}", "fast").replace("{operation_id}", "nosuch"), None


HTTP_ROUTES = sorted(route for route, spec in ROUTES.items() if not spec.websocket)
CALLERS = ("none", "unknown", "predict", "read", "operate", "admin")
GRANTS = {"predict": {Role.PREDICT}, "read": {Role.READ}, "operate": {Role.OPERATE}, "admin": set(Role)}


def expected_refusal(route: tuple[str, str], caller: str) -> int | None:
    """401/403 when the gate refuses ``caller`` on ``route``, None when it lets the request through."""
    access = ROUTE_ROLES[route]
    if access == "open":
        return None
    if caller in ("none", "unknown"):
        return 401
    return None if access in GRANTS[caller] else 403


async def test_every_route_for_every_caller(config_path: Path, tokens: dict[str, str]) -> None:
    """The table: each route x {no key, unknown key, each role} gets the gate's expected answer."""
    async with running_app(config_path) as h:
        await wait_ready(h)
        checked = 0
        for route in HTTP_ROUTES:
            method, _ = route
            path, body = concrete(*route)
            for caller in CALLERS:
                token = {"none": None, "unknown": "not-a-known-token"}.get(caller, tokens.get(caller))
                r = await h.client.request(method, path, headers=auth(token),
                                           json=body if body is not None else None)
                want = expected_refusal(route, caller)
                where = f"{method} {path} as {caller}: {r.status_code} {r.text[:200]}"
                if want is None:
                    assert r.status_code not in (401, 403), where
                else:
                    assert r.status_code == want, where
                    code = r.json()["error"]["code"]
                    assert code == ("unauthenticated" if want == 401 else "forbidden"), where
                    if want == 401:
                        assert r.headers["www-authenticate"].startswith("Bearer"), where
                checked += 1
        assert checked == len(HTTP_ROUTES) * len(CALLERS) and checked >= 27 * 6
        # MODEL_ROUTER_ADMIN_KEY is still the break-glass admin, by either header.
        assert (await h.client.get("/audit", headers=auth(ADMIN_KEY))).status_code == 200
        assert (await h.client.get("/audit", headers={"X-Admin-Key": ADMIN_KEY})).status_code == 200
        assert (await h.client.get("/audit", headers={"X-API-Key": tokens["admin"]})).status_code == 200
        # An unknown path needs a key before it is a 404: nothing is learnt without one.
        assert (await h.client.get("/nowhere")).status_code == 401
        assert (await h.client.get("/nowhere", headers=auth(tokens["read"]))).status_code == 404


async def test_model_allow_list_routed_named_batch_and_refusal_metrics(config_path: Path,
                                                                        tokens: dict[str, str]) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        key = auth(tokens["predict"])  # desk-a: fast and backup only
        routed_ok = await h.client.post("/predict", headers=key, json={
            "asset_class": "crypto", "horizon_ms": 5, "features": fast_features()})
        assert routed_ok.status_code == 200 and routed_ok.json()["model"]["name"] == "fast"
        routed_no = await h.client.post("/predict", headers=key, json={
            "asset_class": "crypto", "horizon_ms": 90_000, "features": window_features()})
        assert routed_no.status_code == 403
        error = routed_no.json()["error"]
        assert error["code"] == "model_not_allowed"
        assert error["details"] == {"model": "windowed", "workspace": "desk-a"}
        named = await h.client.post("/predict", headers=key, json={"model_name": "windowed",
                                                                  "features": window_features()})
        assert named.status_code == 403 and named.json()["error"]["details"]["model"] == "windowed"
        batch = await h.client.post("/predict/batch", headers=key, json={"requests": [
            {"model_name": "fast", "features": fast_features()},
            {"model_name": "windowed", "features": window_features()},
            {"asset_class": "crypto", "horizon_ms": 90_000, "features": window_features()},
        ]})
        assert batch.status_code == 200
        items = batch.json()["predictions"]
        assert items[0]["model"]["name"] == "fast"
        for item in items[1:]:
            assert item["status"] == 403 and item["error"]["code"] == "model_not_allowed"
            assert item["error"]["details"]["model"] == "windowed"
        # Other workspaces' keys and admin are not limited.
        admin_named = await h.client.post("/predict", headers=auth(tokens["admin"]), json={
            "model_name": "windowed", "features": window_features()})
        assert admin_named.status_code == 200
        metrics = (await h.client.get("/metrics")).text
        assert 'model_router_access_refusals_total{code="model_not_allowed",workspace="desk-a"} 4.0' in metrics
        usage = (await h.client.get("/usage", headers=auth(tokens["reader-a"]))).json()
        desk = usage["workspaces"]["desk-a"]
        assert list(usage["workspaces"]) == ["desk-a"]
        assert desk["predictions"] == 2 and desk["by_model"] == {"fast": 2}
        assert desk["rejections"] == {"model_not_allowed": 4}
        assert desk["keys"]["engine-a"]["predictions"] == 2
        other = await h.client.get("/usage?workspace=desk-b", headers=auth(tokens["reader-a"]))
        assert other.status_code == 403
        everything = (await h.client.get("/usage", headers=auth(tokens["admin"]))).json()
        assert set(everything["workspaces"]) >= {"desk-a", "desk-b", "limited", "budgeted"}


async def test_rate_limit_under_concurrent_load(config_path: Path, tokens: dict[str, str]) -> None:
    """Burst 5, refill ~0: of 20 concurrent requests exactly 5 pass; the rest are 429 with Retry-After."""
    async with running_app(config_path) as h:
        await wait_ready(h)
        statuses: list[int] = []
        retry_after: list[str] = []

        async def one() -> None:
            r = await h.client.post("/predict", headers=auth(tokens["limited"]),
                                    json={"model_name": "fast", "features": fast_features()})
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "rate_limited"
                retry_after.append(r.headers["retry-after"])

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        assert sorted(statuses) == [200] * 5 + [429] * 15
        assert all(int(value) >= 1 for value in retry_after)
        # Another key is not slowed by this one's bucket.
        other = await h.client.post("/predict", headers=auth(tokens["predict"]),
                                    json={"model_name": "fast", "features": fast_features()})
        assert other.status_code == 200


async def test_budget_under_concurrent_load_never_overspends(config_path: Path, tokens: dict[str, str]) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        statuses: list[int] = []

        async def one() -> None:
            r = await h.client.post("/predict", headers=auth(tokens["budgeted"]),
                                    json={"model_name": "fast", "features": fast_features()})
            statuses.append(r.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
        assert statuses == [200] * 5
        too_big = await h.client.post("/predict/batch", headers=auth(tokens["budgeted"]), json={
            "requests": [{"model_name": "fast", "features": fast_features()}] * 3})
        assert too_big.status_code == 429
        error = too_big.json()["error"]
        assert error["code"] == "budget_exhausted" and error["details"]["reset_at"].endswith("Z")
        assert error["details"]["limit"] == 7
        statuses.clear()
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)
        assert sorted(statuses) == [200] * 2 + [429] * 8


async def test_an_access_file_truncated_mid_write_keeps_every_key(config_path: Path,
                                                                   tokens: dict[str, str]) -> None:
    """An editor truncates, then writes: a reload between the two must not lock every client out."""
    access = config_path.parent / "access.yml"
    whole = access.read_text()
    async with running_app(config_path) as h:
        watcher = h.service.watcher
        seen = watcher.attempts
        access.write_text("")  # the truncate, with the write still to come
        with trio.fail_after(5):
            event = await watcher.wait_for_attempt(seen)
        assert not event.success and "empty" in (event.error or ""), event
        assert event.details[0]["path"] == "$"
        assert (await h.client.get("/rules", headers=auth(tokens["read"]))).status_code == 200
        seen = watcher.attempts
        replace_file(access, whole)  # the whole file lands
        with trio.fail_after(5):
            event = await watcher.wait_for_attempt(seen)
            while not event.success:  # a reload the truncate queued may still come first
                seen = watcher.attempts
                event = await watcher.wait_for_attempt(seen)
        assert (await h.client.get("/rules", headers=auth(tokens["read"]))).status_code == 200


async def test_hot_reload_revocation_and_invalid_file_keeps_policy(config_path: Path,
                                                                   tokens: dict[str, str]) -> None:
    access = config_path.parent / "access.yml"
    async with running_app(config_path) as h:
        watcher = h.service.watcher
        assert (await h.client.get("/rules", headers=auth(tokens["read"]))).status_code == 200
        # Revoked by the keys command: the file watch reloads, and the key is gone after that one reload.
        seen = watcher.attempts
        assert keys_main(["revoke", "--file", str(access), "--id", "dashboard"], io.StringIO(), io.StringIO()) == 0
        with trio.fail_after(5):
            event = await watcher.wait_for_attempt(seen)
        assert event.success and event.trigger == "file"
        assert (await h.client.get("/rules", headers=auth(tokens["read"]))).status_code == 401
        # A new key works after the next reload (by the API this time).
        new_token = make_key(access, "late", "read")
        reload = await h.client.post("/config/reload", headers=auth(tokens["operate"]))
        assert reload.status_code == 200
        assert (await h.client.get("/rules", headers=auth(new_token))).status_code == 200
        # An invalid file keeps the last good policy, and the history says why, by path.
        data = yaml.safe_load(access.read_text())
        data["workspaces"]["limited"]["rate_limit"]["burst"] = 0.5
        seen = watcher.attempts
        replace_file(access, yaml.safe_dump(data))  # whole, as an editor saving by rename
        with trio.fail_after(5):  # the reload the previous edit queued may come first
            event = await watcher.wait_for_attempt(seen)
            while event.success:
                seen = watcher.attempts
                event = await watcher.wait_for_attempt(seen)
        assert "access" in (event.error or "")
        assert {d["path"] for d in event.details} == {"workspaces.limited.rate_limit.burst"}
        assert (await h.client.get("/rules", headers=auth(new_token))).status_code == 200
        events = (await h.client.get("/reload/events", headers=auth(new_token))).json()["events"]
        assert events[0]["success"] is False
        assert events[0]["details"][0]["path"] == "workspaces.limited.rate_limit.burst"
        # The audit trail has the API reload with its caller, the file reloads, and the keys reloads.
        records = (await h.client.get("/audit?limit=50", headers=auth(tokens["admin"]))).json()["records"]
        actions = [(r["action"], r["outcome"], r["key_id"]) for r in records]
        assert ("config_reload", "ok", "ops") in actions
        assert ("config_reload", "failed", None) in actions
        assert sum(1 for a in actions if a[0] == "keys_reload") >= 2


async def test_refused_admin_calls_and_commands_are_audited(config_path: Path, tokens: dict[str, str]) -> None:
    async with running_app(config_path) as h:
        refused = await h.client.post("/models/fast/rollback", headers=auth(tokens["read"]))
        assert refused.status_code == 403
        failed = await h.client.post("/models/nosuch/rollback", headers=auth(tokens["operate"]))
        assert failed.status_code in (404, 409)
        records = (await h.client.get("/audit?limit=10", headers=auth(tokens["admin"]))).json()["records"]
        assert records[0]["action"] == "rollback" and records[0]["outcome"] == "failed"
        assert records[0]["key_id"] == "ops" and records[0]["target"] == "nosuch"
        assert records[1]["action"] == "refused" and records[1]["target"] == "POST /models/fast/rollback"
        assert records[1]["details"] == {"code": "forbidden"} and records[1]["client"] == "127.0.0.1"
        assert (await h.client.get("/audit?limit=0", headers=auth(tokens["admin"]))).status_code == 400
    lines = (config_path.parent / "audit.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and all(json.loads(line)["time"].endswith("Z") for line in lines)


async def test_websocket_handshake_refused_with_http_status(config_path: Path, tokens: dict[str, str]) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        ws_url = h.url.replace("http://", "ws://")
        for path, headers, status in (("/ws/predict", [], 401),
                                      ("/ws/predict", [("Authorization", f"Bearer {tokens['read']}")], 403),
                                      ("/ws/switches", [("Authorization", "Bearer wrong")], 401)):
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with trio_websocket.open_websocket_url(ws_url + path, extra_headers=headers):
                    raise AssertionError(f"{path}: the handshake was accepted")
            assert rejected.value.status_code == status
            assert json.loads(rejected.value.body)["error"]["code"] in ("unauthenticated", "forbidden")
        async with trio_websocket.open_websocket_url(
                ws_url + "/ws/predict", extra_headers=[("Authorization", f"Bearer {tokens['predict']}")]) as ws:
            await ws.send_message(json.dumps({"model_name": "fast", "features": fast_features()}))
            answer = json.loads(await ws.get_message())
            assert answer["type"] == "prediction" and answer["model"]["name"] == "fast"
            await ws.send_message(json.dumps({"model_name": "windowed", "features": window_features()}))
            refused = json.loads(await ws.get_message())
            assert refused["type"] == "error" and refused["status"] == 403
            assert refused["error"]["code"] == "model_not_allowed"


async def test_cors_and_security_headers(config_path: Path, tokens: dict[str, str]) -> None:
    async with running_app(config_path) as h:
        preflight = await h.client.options("/predict", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        other = await h.client.options("/predict", headers={
            "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
        answer = await h.client.get("/rules", headers={"Origin": ORIGIN, **auth(tokens["read"])})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        foreign = await h.client.get("/rules", headers={"Origin": "https://evil.example.com", **auth(tokens["read"])})
        assert "access-control-allow-origin" not in foreign.headers
        refused = await h.client.get("/rules", headers={"Origin": ORIGIN})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
        assert refused.headers["x-content-type-options"] == "nosniff"
        hot = await h.client.post("/predict", headers=auth(tokens["predict"]),
                                  json={"model_name": "fast", "features": fast_features()})
        assert hot.headers["cache-control"] == "no-store"


async def test_no_token_in_any_log_line(config_path: Path, tokens: dict[str, str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(config_path, access_log=True) as h:
        await wait_ready(h)
        for token in (*tokens.values(), "unknown-token-xyz"):
            for path in ("/rules", "/audit", "/models/fast/rollback"):
                await h.client.get(path, headers=auth(token))
            await h.client.post("/predict", headers={"X-API-Key": token},
                                json={"model_name": "windowed", "features": window_features()})
        await h.client.post("/config/reload", headers=auth(tokens["operate"]))
    text = caplog.text + (config_path.parent / "audit.jsonl").read_text()
    assert "refused" in text and "/rules" in text  # the capture saw the run
    for token in (*tokens.values(), ADMIN_KEY, "unknown-token-xyz"):
        assert token not in text and token[:12] not in text


@asynccontextmanager
async def tls_app(config_path: Path, tmp_path: Path) -> AsyncIterator[tuple[Harness, ssl.SSLContext]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(cert))
    async with running_app(config_path, certfile=cert, keyfile=key) as h:
        yield h, context


async def test_tls_on_the_main_port(config_path: Path, tmp_path: Path, tokens: dict[str, str]) -> None:
    async with tls_app(config_path, tmp_path) as (h, context):
        base = h.url.replace("http://", "https://")
        assert base.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=base, verify=context, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/rules", headers=auth(tokens["read"]))).status_code == 200
            assert (await client.get("/rules")).status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on a TLS port
            await httpx.AsyncClient(base_url=base.replace("https://", "http://"), timeout=5).get("/health")


async def test_without_access_file_predict_and_read_stay_open(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        assert (await h.predict(model_name="fast", features=fast_features())).status_code == 200
        assert (await h.client.get("/rules")).status_code == 200
        assert (await h.client.get("/usage")).status_code == 200
        assert (await h.client.post("/config/reload")).status_code == 401
        assert (await h.client.get("/audit", headers=auth(ADMIN_KEY))).status_code == 200
        usage = (await h.client.get("/usage")).json()
        assert usage["workspaces"] == {}
    async with running_app(config_path, admin_key=None) as h:
        r = await h.client.get("/audit")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


async def test_usage_and_budget_survive_a_restart_without_redis(config_path: Path, tokens: dict[str, str]) -> None:
    """Counts are flushed to the usage file at shutdown, read back at start, and seed the local budget."""
    body = {"model_name": "fast", "features": fast_features()}
    async with running_app(config_path) as h:
        await wait_ready(h)
        for _ in range(5):
            assert (await h.client.post("/predict", headers=auth(tokens["budgeted"]), json=body)).status_code == 200
    assert (config_path.parent / "access.usage.json").exists()
    async with running_app(config_path) as h:
        await wait_ready(h)
        usage = (await h.client.get("/usage?workspace=budgeted", headers=auth(tokens["admin"]))).json()
        assert usage["workspaces"]["budgeted"]["predictions"] == 5
        assert usage["workspaces"]["budgeted"]["budget"] == {"daily_predictions": 7, "used": 5, "left": 2}
        statuses = [(await h.client.post("/predict", headers=auth(tokens["budgeted"]), json=body)).status_code
                    for _ in range(4)]
        assert statuses == [200, 200, 429, 429]


def test_keys_command_is_dispatched_by_app_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    access = tmp_path / "access.yml"
    assert app.main(["keys", "create", "--file", str(access), "--id", "ops", "--role", "operate"]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 32 and token not in access.read_text()
    assert app.main(["keys", "list", "--file", str(access)]) == 0
    assert capsys.readouterr().out == "ops\toperate\t-\n"
    assert app.main(["keys", "revoke", "--file", str(access), "--id", "nobody"]) == 2


async def test_tls_on_the_data_plane_too(config_path: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(cert))
    async with running_app(config_path, certfile=cert, keyfile=key, data_port=free_port()) as h:
        assert h.data_url is not None and h.data_url.startswith("https://")
        async with httpx.AsyncClient(base_url=h.data_url, verify=context, timeout=10) as client:
            r = await client.post("/predict", json={"model_name": "fast", "features": fast_features()})
            assert r.status_code == 200 and r.json()["model"]["name"] == "fast"
            assert r.headers["x-content-type-options"] == "nosniff"
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on a TLS port
            await httpx.AsyncClient(base_url=h.data_url.replace("https://", "http://"), timeout=5).get("/health")


async def test_the_data_plane_applies_the_same_access_checks(config_path: Path, tokens: dict[str, str]) -> None:
    async with running_app(config_path, data_port=free_port()) as h:
        assert h.data_url is not None
        body = {"model_name": "fast", "features": fast_features()}
        async with httpx.AsyncClient(base_url=h.data_url, timeout=10) as data:
            for headers in ({}, auth("unknown-token"), auth(tokens["read"]), auth(tokens["predict"])):
                main = await h.client.post("/predict", json=body, headers=headers)
                other = await data.post("/predict", json=body, headers=headers)
                assert other.status_code == main.status_code, (headers, main.text, other.text)
                assert other.json()["error"]["code"] == main.json()["error"]["code"] if main.status_code >= 400 \
                    else other.json()["model"] == main.json()["model"]
                if main.status_code == 401:
                    assert other.headers["www-authenticate"] == main.headers["www-authenticate"]
            assert (await data.get("/health")).status_code == 200  # open, as on the main port
