"""The fuzzer's route list (tests/fuzz/routes.py) is every route the service serves, no more, no less."""

from __future__ import annotations

from actors.web.app import create_app
from actors.web.data_port import routes as data_routes
from actors.web.hot_path import FEED_PATH, HOT_PATHS
from tests.fuzz.conftest import Live
from tests.fuzz.routes import DATA, MAIN, WEBSOCKETS


async def test_route_list_matches_the_served_routes(live: Live) -> None:
    service = live.service
    url_map = create_app(service).url_map
    served = set()
    for rule in url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        if rule.websocket:
            served.add(("WS", rule.rule))
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            path = rule.rule.replace("<any(abort, promote):action>", "{action}")
            for concrete in (("abort", "promote") if "{action}" in path else (None,)):
                served.add((method, path.replace("{action}", concrete) if concrete else path))
    served |= {("POST", path) for path in HOT_PATHS}
    served.add(("WS", FEED_PATH))  # the switch feed is served by the lean path too, not a Quart view
    listed = {(r.method, r.path) for r in MAIN} | {("WS", path) for path in WEBSOCKETS}
    assert listed == served
    data_served = {(method, path) for path, methods in data_routes(service).items() for method in methods}
    assert {(r.method, r.path) for r in DATA} == data_served
