"""The hand-written flatbuffer must behave exactly like the numpy network it was built from."""

from __future__ import annotations

import numpy as np
import pytest

from actors.build.tflite_writer import INPUT_NAME, OUTPUT_NAME, build_mlp_tflite, numpy_forward
from actors.storage.tflite_backend import interpreter_class


def _weights(seed: int = 0, in_dim: int = 6, hidden: int = 10, n_out: int = 3) -> tuple[np.ndarray, ...]:
    """Random float32 weights with biases large enough to exercise the RELU."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((in_dim, hidden)).astype(np.float32),
        rng.standard_normal(hidden).astype(np.float32),
        rng.standard_normal((hidden, n_out)).astype(np.float32),
        rng.standard_normal(n_out).astype(np.float32),
    )


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    """Invoke a fresh interpreter on ``x`` after resizing its batch dimension."""
    interpreter = interpreter_class()(model_content=model)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("batch", [1, 7])
def test_matches_numpy_forward(batch: int) -> None:
    weights = _weights()
    x = np.random.default_rng(1).standard_normal((batch, 6)).astype(np.float32)
    got = _run(build_mlp_tflite(*weights), x)
    assert got.shape == (batch, 3)
    np.testing.assert_allclose(got, numpy_forward(x, *weights), atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_io_tensors_are_named_and_resizable() -> None:
    interpreter = interpreter_class()(model_content=build_mlp_tflite(*_weights(n_out=4)))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["name"] == INPUT_NAME and out["name"] == OUTPUT_NAME
    assert list(inp["shape"]) == [1, 6] and list(inp["shape_signature"]) == [-1, 6]
    assert list(out["shape"]) == [1, 4]
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32


def test_bytes_are_deterministic() -> None:
    first = build_mlp_tflite(*_weights(seed=3))
    assert first == build_mlp_tflite(*_weights(seed=3))
    assert first != build_mlp_tflite(*_weights(seed=4))
    assert first[4:8] == b"TFL3"


def test_rejects_inconsistent_shapes() -> None:
    w1, b1, w2, b2 = _weights()
    with pytest.raises(ValueError, match="b1 shape"):
        build_mlp_tflite(w1, b1[:-1], w2, b2)
    with pytest.raises(ValueError, match="w2 shape"):
        build_mlp_tflite(w1, b1, w2[:-1], b2)
