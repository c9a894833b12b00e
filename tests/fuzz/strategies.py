"""Hypothesis strategies for bad input: bodies, path parameters, query strings, headers.

Each strategy yields what goes on the wire (bytes or an already-encoded path segment), so
a failing example prints exactly what was sent. Bodies mix pure noise (random bytes,
truncated JSON, non-UTF-8) with near-valid requests whose fields have wrong types,
non-finite or huge numbers, deep nesting, 1 MB strings and unknown fields: noise tests
the parser, near-valid bodies get past it into the predictor and the commands.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY, FAST_FEATURES, WINDOW_FEATURES

MB = 1024 * 1024
DEEP = 10_000
# Tokens a JSON encoder never writes, spliced in through placeholders.
RAW_TOKENS = ("NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "1" * 5000,
              "-" + "9" * 400, "0x10", "01", "+1", ".5", "1.", "true1", "nul")

_RAW = "\u0000raw:"


def raw(token: str) -> str:
    """A placeholder :func:`encode` replaces with the bare token."""
    return f"{_RAW}{token}"


def encode(value: Any) -> bytes:
    text = json.dumps(value, allow_nan=True)
    for token in RAW_TOKENS:
        text = text.replace(json.dumps(raw(token)), token)
    return text.encode()


def deeply_nested(depth: int, kind: str) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if kind == "object" else ("[" * depth + "]" * depth)


scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(RAW_TOKENS).map(raw),
    st.sampled_from(["", "x" * MB, "\u0000", "\ufffd\u202e", "../../etc/passwd", "%2e%2e/%2e%2e", "fast", "crypto"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)

feature_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(RAW_TOKENS).map(raw),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    json_values,
)
features = st.one_of(
    st.fixed_dictionaries({name: feature_values for name in FAST_FEATURES}),
    st.fixed_dictionaries({name: st.lists(feature_values, max_size=6) for name in WINDOW_FEATURES}),
    st.dictionaries(st.text(max_size=8), feature_values, max_size=6),
    json_values,
)
horizons = st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(RAW_TOKENS).map(raw), json_values)
names = st.one_of(st.sampled_from(["fast", "backup", "windowed", "nope", "../fast", "fast/../backup", "a\u0000b",
                                   "x" * MB]), json_values)
unknown_fields = st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=2)


def _near(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the known fields (each perhaps of a wrong type), perhaps with unknown ones."""
    return st.builds(lambda known, extra: {**extra, **known},
                     st.fixed_dictionaries({}, optional=fields), st.one_of(st.just({}), unknown_fields))


predict_bodies = _near({"model_name": names, "model_version": st.one_of(st.sampled_from(["1", "2", "0", "-1"]),
                                                                          json_values),
                        "asset_class": st.one_of(st.just("crypto"), json_values), "horizon_ms": horizons,
                        "symbol": st.one_of(st.just("BTC/USDT"), json_values), "features": features,
                        "correlation_id": json_values, "timestamp": json_values})
SHAPES: dict[str, st.SearchStrategy[Any]] = {
    "predict": predict_bodies,
    "batch": _near({"requests": st.one_of(st.lists(predict_bodies, max_size=4), json_values,
                                          st.integers(0, 20_000).map(lambda n: [{}] * n))}),
    "route": _near({"asset_class": st.one_of(st.just("crypto"), json_values), "horizon_ms": horizons,
                    "symbol": json_values}),
    "register": _near({"name": names, "version": st.one_of(st.sampled_from(["1", "2", "99", "0", "../1"]),
                                                            json_values),
                       "metadata": json_values,
                       "model_base64": st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
                                                 json_values)}),
    "switch": _near({"version": st.one_of(st.sampled_from(["1", "2", "0"]), json_values),
                     "strategy": st.one_of(st.sampled_from(["immediate", "gradual", "canary", "ab", "x"]), json_values),
                     "steps": json_values, "step_interval_s": horizons, "canary_percent": horizons,
                     "auto_rollback": json_values}),
    "rollback": _near({"version": st.one_of(st.sampled_from(["1", "0"]), json_values)}),
    "feedback": _near({"correlation_id": json_values, "outcome": json_values}),
    "none": json_values,
}

noise = st.one_of(
    st.just(b""), st.just(b"   "), st.binary(max_size=256),
    st.sampled_from([b"\xff\xfe\x00{", b'{"features": "\xff\xfe"}', b'{"model_name": "fast\xc3"}', b"\xef\xbb\xbf{}",
                     b"{", b"[", b'{"a":', b"null", b"true", b"0", b'""', b"[]", b"{}", b"{}{}", b"{,}",
                     b'{"features": {}}\x00', b"NaN", b"1e999"]),
    st.sampled_from(["object", "array"]).map(lambda kind: deeply_nested(DEEP, kind).encode()),
    st.sampled_from([500, 1000, 1100]).map(lambda depth: ('{"features": ' + deeply_nested(depth, "object")
                                                          + "}").encode()),
    st.just(b'{"features": "' + b"x" * (5 * MB) + b'"}'),  # over the 4 MiB body bound
)


def bodies(shape: str) -> st.SearchStrategy[bytes]:
    """Wire bytes for a route whose body is aimed at ``shape``: near-valid JSON, truncated JSON, or noise."""
    near = SHAPES[shape].map(encode)
    truncated = st.tuples(near, st.integers(0, 64)).map(lambda pair: pair[0][: max(0, len(pair[0]) - 1 - pair[1])])
    return st.one_of(near, near, truncated, noise)


# Path parameters, already percent-encoded (the request target is sent as is).
path_params = st.one_of(
    st.sampled_from(["fast", "backup", "windowed", "1", "2", "..", ".", "%2e%2e", "%2E%2E%2F%2E%2E", "..%2f..%2fetc",
                     "%00", "a%00b", "%ff%fe", "%2F", "%5C..%5C", "~", "*", "%20", "1e999", "NaN", "-1",
                     "99999999999999999999999"]),
    st.text(min_size=1, max_size=40).map(lambda text: quote(text, safe="")),
    st.integers(300, 6000).map(lambda n: "n" * n),
)
queries = st.one_of(
    st.just(""),
    st.sampled_from(["limit=0", "limit=-1", "limit=1e999", "limit=NaN", "limit=99999999999999999999", "limit=%00",
                     "limit=5", "limit=", "limit", "limit=1&limit=2", "since=0-0", "since=../x"]),
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=3).map(
        lambda pairs: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs.items())),
)
content_types = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                                 "application/octet-stream", "", "\u00ff/\u00fe"])
admin_headers = st.sampled_from([{}, {"X-Admin-Key": ADMIN_KEY}, {"X-Admin-Key": "wrong"}, {"X-Admin-Key": ""},
                                 {"Authorization": f"Bearer {ADMIN_KEY}"}, {"Authorization": "Bearer"},
                                 {"Authorization": "Basic eDp5"}])
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
