"""The Open Inference Protocol (KServe v2 / Triton HTTP) translated to and from the predictor (pure, no I/O).

Why a translation and not a second inference path: an OIP ``infer`` call becomes exactly the
``/predict/batch`` body the predictor already takes (``model_name``, ``model_version``, one
item per row with its own correlation id and symbol), so version assignment, switching,
circuit breakers, health and metrics behave for OIP clients as they do for ``/predict``.
This module only parses and checks tensors and shapes the answer; the web layer
(``actors/web/oip_calls.py``) does the awaiting.

Tensor layout (docs/oip.md): either one FP32 input ``features`` of shape
``[batch, n_features * window]`` (feature-major, in the model's feature order, as the
model's own input row), or one input per feature named after it, shape ``[batch]`` (window
1) or ``[batch, window]``. An optional BYTES input ``symbol`` of shape ``[batch]`` gives
per-row symbols. Outputs: ``probabilities`` FP32 ``[batch, n_labels]`` (columns in the
model's label order), ``signal`` BYTES ``[batch]``, ``model_version`` BYTES ``[batch]`` (the
version that answered each row, which a canary makes differ) and ``correlation_id`` BYTES
``[batch]``. The binary tensor data extension is supported both ways, because Triton's
clients use it by default.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import attrs
import numpy as np

from actors.core.errors import RouterError, Unavailable, bad_request

FEATURES_INPUT = "features"
SYMBOL_INPUT = "symbol"
OUTPUTS = ("probabilities", "signal", "model_version", "correlation_id")
EXTENSIONS = ("binary_tensor_data",)
FLOAT_TYPES: Mapping[str, str] = {"FP32": "<f4", "FP64": "<f8"}
MAX_ID_LENGTH = 128
# Sub-rows get "<id>/<row>"; the suffix must still fit the predictor's correlation id bound.
MAX_ROW_ID_LENGTH = MAX_ID_LENGTH - 8


@attrs.frozen
class Layout:
    """A model version's face in the protocol: what its inputs and outputs are called and how wide."""

    name: str
    version: str
    features: tuple[str, ...]
    window: int
    labels: tuple[str, ...]
    platform: str = "tflite"

    @property
    def width(self) -> int:
        return len(self.features) * self.window


@attrs.frozen
class RequestedOutput:
    name: str
    binary: bool


@attrs.frozen
class InferCall:
    """A checked ``infer`` request: one features object per row, ready for the predictor."""

    rows: tuple[dict[str, Any], ...]
    symbols: tuple[str | None, ...]
    correlation_ids: tuple[str | None, ...]
    outputs: tuple[RequestedOutput, ...]
    request_id: str | None = None


# -------------------------------------------------------------------------- paths ----

Route = tuple[str, str, str | None]
"""(endpoint, model name, version or None); endpoint is ``model``, ``ready`` or ``infer``."""

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")


def match_model_path(path: str) -> Route | None:
    """The model route a raw (percent-encoded) path names, or None when it names none."""
    found = _MODEL_PATH.match(path)
    if found is None:
        return None
    name, version, tail = found.groups()
    endpoint = "model" if tail is None else tail[1:]
    return endpoint, unquote(name), unquote(version) if version is not None else None


# ----------------------------------------------------------------------- metadata ----


def server_metadata(name: str, version: str) -> dict[str, Any]:
    return {"name": name, "version": version, "extensions": list(EXTENSIONS)}


def model_metadata(layout: Layout, versions: Sequence[str]) -> dict[str, Any]:
    """The model's metadata: both accepted input layouts and every output, with their shapes."""
    per_feature = [-1] if layout.window == 1 else [-1, layout.window]
    inputs = [{"name": FEATURES_INPUT, "datatype": "FP32", "shape": [-1, layout.width]}]
    inputs += [{"name": feature, "datatype": "FP32", "shape": per_feature} for feature in layout.features]
    inputs.append({"name": SYMBOL_INPUT, "datatype": "BYTES", "shape": [-1]})
    outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(layout.labels)]}]
    outputs += [{"name": name, "datatype": "BYTES", "shape": [-1]} for name in OUTPUTS[1:]]
    return {
        "name": layout.name,
        "versions": list(versions),
        "platform": layout.platform,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"labels": ",".join(layout.labels), "features": ",".join(layout.features),
                       "window": layout.window, "serving_version": layout.version},
    }


# ------------------------------------------------------------------------ request ----


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail): ``Inference-Header-Content-Length`` says where the JSON ends."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise bad_request("Inference-Header-Content-Length must be an integer") from None
    if not 0 < length <= len(body):
        raise bad_request(f"Inference-Header-Content-Length {length} is outside the body of {len(body)} bytes")
    return body[:length], body[length:]


def _flatten(data: Any, into: list[Any]) -> None:
    """Row-major values of flat or nested lists (rows of numbers, the usual case, take one pass)."""
    if type(data) is not list:
        into.append(data)
        return
    for item in data:
        if type(item) is list:
            if any(type(v) is list for v in item):
                _flatten(item, into)
            else:
                into.extend(item)
        else:
            into.append(item)


def _shape(tensor: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise bad_request(f"input {name!r}: 'shape' must be a non-empty list of non-negative integers",
                          input=name)
    return tuple(shape)


@attrs.frozen
class _Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]


def _byte_strings(raw: bytes, name: str) -> list[Any]:
    """The binary BYTES encoding: each element a 4-byte little-endian length, then its bytes."""
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad_request(f"input {name!r}: truncated BYTES element", input=name)
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise bad_request(f"input {name!r}: truncated BYTES element", input=name)
        values.append(raw[offset:offset + size].decode("utf-8", "replace"))
        offset += size
    return values


def _read_tensor(tensor: Any, binary: memoryview, offset: int) -> tuple[_Tensor, int]:
    """One input tensor's values (flat, row-major) and the binary offset after it."""
    if not isinstance(tensor, Mapping):
        raise bad_request("each input must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("each input needs a 'name'")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise bad_request(f"input {name!r}: 'datatype' is required", input=name)
    shape = _shape(tensor, name)
    count = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, Mapping) else None
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise bad_request(f"input {name!r}: binary_data_size {size!r} exceeds the binary data sent",
                              input=name)
        raw = bytes(binary[offset:offset + size])
        offset += size
        if datatype in FLOAT_TYPES:
            item = np.dtype(FLOAT_TYPES[datatype]).itemsize
            if size != count * item:
                raise bad_request(f"input {name!r}: {size} bytes do not hold shape {list(shape)} of {datatype}",
                                  input=name)
            values: list[Any] = np.frombuffer(raw, dtype=FLOAT_TYPES[datatype]).astype(np.float64).tolist()
        elif datatype == "BYTES":
            values = _byte_strings(raw, name)
        else:
            values = []
    else:
        if "data" not in tensor:
            raise bad_request(f"input {name!r}: 'data' is required (or binary_data_size)", input=name)
        values = []
        _flatten(tensor["data"], values)
    if len(values) != count and datatype in (*FLOAT_TYPES, "BYTES"):
        raise bad_request(f"input {name!r}: {len(values)} values do not fill shape {list(shape)}",
                          input=name, shape=list(shape), got=len(values))
    return _Tensor(name, datatype, shape, values), offset


def _check_floats(tensor: _Tensor) -> None:
    if tensor.datatype not in FLOAT_TYPES:
        raise bad_request(f"input {tensor.name!r} must be FP32 (FP64 accepted), got {tensor.datatype}",
                          input=tensor.name, datatype=tensor.datatype)
    for value in tensor.values:
        if type(value) not in (int, float):
            raise bad_request(f"input {tensor.name!r}: {type(value).__name__} in a {tensor.datatype} tensor",
                              input=tensor.name)


def _rows_from_features(tensor: _Tensor, layout: Layout) -> list[dict[str, Any]]:
    width = layout.width
    if len(tensor.shape) == 1 and tensor.shape[0] == width:
        batch = 1
    elif len(tensor.shape) == 2 and tensor.shape[1] == width:
        batch = tensor.shape[0]
    else:
        raise bad_request(f"input {FEATURES_INPUT!r} must have shape [batch, {width}] "
                          f"({len(layout.features)} features x window {layout.window}), got {list(tensor.shape)}",
                          input=FEATURES_INPUT, expected=[-1, width], got=list(tensor.shape))
    values, window = tensor.values, layout.window
    rows = []
    for row in range(batch):
        start = row * width
        if window == 1:
            rows.append(dict(zip(layout.features, values[start:start + width], strict=True)))
        else:
            rows.append({feature: values[start + i * window:start + (i + 1) * window]
                         for i, feature in enumerate(layout.features)})
    return rows


def _rows_from_per_feature(tensors: Mapping[str, _Tensor], layout: Layout) -> list[dict[str, Any]]:
    missing = [f for f in layout.features if f not in tensors]
    if missing:
        raise bad_request(f"missing input(s) {', '.join(missing)}: give {FEATURES_INPUT!r} or one input per "
                          f"feature", missing=missing, features=list(layout.features))
    window = layout.window
    batch: int | None = None
    columns: dict[str, list[Any]] = {}
    for feature in layout.features:
        tensor = tensors[feature]
        shape = tensor.shape
        ok = (len(shape) == 2 and shape[1] == window) or (window == 1 and len(shape) == 1)
        if not ok:
            expected = "[batch]" if window == 1 else f"[batch, {window}]"
            raise bad_request(f"input {feature!r} must have shape {expected}, got {list(shape)}",
                              input=feature, got=list(shape))
        if batch is not None and shape[0] != batch:
            raise bad_request(f"input {feature!r} has {shape[0]} rows, other inputs have {batch}", input=feature)
        batch = shape[0]
        columns[feature] = tensor.values
    rows = []
    for row in range(batch or 0):
        if window == 1:
            rows.append({f: columns[f][row] for f in layout.features})
        else:
            rows.append({f: columns[f][row * window:(row + 1) * window] for f in layout.features})
    return rows


def _requested_outputs(body: Mapping[str, Any], binary_default: bool) -> tuple[RequestedOutput, ...]:
    requested = body.get("outputs")
    if requested is None:
        return tuple(RequestedOutput(name, binary_default) for name in OUTPUTS)
    if not isinstance(requested, list) or not requested:
        raise bad_request("'outputs' must be a non-empty list")
    chosen = []
    for output in requested:
        name = output.get("name") if isinstance(output, Mapping) else None
        if name not in OUTPUTS:
            raise bad_request(f"unknown output {name!r}", output=name, outputs=list(OUTPUTS))
        parameters = output.get("parameters") or {}
        binary = parameters.get("binary_data", binary_default) if isinstance(parameters, Mapping) else False
        chosen.append(RequestedOutput(name, binary is True))
    return tuple(chosen)


def _symbols(parameters: Mapping[str, Any], tensor: _Tensor | None, batch: int) -> tuple[str | None, ...]:
    symbol = parameters.get("symbol")
    if tensor is not None:
        if symbol is not None:
            raise bad_request("give the 'symbol' parameter or the 'symbol' input, not both")
        if tensor.datatype != "BYTES" or tensor.shape != (batch,):
            raise bad_request(f"input 'symbol' must be BYTES of shape [{batch}]", input=SYMBOL_INPUT)
        values = [v if isinstance(v, str) else None for v in tensor.values]
        if None in values or not all(values):
            raise bad_request("input 'symbol' must hold non-empty strings", input=SYMBOL_INPUT)
        return tuple(values)
    if symbol is None:
        return (None,) * batch
    if not isinstance(symbol, str) or not symbol:
        raise bad_request("parameter 'symbol' must be a non-empty string", parameter="symbol")
    return (symbol,) * batch


def _request_id(body: Mapping[str, Any]) -> str | None:
    request_id = body.get("id")
    if request_id is None:
        return None
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ROW_ID_LENGTH:
        raise bad_request(f"'id' must be a string of 1..{MAX_ROW_ID_LENGTH} characters", field="id")
    return request_id


def parse_infer(header: Any, binary: bytes, layout: Layout) -> InferCall:
    """Check an ``infer`` request against the model's layout; one predictor row per tensor row.

    Row ``i``'s correlation id is the request ``id`` for a one-row request and ``<id>/<i>``
    otherwise (generated by the predictor when there is no ``id``); the traffic plan assigns
    each row by its symbol, else by that correlation id, as ``/predict`` does.
    """
    if not isinstance(header, Mapping):
        raise bad_request("inference request must be a JSON object")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("'inputs' must be a non-empty list")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise bad_request("'parameters' must be an object")
    request_id = _request_id(header)
    tensors: dict[str, _Tensor] = {}
    offset = 0
    view = memoryview(binary)
    for raw in inputs:
        tensor, offset = _read_tensor(raw, view, offset)
        if tensor.name in tensors:
            raise bad_request(f"input {tensor.name!r} given twice", input=tensor.name)
        tensors[tensor.name] = tensor
    if offset != len(binary):
        raise bad_request(f"{len(binary) - offset} bytes of binary data belong to no input")
    symbol_tensor = tensors.pop(SYMBOL_INPUT, None)
    unknown = sorted(set(tensors) - {FEATURES_INPUT, *layout.features})
    if unknown:
        raise bad_request(f"unknown input(s) {', '.join(unknown)}", unknown=unknown,
                          inputs=[FEATURES_INPUT, *layout.features, SYMBOL_INPUT])
    for tensor in tensors.values():
        _check_floats(tensor)
    if FEATURES_INPUT in tensors:
        if len(tensors) > 1:
            raise bad_request(f"give {FEATURES_INPUT!r} or one input per feature, not both")
        rows = _rows_from_features(tensors[FEATURES_INPUT], layout)
    else:
        rows = _rows_from_per_feature(tensors, layout)
    if not rows:
        raise bad_request("the inputs hold no rows (batch size 0)")
    symbols = _symbols(parameters, symbol_tensor, len(rows))
    if request_id is None:
        ids: tuple[str | None, ...] = (None,) * len(rows)
    elif len(rows) == 1:
        ids = (request_id,)
    else:
        ids = tuple(f"{request_id}/{row}" for row in range(len(rows)))
    outputs = _requested_outputs(header, parameters.get("binary_data_output") is True)
    return InferCall(tuple(rows), symbols, ids, outputs, request_id)


def batch_body(call: InferCall, model_name: str, version: str | None) -> dict[str, Any]:
    """The ``/predict/batch`` body for this call: the predictor does the rest."""
    items = []
    for features, symbol, correlation_id in zip(call.rows, call.symbols, call.correlation_ids, strict=True):
        item: dict[str, Any] = {"model_name": model_name, "features": features}
        if version is not None:
            item["model_version"] = version
        if symbol is not None:
            item["symbol"] = symbol
        if correlation_id is not None:
            item["correlation_id"] = correlation_id
        items.append(item)
    return {"requests": items}


# ----------------------------------------------------------------------- response ----


@attrs.frozen
class RowFailure:
    """The first row the predictor could not answer: the whole call fails with its status."""

    row: int
    status: int
    message: str


def first_failure(predictions: Sequence[Mapping[str, Any]]) -> RowFailure | None:
    for row, item in enumerate(predictions):
        error = item.get("error")
        if error is not None:
            code = error.get("code", "error") if isinstance(error, Mapping) else "error"
            message = error.get("message", str(error)) if isinstance(error, Mapping) else str(error)
            prefix = f"row {row}: " if len(predictions) > 1 else ""
            return RowFailure(row, int(item.get("status", 500)), f"{prefix}{code}: {message}")
    return None


def _bytes_tensor(values: Sequence[str]) -> bytes:
    parts = []
    for value in values:
        encoded = value.encode()
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def infer_response(call: InferCall, layout: Layout,
                   predictions: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], bytes]:
    """The response object and its binary tail (empty when every output is JSON).

    ``model_version`` is the version that answered when all rows agree, else the versions
    joined by commas (per-row versions are in the ``model_version`` output).
    """
    labels = layout.labels
    probabilities: list[list[float]] = []
    for row, item in enumerate(predictions):
        answered = item["prediction"]["probabilities"]
        if set(answered) != set(labels):
            raise Unavailable("labels_mismatch", f"row {row} was answered by {item['model']['name']}@"
                              f"{item['model']['version']}, whose labels differ from the model's metadata",
                              {"row": row})
        probabilities.append([answered[label] for label in labels])
    columns: dict[str, tuple[str, list[int], list[Any]]] = {
        "probabilities": ("FP32", [len(predictions), len(labels)], probabilities),
        "signal": ("BYTES", [len(predictions)], [p["prediction"]["signal"] for p in predictions]),
        "model_version": ("BYTES", [len(predictions)], [p["model"]["version"] for p in predictions]),
        "correlation_id": ("BYTES", [len(predictions)], [p["correlation_id"] for p in predictions]),
    }
    outputs = []
    tail: list[bytes] = []
    for requested in call.outputs:
        datatype, shape, values = columns[requested.name]
        output: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": shape}
        if requested.binary:
            raw = (np.asarray(values, dtype="<f4").tobytes() if datatype == "FP32" else _bytes_tensor(values))
            output["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            output["data"] = [v for row in values for v in row] if datatype == "FP32" else values
        outputs.append(output)
    versions = sorted({p["model"]["version"] for p in predictions}, key=_version_key)
    body: dict[str, Any] = {"model_name": layout.name, "model_version": ",".join(versions), "outputs": outputs}
    if call.request_id is not None:
        body["id"] = call.request_id
    return body, b"".join(tail)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def error_body(error: RouterError | str) -> dict[str, str]:
    """The protocol's error shape: one string. The service's error code leads it, so it stays visible."""
    if isinstance(error, str):
        return {"error": error}
    return {"error": f"{error.code}: {error.message}"}
