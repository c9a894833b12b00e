"""The API description matches the routes actually served, and docs/api.md matches the description."""

from __future__ import annotations

import re
from pathlib import Path

from actors.core.access import ROUTE_ROLES
from actors.web.app import create_app
from actors.web.hot_path import HOT_PATHS
from actors.web.openapi import ROUTES, markdown, openapi
from actors.web.websockets import FEED_PATH
from tests.conftest import running_app

ROOT = Path(__file__).resolve().parents[2]


def served_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, template) of every rule in the Quart url_map, the hot paths and the WebSockets."""
    served = {("POST", path) for path in HOT_PATHS} | {("GET", FEED_PATH)}  # the lean routes
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        template = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        choices = re.search(r"<any\(([^)]*)\):(\w+)>", rule.rule)
        templates = [template]
        if choices:
            options = [c.strip() for c in choices.group(1).split(",")]
            templates = [re.sub(r"<any\([^)]*\):\w+>", option, rule.rule) for option in options]
            templates = [re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", t) for t in templates]
        methods = {"GET"} if rule.websocket else set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        served |= {(method, t) for method in methods for t in templates}
    return served


async def test_the_table_describes_exactly_the_served_routes(config_path: Path) -> None:
    async with running_app(config_path) as h:
        served = served_routes(create_app(h.service))
    assert len(served) >= 29
    assert set(ROUTES) - served == set(), "described but not served"
    assert served - set(ROUTES) == set(), "served but not described"
    assert set(ROUTES) == set(ROUTE_ROLES), "every described route has a role and the other way round"
    websockets = {path for (_, path), route in ROUTES.items() if route.websocket}
    assert websockets == {"/ws/predict", "/ws/switches"}


async def test_openapi_json_is_served_and_complete(config_path: Path) -> None:
    async with running_app(config_path) as h:
        r = await h.client.get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["openapi"].startswith("3.1")
    operations = {(m.upper(), p): op for p, methods in document["paths"].items() for m, op in methods.items()}
    assert set(operations) == set(ROUTES)
    predict = operations[("POST", "/predict")]
    assert predict["x-role"] == "predict" and {"401", "403", "429", "503"} <= set(predict["responses"])
    assert predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("PredictRequest")
    assert operations[("GET", "/health")]["security"] == [] and "401" not in operations[("GET", "/health")][
        "responses"]
    assert operations[("GET", "/audit")]["x-role"] == "admin"
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', r.text.replace('":"', '": "'))
    assert refs and set(refs) <= set(document["components"]["schemas"])


def test_docs_api_md_is_up_to_date() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == markdown(), "run `make api-docs`"
    assert openapi()["paths"]["/usage"]["get"]["x-role"] == "read"
