"""Write small float32 MLP classifiers as ``.tflite`` flatbuffers straight from numpy weights.

Why this exists: the demo repository and the tests need real TFLite models, but TensorFlow is
far too heavy a dependency for a router that only *serves* models. The graph is tiny and fixed
(FULLY_CONNECTED+RELU -> FULLY_CONNECTED -> SOFTMAX), so emitting the flatbuffer by hand with the
``flatbuffers`` runtime and the generated ``tflite`` schema package is simple and fully
deterministic: the same weights always give byte-identical files, which keeps the demo
repository reproducible and lets the hot-reload watcher ignore no-op rebuilds.

The ``tflite`` schema modules export their builder helpers as module-level functions, so they are
reached through ``importlib.import_module("tflite.<Table>")`` rather than the package namespace
(which re-exports the classes only).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import attrs
import flatbuffers
import numpy as np

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
# Constant buffers are aligned so the runtime can map float32 weights in place.
_BUFFER_ALIGNMENT = 16


def _schema(table: str) -> ModuleType:
    """Return the generated schema module for ``table`` (holds the builder functions)."""
    return importlib.import_module(f"tflite.{table}")


def _enum(name: str) -> type:
    """Return the generated enum class ``name`` (e.g. ``BuiltinOperator``)."""
    return getattr(_schema(name), name)


@attrs.frozen
class _TensorSpec:
    """One tensor of the graph: static shape, resizable signature and backing buffer index."""

    name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    buffer: int


@attrs.frozen
class _OpSpec:
    """One operator: index into the operator-code table plus tensor wiring and options kind."""

    opcode_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: str
    fused_relu: bool = False


def _check_weights(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> None:
    """Reject inconsistent shapes early: a malformed graph would only fail later inside the runtime."""
    if w1.ndim != 2 or w2.ndim != 2 or b1.ndim != 1 or b2.ndim != 1:
        raise ValueError("expected w1/w2 as 2-D and b1/b2 as 1-D arrays")
    in_dim, hidden = w1.shape
    if in_dim < 1 or hidden < 1:
        raise ValueError(f"w1 must be non-empty, got shape {w1.shape}")
    if b1.shape != (hidden,):
        raise ValueError(f"b1 shape {b1.shape} does not match hidden width {hidden}")
    if w2.shape[0] != hidden or w2.shape[1] < 1:
        raise ValueError(f"w2 shape {w2.shape} does not match hidden width {hidden}")
    if b2.shape != (w2.shape[1],):
        raise ValueError(f"b2 shape {b2.shape} does not match output width {w2.shape[1]}")


def _as_le_float32(array: np.ndarray) -> bytes:
    """Serialise as contiguous little-endian float32, the layout TFLite expects for constants."""
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _create_int_vector(builder: flatbuffers.Builder, values: Sequence[int]) -> int:
    """Create an int32 vector (shapes, tensor index lists)."""
    return builder.CreateNumpyVector(np.asarray(values, dtype="<i4"))


def _create_buffer(builder: flatbuffers.Builder, data: bytes) -> int:
    """Create a Buffer table; empty ``data`` gives the data-less form used by the sentinel buffer 0."""
    buf = _schema("Buffer")
    data_offset = None
    if data:
        builder.StartVector(1, len(data), _BUFFER_ALIGNMENT)
        builder.head -= len(data)
        builder.Bytes[builder.head : builder.head + len(data)] = data
        data_offset = builder.EndVector()
    buf.BufferStart(builder)
    if data_offset is not None:
        buf.BufferAddData(builder, data_offset)
    return buf.BufferEnd(builder)


def _create_tensor(builder: flatbuffers.Builder, spec: _TensorSpec) -> int:
    """Create a float32 Tensor table with both the static shape and the resizable signature."""
    tensor = _schema("Tensor")
    name = builder.CreateString(spec.name)
    shape = _create_int_vector(builder, spec.shape)
    signature = _create_int_vector(builder, spec.signature)
    tensor.TensorStart(builder)
    tensor.TensorAddShape(builder, shape)
    tensor.TensorAddShapeSignature(builder, signature)
    tensor.TensorAddType(builder, _enum("TensorType").FLOAT32)
    tensor.TensorAddBuffer(builder, spec.buffer)
    tensor.TensorAddName(builder, name)
    return tensor.TensorEnd(builder)


def _create_options(builder: flatbuffers.Builder, op: _OpSpec) -> tuple[int, int]:
    """Create the builtin options table for ``op``; returns (options type, offset)."""
    kinds = _enum("BuiltinOptions")
    if op.options == "FullyConnectedOptions":
        fc = _schema("FullyConnectedOptions")
        activation = _enum("ActivationFunctionType")
        fc.FullyConnectedOptionsStart(builder)
        fc.FullyConnectedOptionsAddFusedActivationFunction(
            builder, activation.RELU if op.fused_relu else activation.NONE
        )
        return kinds.FullyConnectedOptions, fc.FullyConnectedOptionsEnd(builder)
    softmax = _schema("SoftmaxOptions")
    softmax.SoftmaxOptionsStart(builder)
    softmax.SoftmaxOptionsAddBeta(builder, 1.0)
    return kinds.SoftmaxOptions, softmax.SoftmaxOptionsEnd(builder)


def _create_operator(builder: flatbuffers.Builder, op: _OpSpec) -> int:
    """Create an Operator table wired to its input/output tensor indices."""
    operator = _schema("Operator")
    inputs = _create_int_vector(builder, op.inputs)
    outputs = _create_int_vector(builder, op.outputs)
    options_type, options = _create_options(builder, op)
    operator.OperatorStart(builder)
    operator.OperatorAddOpcodeIndex(builder, op.opcode_index)
    operator.OperatorAddInputs(builder, inputs)
    operator.OperatorAddOutputs(builder, outputs)
    operator.OperatorAddBuiltinOptionsType(builder, options_type)
    operator.OperatorAddBuiltinOptions(builder, options)
    return operator.OperatorEnd(builder)


def _create_opcode(builder: flatbuffers.Builder, builtin: int) -> int:
    """Create an OperatorCode; both code fields are set so old and new runtimes agree."""
    code = _schema("OperatorCode")
    code.OperatorCodeStart(builder)
    code.OperatorCodeAddDeprecatedBuiltinCode(builder, min(builtin, 127))
    code.OperatorCodeAddBuiltinCode(builder, builtin)
    code.OperatorCodeAddVersion(builder, 1)
    return code.OperatorCodeEnd(builder)


def _vector_of_offsets(builder: flatbuffers.Builder, start_fn: object, offsets: Sequence[int]) -> int:
    """Create a vector of table offsets (flatbuffers vectors are written back to front)."""
    start_fn(builder, len(offsets))  # type: ignore[operator]
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _graph_specs(in_dim: int, hidden: int, n_out: int) -> tuple[tuple[_TensorSpec, ...], tuple[_OpSpec, ...]]:
    """Describe the fixed MLP graph; weight buffers are 1..4, activations use the empty buffer 0."""
    tensors = (
        _TensorSpec(INPUT_NAME, (1, in_dim), (-1, in_dim), 0),
        _TensorSpec("dense1/weights", (hidden, in_dim), (hidden, in_dim), 1),
        _TensorSpec("dense1/bias", (hidden,), (hidden,), 2),
        _TensorSpec("dense1/relu", (1, hidden), (-1, hidden), 0),
        _TensorSpec("dense2/weights", (n_out, hidden), (n_out, hidden), 3),
        _TensorSpec("dense2/bias", (n_out,), (n_out,), 4),
        _TensorSpec("logits", (1, n_out), (-1, n_out), 0),
        _TensorSpec(OUTPUT_NAME, (1, n_out), (-1, n_out), 0),
    )
    ops = (
        _OpSpec(0, (0, 1, 2), (3,), "FullyConnectedOptions", fused_relu=True),
        _OpSpec(0, (3, 4, 5), (6,), "FullyConnectedOptions"),
        _OpSpec(1, (6,), (7,), "SoftmaxOptions"),
    )
    return tensors, ops


def _create_subgraph(
    builder: flatbuffers.Builder, tensors: Sequence[_TensorSpec], ops: Sequence[_OpSpec]
) -> int:
    """Create the single ``main`` subgraph with its tensors, operators and graph inputs/outputs."""
    sub = _schema("SubGraph")
    tensor_offsets = [_create_tensor(builder, t) for t in tensors]
    op_offsets = [_create_operator(builder, op) for op in ops]
    tensors_vec = _vector_of_offsets(builder, sub.SubGraphStartTensorsVector, tensor_offsets)
    ops_vec = _vector_of_offsets(builder, sub.SubGraphStartOperatorsVector, op_offsets)
    inputs = _create_int_vector(builder, (0,))
    outputs = _create_int_vector(builder, (len(tensors) - 1,))
    name = builder.CreateString("main")
    sub.SubGraphStart(builder)
    sub.SubGraphAddTensors(builder, tensors_vec)
    sub.SubGraphAddInputs(builder, inputs)
    sub.SubGraphAddOutputs(builder, outputs)
    sub.SubGraphAddOperators(builder, ops_vec)
    sub.SubGraphAddName(builder, name)
    return sub.SubGraphEnd(builder)


def build_mlp_tflite(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> bytes:
    """Serialise ``softmax(relu(x @ w1 + b1) @ w2 + b2)`` as a TFLite model.

    ``w1`` is (in_dim, hidden) and ``w2`` is (hidden, n_out) in the numpy convention; they are
    transposed here because TFLite FULLY_CONNECTED stores weights as [out, in]. The input tensor
    ``features`` is [1, in_dim] with signature [-1, in_dim] so the runtime can resize the batch.
    """
    _check_weights(w1, b1, w2, b2)
    in_dim, hidden = w1.shape
    n_out = w2.shape[1]
    tensors, ops = _graph_specs(in_dim, hidden, n_out)
    opcodes = _enum("BuiltinOperator")
    model = _schema("Model")
    builder = flatbuffers.Builder(1024 + 4 * (w1.size + w2.size + hidden + n_out))

    payloads = (b"", _as_le_float32(w1.T), _as_le_float32(b1), _as_le_float32(w2.T), _as_le_float32(b2))
    buffer_offsets = [_create_buffer(builder, data) for data in payloads]
    subgraph = _create_subgraph(builder, tensors, ops)
    code_offsets = [_create_opcode(builder, c) for c in (opcodes.FULLY_CONNECTED, opcodes.SOFTMAX)]
    description = builder.CreateString("model-router numpy MLP")

    buffers_vec = _vector_of_offsets(builder, model.ModelStartBuffersVector, buffer_offsets)
    subgraphs_vec = _vector_of_offsets(builder, model.ModelStartSubgraphsVector, [subgraph])
    codes_vec = _vector_of_offsets(builder, model.ModelStartOperatorCodesVector, code_offsets)
    model.ModelStart(builder)
    model.ModelAddVersion(builder, SCHEMA_VERSION)
    model.ModelAddOperatorCodes(builder, codes_vec)
    model.ModelAddSubgraphs(builder, subgraphs_vec)
    model.ModelAddDescription(builder, description)
    model.ModelAddBuffers(builder, buffers_vec)
    builder.Finish(model.ModelEnd(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def numpy_forward(
    x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray
) -> np.ndarray:
    """Reference forward pass of the same graph, used to validate written models and in tests."""
    hidden = np.maximum(x @ w1 + b1, 0.0)
    logits = hidden @ w2 + b2
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
