"""Loading and serving: predictions match numpy for every batch path, bad files fail clearly."""

from __future__ import annotations

import hashlib
import logging
import random
import re
from pathlib import Path

import attrs
import numpy as np
import pytest

from actors.build.demo_models import build_random_model, random_weights
from actors.build.tflite_writer import numpy_forward
from actors.storage.model_repo import METADATA_FILE, MODEL_FILE, dump_metadata, parse_metadata
from actors.storage.tflite_backend import LoadedModel, ModelLoadError, load_model


def _load(root: Path, **kwargs: object) -> LoadedModel:
    folder = build_random_model(root, "m", **kwargs)  # type: ignore[arg-type]
    return load_model(folder, "m", "1")


def _numpy_reference(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """Expected probabilities from the same seeded weights ``build_random_model`` wrote."""
    w = random_weights(model.input_dim, len(model.metadata.labels))
    return numpy_forward(x, w.w1, w.b1, w.w2, w.b2)


def _rewrite_metadata(folder: Path, **changes: object) -> None:
    """Replace metadata fields while keeping the model file, to provoke width mismatches."""
    path = folder / METADATA_FILE
    path.write_text(dump_metadata(attrs.evolve(parse_metadata(path.read_text()), **changes)))


def test_load_model_fields(tmp_path: Path) -> None:
    model = _load(tmp_path, features=("a", "b"), window=4)
    assert (model.name, model.version, model.path) == ("m", "1", tmp_path / "m" / "1")
    assert model.input_dim == 8 and model.metadata.window == 4
    assert model.size_bytes > (tmp_path / "m" / "1" / MODEL_FILE).stat().st_size
    assert model.loaded_at > 0


@pytest.mark.parametrize("batch", [1, 3, 64, 1000])
def test_predict_matches_numpy(tmp_path: Path, batch: int) -> None:
    model = _load(tmp_path)
    x = np.random.default_rng(batch).standard_normal((batch, 3)).astype(np.float32)
    got = model.predict(x)
    assert got.shape == (batch, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, _numpy_reference(model, x), atol=1e-5)


def test_predict_reuses_buckets_and_padding_does_not_leak(tmp_path: Path) -> None:
    model = _load(tmp_path)
    rng = np.random.default_rng(5)
    big = rng.standard_normal((8, 3)).astype(np.float32)
    small = rng.standard_normal((5, 3)).astype(np.float32)
    model.predict(big)
    np.testing.assert_allclose(model.predict(small), _numpy_reference(model, small), atol=1e-5)
    np.testing.assert_allclose(model.predict(small[:1]), _numpy_reference(model, small[:1]), atol=1e-5)
    assert sorted(model._buckets) == [8]


def test_predict_rejects_wrong_width(tmp_path: Path) -> None:
    model = _load(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 4), dtype=np.float32))


def test_missing_model_file(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    (folder / MODEL_FILE).unlink()
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "missing file" in info.value.reason and MODEL_FILE in info.value.reason


def test_missing_metadata_file(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    (folder / METADATA_FILE).unlink()
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "missing file" in info.value.reason and METADATA_FILE in info.value.reason


@pytest.mark.parametrize("keep", [0, 4, 16, 100, 400, -40, -4])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    """The structural verifier, on its own: the version has no sha256 to catch the damage first."""
    folder = build_random_model(tmp_path, "m")
    _rewrite_metadata(folder, sha256=None)
    content = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(content[:keep])
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "corrupt" in info.value.reason


def test_garbage_bytes(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    _rewrite_metadata(folder, sha256=None)
    garbage = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    (folder / MODEL_FILE).write_bytes(garbage[:4] + b"TFL3" + garbage[8:])
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "corrupt" in info.value.reason


def test_input_width_mismatch(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m", features=("a", "b", "c"))
    _rewrite_metadata(folder, features=("a", "b", "c", "d"))
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "metadata mismatch" in info.value.reason and "input" in info.value.reason


def test_output_width_mismatch(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m", labels=("SELL", "BUY"))
    _rewrite_metadata(folder, labels=("SELL", "BUY", "HOLD"))
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "metadata mismatch" in info.value.reason and "labels" in info.value.reason


def test_invalid_metadata_and_framework(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    meta = folder / METADATA_FILE
    original = meta.read_text()
    meta.write_text(original + "colour: red\n")
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "invalid metadata" in info.value.reason and "colour" in info.value.reason
    meta.write_text(original.replace("framework: tflite", "framework: onnx"))
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert "unsupported framework" in info.value.reason


def test_written_versions_record_the_sha256_of_their_model(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    meta = parse_metadata((folder / METADATA_FILE).read_text())
    assert meta.sha256 == hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()


def test_bit_flipped_copies_are_all_refused_before_the_runtime(tmp_path: Path) -> None:
    """50 seeded single-bit flips: every one refused by its digest; before, about 1 in 4 served."""
    folder = build_random_model(tmp_path, "m")
    original = (folder / MODEL_FILE).read_bytes()
    rng = random.Random(11)
    for _ in range(50):
        bit = rng.randrange(len(original) * 8)
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        (folder / MODEL_FILE).write_bytes(bytes(flipped))
        with pytest.raises(ModelLoadError) as info:
            load_model(folder, "m", "1")
        assert "model.tflite does not match the sha256 in metadata.yml" in info.value.reason
        assert str(tmp_path) not in info.value.reason
    (folder / MODEL_FILE).write_bytes(original)
    assert load_model(folder, "m", "1").predict(np.zeros((1, 3), dtype=np.float32)).shape == (1, 3)


def test_a_crashing_corruption_never_reaches_the_runtime(tmp_path: Path) -> None:
    """Zeroed bytes that once killed the process with SIGSEGV are refused by the digest, in-process."""
    folder = build_random_model(tmp_path, "m")
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[:168] + bytes(64) + data[232:])
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        load_model(folder, "m", "1")


def test_metadata_without_sha256_loads_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = build_random_model(tmp_path, "m")
    _rewrite_metadata(folder, sha256=None)
    assert "sha256" not in (folder / METADATA_FILE).read_text()
    with caplog.at_level(logging.WARNING, logger="model_router.models"):
        load_model(folder, "m", "1")
        load_model(folder, "m", "1")
    warnings = [r.getMessage() for r in caplog.records if "has no sha256" in r.getMessage()]
    assert warnings == ["m/1/metadata.yml has no sha256: model.tflite is loaded unchecked "
                        "(rebuild or re-register the version to record one)"]


def test_a_malformed_sha256_is_invalid_metadata(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    meta = folder / METADATA_FILE
    meta.write_text(meta.read_text().replace("sha256: ", "sha256: XYZ"))
    with pytest.raises(ModelLoadError, match=re.escape("invalid metadata in m/1/metadata.yml: sha256")):
        load_model(folder, "m", "1")


def test_load_errors_name_files_relative_to_the_repository(tmp_path: Path) -> None:
    folder = build_random_model(tmp_path, "m")
    (folder / MODEL_FILE).unlink()
    with pytest.raises(ModelLoadError) as info:
        load_model(folder, "m", "1")
    assert info.value.reason == "missing file m/1/model.tflite"
