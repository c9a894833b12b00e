"""TFLite inference backend: load a model version from disk and run batched predictions.

Threading contract: ``load_model`` is blocking and meant to run in a worker thread
(``trio.to_thread.run_sync``); the returned ``LoadedModel`` is then handed to the event loop and
``predict`` is only ever called from that single thread. TFLite interpreters are not thread-safe,
but because exactly one thread touches a given ``LoadedModel`` after loading, no locks are needed
(and none are taken, keeping the hot path lock-free).

Performance: resizing + re-allocating an interpreter costs far more than a small invoke, so the
batch-1 interpreter is allocated once, and larger batches use lazily created interpreters, one per
power-of-two bucket, each resized and allocated exactly once. Inputs are zero-padded up to the
bucket size and the output is sliced back, so every ``predict`` is a single ``invoke``.
"""

from __future__ import annotations

import importlib
import logging
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from actors.storage.model_repo import (
    METADATA_FILE,
    MODEL_FILE,
    MetadataError,
    ModelMetadata,
    file_digest,
    parse_metadata,
)

_FLOAT32 = np.dtype(np.float32)
_INTERPRETER_MODULES = ("tflite_runtime.interpreter", "ai_edge_litert.interpreter")

log = logging.getLogger("model_router.models")
_warned_unhashed: set[Path] = set()  # version folders already warned about; one line per version


class ModelLoadError(Exception):
    """A model version cannot be served; ``reason`` is a human-readable explanation for operators."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def interpreter_class() -> type:
    """Return the TFLite ``Interpreter`` class from whichever runtime package is installed."""
    for module_name in _INTERPRETER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter
    raise RuntimeError(
        "no TFLite runtime found: install 'tflite-runtime' or 'ai-edge-litert' to serve models"
    )


class _Corrupt(Exception):
    """Internal: the flatbuffer failed structural verification."""


# Flatbuffer layout of every TFLite table the runtime dereferences, as (vtable slot, kind, arg):
# "s" inline scalar of ``arg`` bytes, "str" string, "v" vector of ``arg``-byte scalars,
# "vt" vector of ``arg`` tables, "t" table ``arg``, "u" union table whose type is in slot ``arg``.
_Field = tuple[int, str, Any]
_SCHEMA: dict[str, tuple[_Field, ...]] = {
    "Model": (
        (0, "s", 4),
        (1, "vt", "OperatorCode"),
        (2, "vt", "SubGraph"),
        (3, "str", None),
        (4, "vt", "Buffer"),
        (5, "v", 4),
        (6, "vt", "Metadata"),
        (7, "vt", "SignatureDef"),
    ),
    "OperatorCode": ((0, "s", 1), (1, "str", None), (2, "s", 4), (3, "s", 4)),
    "SubGraph": (
        (0, "vt", "Tensor"),
        (1, "v", 4),
        (2, "v", 4),
        (3, "vt", "Operator"),
        (4, "str", None),
        (5, "s", 4),
    ),
    "Tensor": (
        (0, "v", 4),
        (1, "s", 1),
        (2, "s", 4),
        (3, "str", None),
        (4, "t", "QuantizationParameters"),
        (5, "s", 1),
        (6, "t", "SparsityParameters"),
        (7, "v", 4),
        (8, "s", 1),
        (9, "vt", "VariantSubType"),
    ),
    "VariantSubType": ((0, "v", 4), (1, "s", 1), (2, "s", 1)),
    "QuantizationParameters": (
        (0, "v", 4),
        (1, "v", 4),
        (2, "v", 4),
        (3, "v", 8),
        (4, "s", 1),
        (5, "u", 4),
        (6, "s", 4),
    ),
    "SparsityParameters": ((0, "v", 4), (1, "v", 4), (2, "vt", "DimensionMetadata")),
    "DimensionMetadata": ((0, "s", 1), (1, "s", 4), (2, "s", 1), (3, "u", 2), (4, "s", 1), (5, "u", 4)),
    "Operator": (
        (0, "s", 4),
        (1, "v", 4),
        (2, "v", 4),
        (3, "s", 1),
        (4, "u", 3),
        (5, "v", 1),
        (6, "s", 1),
        (7, "v", 1),
        (8, "v", 4),
        (9, "s", 8),
        (10, "s", 8),
        (11, "s", 1),
        (12, "u", 11),
        (13, "s", 4),
    ),
    "Buffer": ((0, "v", 1), (1, "s", 8), (2, "s", 8)),
    "Metadata": ((0, "str", None), (1, "s", 4)),
    "SignatureDef": ((0, "vt", "TensorMap"), (1, "vt", "TensorMap"), (2, "str", None), (4, "s", 4)),
    "TensorMap": ((0, "str", None), (1, "s", 4)),
    "Int32Vector": ((0, "v", 4),),
    "Uint16Vector": ((0, "v", 2),),
    "Uint8Vector": ((0, "v", 1),),
    "CustomQuantization": ((0, "v", 1),),
    "ReshapeOptions": ((0, "v", 4),),
    "SqueezeOptions": ((0, "v", 4),),
    "BucketizeOptions": ((0, "v", 4),),
    "ConcatEmbeddingsOptions": ((0, "s", 4), (1, "v", 4), (2, "v", 4)),
    "VarHandleOptions": ((0, "str", None), (1, "str", None)),
    "_Opaque": (),
}
# Union members that carry vectors/strings; every other union table only holds inline scalars
# (checked generically). Keys: (table, union slot) -> {type value: table name}.
_UNIONS: dict[tuple[str, int], dict[int, str]] = {
    ("QuantizationParameters", 5): {1: "CustomQuantization"},
    ("DimensionMetadata", 3): {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"},
    ("DimensionMetadata", 5): {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"},
    ("Operator", 4): {
        3: "ConcatEmbeddingsOptions",
        17: "ReshapeOptions",
        30: "SqueezeOptions",
        115: "BucketizeOptions",
        111: "VarHandleOptions",
    },
}


@attrs.frozen
class _Table:
    """Position, vtable position and sizes of one verified table."""

    pos: int
    vtable: int
    vtable_size: int
    size: int


class _Verifier:
    """Bounds-checked flatbuffer walker (the Python wrapper skips the C++ verifier, so we do it).

    Every offset, vtable, vector and string the runtime would dereference is checked against the
    buffer length, so truncated or garbage files are rejected instead of crashing the process.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.budget = len(data)  # tables visited; bounds work on adversarial inputs

    def read(self, fmt: str, pos: int) -> int:
        """Unpack one little-endian scalar, failing instead of reading past the end."""
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise _Corrupt(f"offset {pos} out of bounds")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos: int) -> _Table:
        """Check a table header and its vtable lie inside the buffer (budget stops offset loops)."""
        self.budget -= 1
        if self.budget < 0:
            raise _Corrupt("too many tables")
        vtable = pos - self.read("<i", pos)
        vtable_size, size = self.read("<H", vtable), self.read("<H", vtable + 2)
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > len(self.data):
            raise _Corrupt(f"bad vtable at {vtable}")
        if size < 4 or pos + size > len(self.data):
            raise _Corrupt(f"bad table size at {pos}")
        return _Table(pos, vtable, vtable_size, size)

    def field(self, table: _Table, slot: int, width: int) -> int:
        """Absolute position of a field's inline value, or -1 when absent."""
        if 4 + 2 * slot >= table.vtable_size:
            return -1
        offset = self.read("<H", table.vtable + 4 + 2 * slot)
        if offset == 0:
            return -1
        if offset + width > table.size:
            raise _Corrupt(f"field {slot} of table at {table.pos} overruns the table")
        return table.pos + offset

    def deref(self, pos: int) -> int:
        """Follow a uoffset; the target is bounds-checked by whoever reads it next."""
        return pos + self.read("<I", pos)

    def vector(self, pos: int, elem_size: int) -> tuple[int, int]:
        """Check a vector's declared length fits in the buffer; returns (first element, length)."""
        length = self.read("<I", pos)
        start = pos + 4
        if start + length * elem_size > len(self.data):
            raise _Corrupt(f"vector at {pos} overruns the buffer")
        return start, length

    def string(self, pos: int) -> None:
        """Strings are byte vectors plus a terminator the C++ side relies on."""
        start, length = self.vector(pos, 1)
        if self.read("<B", start + length) != 0:
            raise _Corrupt(f"string at {pos} is not terminated")

    def verify(self, pos: int, name: str) -> _Table:
        """Recursively verify table ``name`` at ``pos`` and everything it references."""
        table = self.table(pos)
        for slot, kind, arg in _SCHEMA[name]:
            where = self.field(table, slot, arg if kind == "s" else 4)
            if where < 0 or kind == "s":
                continue
            target = self.deref(where)
            if kind == "str":
                self.string(target)
            elif kind == "v":
                self.vector(target, arg)
            elif kind == "t":
                self.verify(target, arg)
            elif kind == "vt":
                start, length = self.vector(target, 4)
                for i in range(length):
                    self.verify(self.deref(start + 4 * i), arg)
            else:
                self._verify_union(table, name, slot, arg, target)
        return table

    def _verify_union(self, table: _Table, name: str, slot: int, type_slot: int, target: int) -> None:
        """Verify a union member with its known schema, or just its header when it is scalar-only."""
        type_pos = self.field(table, type_slot, 1)
        union_type = self.read("<B", type_pos) if type_pos >= 0 else 0
        member = _UNIONS.get((name, slot), {}).get(union_type, "_Opaque")
        self.verify(target, member)


def _external_buffers_in_bounds(verifier: _Verifier, model: _Table) -> None:
    """Buffers stored after the flatbuffer (offset/size form, used for >2 GB models) must exist."""
    where = verifier.field(model, 4, 4)
    if where < 0:
        return
    start, length = verifier.vector(verifier.deref(where), 4)
    for i in range(length):
        buffer = verifier.table(verifier.deref(start + 4 * i))
        offset_pos, size_pos = verifier.field(buffer, 1, 8), verifier.field(buffer, 2, 8)
        offset = verifier.read("<Q", offset_pos) if offset_pos >= 0 else 0
        size = verifier.read("<Q", size_pos) if size_pos >= 0 else 0
        if offset > 1 and offset + size > len(verifier.data):
            raise _Corrupt(f"buffer {i} points past the end of the file")


def verify_flatbuffer(content: bytes) -> None:
    """Raise ``ValueError`` unless ``content`` is a structurally sound TFLite flatbuffer."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError("missing TFL3 file identifier")
    verifier = _Verifier(content)
    try:
        model = verifier.verify(verifier.deref(0), "Model")
        _external_buffers_in_bounds(verifier, model)
    except _Corrupt as exc:
        raise ValueError(f"flatbuffer verification failed: {exc}") from exc


def _next_bucket(n: int) -> int:
    """Smallest power of two >= n, so at most log2(max batch) interpreters ever get allocated."""
    return 1 << (n - 1).bit_length()


@attrs.define
class _Slot:
    """One allocated interpreter for a fixed batch size plus its zero-padded staging input.

    ``set_input``, ``invoke`` and ``read_output`` are the interpreter wrapper's own C methods:
    the Python ``Interpreter`` methods add a frame each, and ``invoke`` a reference-count
    safety check, per call (a visible share of a few-microsecond model call). That check
    guards numpy views of the interpreter's buffers across a reallocation; this module
    never takes such views (``GetTensor`` copies) and resizes only in ``_make_slot``, so
    the Python wrapper is used there and nowhere on the call path.
    """

    interpreter: Any
    input_index: int
    output_index: int
    staging: np.ndarray
    set_input: Callable[[int, np.ndarray], None]
    invoke: Callable[[], None]
    read_output: Callable[[int], np.ndarray]


def _make_slot(model_content: bytes, batch: int, input_dim: int) -> _Slot:
    """Create an interpreter allocated for ``batch`` rows (resize happens once, here)."""
    interpreter = interpreter_class()(model_content=model_content, num_threads=1)
    input_index = int(interpreter.get_input_details()[0]["index"])
    output_index = int(interpreter.get_output_details()[0]["index"])
    if batch != 1:
        interpreter.resize_tensor_input(input_index, [batch, input_dim], strict=True)
    interpreter.allocate_tensors()
    staging = np.zeros((batch, input_dim), dtype=np.float32)
    native = getattr(interpreter, "_interpreter", None)
    if native is None:  # another interpreter class (a test double, a future runtime): its public methods
        return _Slot(interpreter, input_index, output_index, staging, interpreter.set_tensor, interpreter.invoke,
                     interpreter.get_tensor)
    return _Slot(interpreter, input_index, output_index, staging, native.SetTensor, native.Invoke, native.GetTensor)


def _run_slot(slot: _Slot, batch: np.ndarray) -> np.ndarray:
    """Run one invoke on ``slot``; padding rows stay zero and are sliced away."""
    n = batch.shape[0]
    if n == slot.staging.shape[0]:
        slot.set_input(slot.input_index, batch)
    else:
        slot.staging[:n] = batch
        slot.staging[n:] = 0.0
        slot.set_input(slot.input_index, slot.staging)
    slot.invoke()
    output = slot.read_output(slot.output_index)
    return output if n == output.shape[0] else output[:n]


@attrs.define(eq=False)
class LoadedModel:
    """A model version ready to serve.

    The descriptive fields (``name`` ... ``loaded_at``) are set once by ``load_model`` and must be
    treated as read-only; the private interpreter slots are mutable caches owned by the single
    thread that calls ``predict``.
    """

    name: str
    version: str
    path: Path
    metadata: ModelMetadata
    size_bytes: int
    input_dim: int
    loaded_at: float
    _model_content: bytes = attrs.field(repr=False, alias="model_content")
    _single: _Slot = attrs.field(repr=False, alias="single")
    _buckets: dict[int, _Slot] = attrs.field(factory=dict, repr=False, alias="buckets")

    @property
    def n_labels(self) -> int:
        """Number of output classes (columns of ``predict``)."""
        return len(self.metadata.labels)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 (n, n_labels), for a float32 (n, input_dim) batch, n >= 1."""
        if batch.shape == (1, self.input_dim) and batch.dtype == _FLOAT32 and batch.flags.c_contiguous:
            # One request's row, as the request path builds it: straight to the batch-1 interpreter.
            slot = self._single
            slot.set_input(slot.input_index, batch)
            slot.invoke()
            return slot.read_output(slot.output_index)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.input_dim or batch.shape[0] < 1:
            raise ValueError(f"expected a batch of shape (n>=1, {self.input_dim}), got {batch.shape}")
        return _run_slot(self._slot_for(batch.shape[0]), batch)

    def _slot_for(self, n: int) -> _Slot:
        """Batch-1 slot or the (lazily allocated) power-of-two bucket covering ``n`` rows."""
        if n == 1:
            return self._single
        bucket = _next_bucket(n)
        slot = self._buckets.get(bucket)
        if slot is None:
            slot = _make_slot(self._model_content, bucket, self.input_dim)
            self._buckets[bucket] = slot
        return slot


def _read_inputs(version_dir: Path, shown: str) -> tuple[ModelMetadata, bytes]:
    """Read metadata and model bytes, translating I/O and parse failures into ModelLoadError.

    Reasons name files as ``shown/<file>`` (``<model>/<version>``, relative to the repository):
    they reach HTTP answers and events, which never carry the server's absolute paths.
    """
    metadata_path = version_dir / METADATA_FILE
    model_path = version_dir / MODEL_FILE
    try:
        metadata = parse_metadata(metadata_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"missing file {shown}/{METADATA_FILE}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read {shown}/{METADATA_FILE}: {exc.strerror or type(exc).__name__}") from exc
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"cannot read {shown}/{METADATA_FILE}: not UTF-8 text") from exc
    except MetadataError as exc:
        raise ModelLoadError(f"invalid metadata in {shown}/{METADATA_FILE}: {exc}") from exc
    try:
        content = model_path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError(f"missing file {shown}/{MODEL_FILE}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read {shown}/{MODEL_FILE}: {exc.strerror or type(exc).__name__}") from exc
    return metadata, content


def _check_digest(version_dir: Path, metadata: ModelMetadata, content: bytes, shown: str) -> None:
    """Refuse a model file that is not the one written with its metadata (bit rot, a partial copy).

    Runs before the flatbuffer verifier and the runtime: a corrupted file can pass the
    verifier and serve wrong answers, or crash the runtime outright. Metadata written before
    hashes were recorded has none; such a version still loads, with one warning.
    """
    if metadata.sha256 is None:
        if version_dir not in _warned_unhashed:
            _warned_unhashed.add(version_dir)
            log.warning("%s/%s has no sha256: %s is loaded unchecked (rebuild or re-register the version "
                        "to record one)", shown, METADATA_FILE, MODEL_FILE)
        return
    digest = file_digest(content)
    if digest != metadata.sha256:
        raise ModelLoadError(
            f"corrupt model {shown}: {MODEL_FILE} does not match the sha256 in {METADATA_FILE} "
            f"(expected {metadata.sha256[:12]}..., got {digest[:12]}...)")


def _check_structure(content: bytes, shown: str) -> None:
    """Verify the flatbuffer before the runtime sees it: the runtime itself would read out of bounds."""
    try:
        verify_flatbuffer(content)
    except ValueError as exc:
        raise ModelLoadError(f"corrupt flatbuffer {shown}/{MODEL_FILE} ({len(content)} bytes): {exc}") from exc


def _check_io(single: _Slot, metadata: ModelMetadata) -> None:
    """The graph must be one float32 [batch, input_dim] -> one float32 [batch, n_labels]."""
    inputs = single.interpreter.get_input_details()
    outputs = single.interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"expected 1 input and 1 output tensor, got {len(inputs)} and {len(outputs)}")
    in_shape, out_shape = tuple(inputs[0]["shape"]), tuple(outputs[0]["shape"])
    if inputs[0]["dtype"] != np.float32 or outputs[0]["dtype"] != np.float32:
        raise ModelLoadError("input and output tensors must be float32")
    if len(in_shape) != 2 or in_shape[1] != metadata.input_dim:
        raise ModelLoadError(
            f"metadata mismatch: model input shape {list(in_shape)} but metadata declares "
            f"{len(metadata.features)} features x window {metadata.window} = {metadata.input_dim}"
        )
    if len(out_shape) != 2 or out_shape[1] != len(metadata.labels):
        raise ModelLoadError(
            f"metadata mismatch: model output shape {list(out_shape)} but metadata declares "
            f"{len(metadata.labels)} labels"
        )


def _tensor_bytes(single: _Slot) -> int:
    """Rough runtime memory: every tensor of the batch-1 graph at its allocated size."""
    total = 0
    for detail in single.interpreter.get_tensor_details():
        itemsize = np.dtype(detail["dtype"]).itemsize
        total += int(np.prod(detail["shape"], dtype=np.int64)) * itemsize
    return total


def _build_single(content: bytes, shown: str, input_dim: int) -> _Slot:
    """Build the batch-1 interpreter, wrapping runtime errors for corrupt flatbuffers."""
    try:
        return _make_slot(content, 1, input_dim)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"corrupt or unsupported flatbuffer {shown}/{MODEL_FILE}: {exc}") from exc


def _warm_up(model: LoadedModel) -> None:
    """One inference on zeros: catches kernels that fail only at invoke time and primes caches."""
    try:
        probabilities = model.predict(np.zeros((1, model.input_dim), dtype=np.float32))
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"warm-up inference failed: {exc}") from exc
    if probabilities.shape != (1, model.n_labels) or not np.all(np.isfinite(probabilities)):
        raise ModelLoadError(f"warm-up inference returned invalid output {probabilities!r}")


def load_model(version_dir: Path, name: str, version: str) -> LoadedModel:
    """Load and validate one model version (blocking; run it in a worker thread).

    Any problem with the files surfaces as ``ModelLoadError`` with a readable ``reason`` so the
    registry can keep serving the previous version and report why the new one was rejected.
    """
    version_dir = Path(version_dir)
    shown = f"{name}/{version}"
    metadata, content = _read_inputs(version_dir, shown)
    _check_digest(version_dir, metadata, content, shown)
    if metadata.framework != "tflite":
        raise ModelLoadError(f"unsupported framework {metadata.framework!r} (only 'tflite' is served)")
    _check_structure(content, shown)
    single = _build_single(content, shown, metadata.input_dim)
    _check_io(single, metadata)
    model = LoadedModel(
        name=name,
        version=version,
        path=version_dir,
        metadata=metadata,
        size_bytes=len(content) + _tensor_bytes(single),
        input_dim=metadata.input_dim,
        loaded_at=time.time(),
        model_content=content,
        single=single,
    )
    _warm_up(model)
    return model
