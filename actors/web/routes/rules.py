"""Rules: the rules in force, a routing probe, config reloads and their history."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from actors.core.commands import ReloadConfig
from actors.core.errors import InvalidInput, bad_request
from actors.serving.request_shape import parse_request
from actors.web.quart_io import caller, json_response, request_object
from actors.web.service import Service


def register(app: QuartTrio, service: Service) -> None:
    @app.get("/rules")
    async def rules() -> Response:
        active = service.router.active
        response = json_response({**active.config.to_dict(), "generation": active.generation,
                                  "activated_at": active.activated_at, "version": service.rules_version(),
                                  "source": service.rules.source.kind})
        response.headers["ETag"] = f'"{service.rules_version()}"'  # what PUT /rules takes as If-Match
        return response

    @app.post("/route/test")
    async def route_test() -> Response:
        body = await request_object("asset_class and horizon_ms")
        probe = parse_request({"features": {}, **{k: v for k, v in body.items()
                                                  if k in ("asset_class", "horizon_ms", "symbol")}})
        selection = service.router.select(probe.asset_class or "", probe.horizon_ms or 0.0, probe.symbol)
        snapshot = service.router.active.snapshot
        return json_response({
            "model": selection.model, "rule_index": selection.rule_index,
            "description": selection.description, "fallback": selection.fallback,
            "config_hash": selection.config_hash,
            "horizon_bucket": snapshot.bucket_label(snapshot.horizon_bucket(probe.horizon_ms or 0.0)),
        })

    @app.post("/config/reload")
    async def config_reload() -> Response:
        event = await service.commands.submit(ReloadConfig("api"), caller())
        if event.success:
            return json_response({"status": "reloaded", "event": event.to_dict()})
        raise InvalidInput("invalid_config", event.error or "reload failed",
                           {"kept_config_hash": event.config_hash, "problems": list(event.details)})

    @app.get("/stats")
    async def stats() -> Response:
        return json_response(service.watcher.history.stats(len(service.router.config.rules)))

    @app.get("/reload/events")
    async def reload_events() -> Response:
        raw = request.args.get("limit", "20")
        limit_max = service.watcher.history.limit
        if not raw.isdigit() or not 1 <= int(raw) <= limit_max:
            raise bad_request(f"'limit' must be an integer 1..{limit_max}", limit=raw[:20])
        events = service.watcher.history.recent(int(raw))
        return json_response({"events": [e.to_dict() for e in events], "count": len(events)})
