"""Every route the service serves, in one place: the fuzzer walks this list.

Kept apart from the tests so it can be checked against ``GET /openapi.json`` once that
document exists (same method, same path template, same port). ``tests/fuzz/test_routes.py``
checks it against the Quart URL map, the hot path and the data port's route table, so a
route added without a line here fails the suite.
"""

from __future__ import annotations

from typing import Literal

import attrs

# What the body is: a JSON request ("json"), an optional JSON object ("optional": empty
# means {}), or nothing read at all ("none").
BodyKind = Literal["json", "optional", "none"]
# Which body shape the fuzzer aims near (unknown fields, wrong types) besides pure noise.
Shape = Literal["predict", "batch", "route", "register", "switch", "rollback", "feedback", "none"]


@attrs.frozen
class Route:
    method: str
    path: str  # Quart template: <name> is a path parameter
    port: Literal["main", "data"]
    body: BodyKind = "none"
    shape: Shape = "none"
    admin: bool = False
    # 503 is documented here and only here (model availability, readiness); any other 5xx fails.
    may_503: bool = False
    # The Open Inference Protocol answers errors in its own form, {"error": "<message>"}.
    oip: bool = False

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(part[1:-1].rpartition(":")[2] for part in self.path.split("/")
                     if part.startswith("<") and part.endswith(">"))


MAIN: tuple[Route, ...] = (
    # actors/web/hot_path.py
    Route("POST", "/predict", "main", "json", "predict", may_503=True),
    Route("POST", "/predict/batch", "main", "json", "batch", may_503=True),
    # actors/web/routes/health.py
    Route("GET", "/health", "main"),
    Route("GET", "/health/ready", "main", may_503=True),
    Route("GET", "/health/detailed", "main"),
    Route("GET", "/metrics", "main"),
    # actors/web/routes/models.py
    Route("GET", "/models", "main"),
    Route("GET", "/models/<name>", "main"),
    Route("GET", "/models/<name>/versions", "main"),
    Route("POST", "/reload/<name>", "main", admin=True, may_503=True),
    Route("POST", "/models", "main", "json", "register", admin=True),
    Route("DELETE", "/models/<name>/versions/<version>", "main", admin=True),
    # actors/web/routes/rules.py
    Route("GET", "/rules", "main"),
    Route("POST", "/route/test", "main", "json", "route"),
    Route("POST", "/config/reload", "main", admin=True),
    Route("GET", "/stats", "main"),
    Route("GET", "/reload/events", "main"),
    # actors/web/routes/switches.py
    Route("POST", "/models/<name>/switch", "main", "json", "switch", admin=True, may_503=True),
    Route("POST", "/models/<name>/rollback", "main", "optional", "rollback", admin=True),
    Route("GET", "/switches", "main"),
    Route("GET", "/switches/<operation_id>", "main"),
    Route("POST", "/switches/<operation_id>/abort", "main", admin=True),
    Route("POST", "/switches/<operation_id>/promote", "main", admin=True),
    Route("POST", "/feedback", "main", "json", "feedback"),
    # actors/web/routes/access.py and api.py
    Route("GET", "/usage", "main"),
    Route("GET", "/audit", "main", admin=True),
    Route("GET", "/openapi.json", "main"),
    # actors/web/routes/rules_api.py and cluster.py
    Route("PUT", "/rules", "main", "json", admin=True),
    Route("POST", "/rules/import", "main", "json", admin=True),
    Route("GET", "/rules/export", "main"),
    Route("POST", "/rules/validate", "main", "json"),
    Route("POST", "/rules/items", "main", "json", admin=True),
    Route("PATCH", "/rules/items/<index>", "main", "json", admin=True),
    Route("DELETE", "/rules/items/<index>", "main", admin=True),
    Route("GET", "/cluster", "main"),
    # actors/web/routes/oip.py: the Open Inference Protocol
    *(Route(method, path, "main", body, may_503=True, oip=True) for method, path, body in (
        ("GET", "/v2", "none"), ("GET", "/v2/health/live", "none"), ("GET", "/v2/health/ready", "none"),
        ("GET", "/v2/models/<name>", "none"), ("GET", "/v2/models/<name>/versions/<version>", "none"),
        ("GET", "/v2/models/<name>/ready", "none"), ("GET", "/v2/models/<name>/versions/<version>/ready", "none"),
        ("POST", "/v2/models/<name>/infer", "json"), ("POST", "/v2/models/<name>/versions/<version>/infer", "json"),
    )),
)

# actors/web/app.py: WebSocket routes on the main port.
WEBSOCKETS: tuple[str, ...] = ("/ws/predict", "/ws/switches")

# actors/web/data_port.py
DATA: tuple[Route, ...] = (
    Route("POST", "/predict", "data", "json", "predict", may_503=True),
    Route("POST", "/predict/batch", "data", "json", "batch", may_503=True),
    Route("GET", "/health", "data"),
    Route("GET", "/health/ready", "data", may_503=True),
    Route("GET", "/v2", "data", may_503=True, oip=True),
    Route("GET", "/v2/health/live", "data", may_503=True, oip=True),
    Route("GET", "/v2/health/ready", "data", may_503=True, oip=True),
)

ALL: tuple[Route, ...] = MAIN + DATA

# Error codes a documented 503 may carry: no model could answer, or one failed while answering.
# (/health/ready's 503 is its not-ready body, not an error.)
AVAILABILITY_CODES = frozenset({"model_unavailable", "inference_failed", "circuit_open"})
