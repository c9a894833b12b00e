"""The rules API: the rules document as shared, versioned data (PUT, items, validate, export, import).

Reads are open like ``GET /rules``; every write is admin-guarded, validated exactly like
a reload, stored with a compare-and-set on the version (``If-Match``; 412 when stale),
and put in force on every replica through the command stream.
"""

from __future__ import annotations

from functools import partial

from quart import Response, request
from quart_trio import QuartTrio

from actors.core import rules_doc
from actors.core.errors import InvalidInput, VersionRequired, bad_request
from actors.web.quart_io import json_response, request_json
from actors.web.service import Service


def _if_match(required: bool) -> str | None:
    value = request.headers.get("If-Match", "").strip().strip('"')
    if not value and required:
        raise VersionRequired("version_required", "send If-Match: <version> (from GET /rules)",
                              {"header": "If-Match"})
    return value or None


async def _document() -> str:
    """The body as a document (YAML or JSON by Content-Type), re-serialised as the stored YAML."""
    raw = await request.get_data(cache=False)
    try:
        return rules_doc.dump(rules_doc.parse_body(raw, request.headers.get("Content-Type", "")))
    except rules_doc.DocumentError as exc:
        raise InvalidInput("invalid_document", str(exc), {"path": exc.path}) from exc


def _index(raw: str) -> int:
    if not raw.lstrip("-").isdigit():
        raise bad_request("the rule index must be an integer", index=raw[:20])
    return int(raw)


def register(app: QuartTrio, service: Service) -> None:
    store = service.rules

    @app.put("/rules")
    async def put_rules() -> Response:
        return json_response(await store.write(await _document(), _if_match(required=True)))

    @app.post("/rules/import")
    async def import_rules() -> Response:
        return json_response(await store.write(await _document(), _if_match(required=False)))

    @app.get("/rules/export")
    async def export_rules() -> Response:
        text, version = await store.read()
        response = Response(text, status=200, content_type="application/yaml")
        response.headers["ETag"] = f'"{version}"'
        response.headers["X-Rules-Source"] = store.source.kind
        return response

    @app.post("/rules/validate")
    async def validate_rules() -> Response:
        return json_response(await store.validate(await _document()))

    @app.post("/rules/items")
    async def add_item() -> Response:
        item = await request_json()
        at = request.args.get("index")
        index = _index(at) if at is not None else None
        return json_response(await store.edit(partial(rules_doc.add_item, item=item, index=index),
                                              _if_match(required=False)), 201)

    @app.patch("/rules/items/<index>")
    async def patch_item(index: str) -> Response:
        changes = await request_json()
        return json_response(await store.edit(partial(rules_doc.patch_item, index=_index(index), changes=changes),
                                              _if_match(required=False)))

    @app.delete("/rules/items/<index>")
    async def delete_item(index: str) -> Response:
        return json_response(await store.edit(partial(rules_doc.delete_item, index=_index(index)),
                                              _if_match(required=False)))
