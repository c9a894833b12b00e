"""The Open Inference Protocol endpoints, the same for both ports (``docs/oip.md``).

Each port turns an HTTP request into an :class:`OipCall` and sends back the
:class:`OipAnswer` of :meth:`OipEndpoints.answer`; nothing else differs between them.
That one call is the boundary an access layer gates: wrap ``answer`` (an
``OipHandler``) and both ports are covered, with the endpoint, model and version of the
call known before any work is done.

Errors use the protocol's ``{"error": "<code>: <message>"}`` body (not the service's
usual shape: Triton and KServe clients read that string), with the status
``actors/web/errors.py`` gives the domain error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import attrs
import orjson

from actors.core.access import ANONYMOUS, ApiKey
from actors.core.errors import RouterError, not_found
from actors.serving import oip
from actors.web.bodies import parse_json
from actors.web.errors import HttpProtocolError, http_status, internal_error, log_error
from actors.web.service import SERVICE_NAME, SERVICE_VERSION, Service

HEADER_LENGTH = "inference-header-content-length"
ENDPOINTS = ("live", "ready", "server", "model", "model_ready", "infer")


@attrs.frozen
class OipCall:
    """One protocol request: which endpoint, for which model and version, with its body."""

    endpoint: str
    model: str | None = None
    version: str | None = None
    body: bytes = b""
    header_length: str | None = None
    # Who asks (the access gate admitted it): budgets, allow-lists and usage apply as on /predict.
    key: ApiKey = ANONYMOUS


@attrs.frozen
class OipAnswer:
    status: int
    body: bytes
    header_length: int | None = None

    @property
    def content_type(self) -> str:
        return "application/octet-stream" if self.header_length is not None else "application/json"

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Extra headers: the JSON header length when a binary tail follows it."""
        if self.header_length is None:
            return ()
        return (("inference-header-content-length", str(self.header_length)),)


OipHandler = Callable[[OipCall], Awaitable[OipAnswer]]


def model_call(path: str, body: bytes = b"", header_length: str | None = None, key: ApiKey = ANONYMOUS) -> OipCall:
    """The call a raw ``/v2/models/...`` path names (the data plane parses paths itself)."""
    route = oip.match_model_path(path)
    if route is None:
        return OipCall("unknown", path, key=key)
    kind, name, version = route
    return OipCall({"model": "model", "ready": "model_ready", "infer": "infer"}[kind], name, version, body,
                   header_length, key)


def _json(status: int, payload: Any) -> OipAnswer:
    return OipAnswer(status, orjson.dumps(payload))


@attrs.define
class OipEndpoints:
    service: Service

    async def answer(self, call: OipCall) -> OipAnswer:
        """The answer to one call; every failure becomes the protocol's error body."""
        where = f"OIP {call.endpoint} {call.model or ''}".rstrip()
        try:
            return await self._answer(call)
        except RouterError as error:
            log_error(where, error)
            return _json(http_status(error), oip.error_body(error))
        except Exception as exc:
            error = internal_error(where, exc)
            return _json(http_status(error), oip.error_body(error))

    async def _answer(self, call: OipCall) -> OipAnswer:
        if call.endpoint == "live":
            return _json(200, {"live": True})
        if call.endpoint == "ready":
            ready = not self.service.readiness()
            return _json(200 if ready else 503, {"ready": ready})
        if call.endpoint == "server":
            return _json(200, oip.server_metadata(SERVICE_NAME, SERVICE_VERSION))
        if call.model is None or call.endpoint not in ENDPOINTS:
            raise not_found("not_found", f"no OIP route for {call.model or call.endpoint}")
        if call.endpoint == "model_ready":
            return self.model_ready(call.model, call.version)
        layout = await self.layout(call.model, call.version)
        if call.endpoint == "model":
            return _json(200, oip.model_metadata(layout, self.versions(call.model)))
        return await self.infer(call, layout)

    def versions(self, name: str) -> list[str]:
        excluded = self.service.transitions.excluded(name)
        found = [v for v in self.service.cache.view.catalog.get(name, ()) if v not in excluded]
        return sorted(found, key=lambda v: (int(v), v) if v.isdigit() else (0, v))

    def version_of(self, name: str, version: str | None) -> str:
        """The version a call is about: the one named, else the one serving the model."""
        if version is not None:
            if version not in self.versions(name):
                self.unknown(name, version)
            return version
        serving = self.service.predictor.serving_version(name)
        if serving is None:
            self.unknown(name, None)
        return serving

    def unknown(self, name: str, version: str | None) -> NoReturn:
        catalog = self.service.cache.view.catalog
        if name not in catalog:
            raise not_found("model_not_found", f"model {name!r} is not in the repository", model=name)
        raise not_found("version_not_found", f"model {name!r} has no version {version!r}",
                        model=name, version=version, available=self.versions(name))

    async def layout(self, name: str, version: str | None) -> oip.Layout:
        """The version's tensor layout from its metadata (loading the model if it is not loaded)."""
        chosen = version if version is not None else self.service.predictor.serving_version(name)
        cache = self.service.cache
        # On a miss the cache rescans the repository, so a model just copied in is found
        # exactly as /predict finds it; unknown names and versions raise its 404s.
        model = cache.lookup(name, chosen) or await cache.get(name, chosen)
        meta = model.metadata
        return oip.Layout(model.name, model.version, meta.features, meta.window, meta.labels, meta.framework)

    def model_ready(self, name: str, version: str | None) -> OipAnswer:
        """Ready: the version is loaded and its circuit breaker is not open (no load is started)."""
        if name not in self.service.cache.view.catalog:
            self.unknown(name, version)
        chosen = self.version_of(name, version)
        model = self.service.cache.lookup(name, chosen)
        ready = model is not None and not self.service.health.breakers.is_open((name, chosen))
        return _json(200 if ready else 503, {"name": name, "ready": ready})

    async def infer(self, call: OipCall, layout: oip.Layout) -> OipAnswer:
        header, binary = oip.split_body(call.body, call.header_length)
        parsed = oip.parse_infer(parse_json(header), binary, layout)
        assert call.model is not None
        answer = await self.service.gate.predict(self.service.predictor, call.key,
                                                 oip.batch_body(parsed, call.model, call.version), batch=True)
        failure = oip.first_failure(answer["predictions"])
        if failure is not None:
            # The predictor already chose the status (errors.http_status); this only logs it.
            log_error(f"OIP infer {call.model}", HttpProtocolError(failure.status, "row_failed", failure.message),
                      parsed.correlation_ids[failure.row])
            return _json(failure.status, oip.error_body(failure.message))
        body, tail = oip.infer_response(parsed, layout, answer["predictions"])
        head = orjson.dumps(body)
        if not tail:
            return OipAnswer(200, head)
        return OipAnswer(200, head + tail, len(head))



def oip_handler(service: Service) -> OipHandler:
    """The handler both ports call for every OIP request: the one place to wrap with an access check."""
    return OipEndpoints(service).answer
