"""Demo models must be reproducible and genuinely better than guessing the majority class."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from actors.build.demo_models import (
    DEMO_SPECS,
    DEMO_VERSION,
    HORIZON,
    build_dataset,
    build_demo_repository,
    main,
    simulate_market,
)
from actors.storage.model_repo import METADATA_FILE, MODEL_FILE, list_repository, parse_metadata, version_dir
from actors.storage.tflite_backend import load_model


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("demo")
    return out, build_demo_repository(out)


def _majority_baseline(name: str) -> float:
    """Majority-class share on the same tercile labelling (upper bound over any split)."""
    spec = next(s for s in DEMO_SPECS if s.name == name)
    forward = build_dataset(simulate_market(spec.seed), spec.features, spec.window).forward_return
    cuts = np.quantile(forward, [1 / 3, 2 / 3])
    counts = np.bincount(np.digitize(forward, cuts), minlength=3)
    return float(counts.max() / counts.sum())


def test_repository_layout(demo_repo: tuple[Path, dict[str, float]]) -> None:
    out, accuracies = demo_repo
    expected = {"tlob_tiny", "patchtst_small", "timesnet_base", "mamba_ts_small"}
    assert set(accuracies) == expected
    assert list_repository(out) == {name: (DEMO_VERSION,) for name in expected}


@pytest.mark.parametrize("name", ["tlob_tiny", "patchtst_small", "timesnet_base", "mamba_ts_small"])
def test_accuracy_beats_majority_baseline(demo_repo: tuple[Path, dict[str, float]], name: str) -> None:
    out, accuracies = demo_repo
    meta = parse_metadata((version_dir(out, name, DEMO_VERSION) / METADATA_FILE).read_text())
    assert meta.labels == ("SELL", "HOLD", "BUY")
    assert meta.training_date == "2026-11-01"
    assert meta.accuracy == accuracies[name]
    assert meta.accuracy is not None and meta.accuracy > _majority_baseline(name) + 0.08


def test_served_model_agrees_with_labels(demo_repo: tuple[Path, dict[str, float]]) -> None:
    """The served TFLite file (raw features in) predicts the forward-return class well above chance."""
    out, _ = demo_repo
    spec = DEMO_SPECS[0]
    model = load_model(version_dir(out, spec.name, DEMO_VERSION), spec.name, DEMO_VERSION)
    data = build_dataset(simulate_market(spec.seed + 1000), spec.features, spec.window)
    cuts = np.quantile(data.forward_return, [1 / 3, 2 / 3])
    labels = np.digitize(data.forward_return, cuts)
    predicted = model.predict(data.x[:4096].astype(np.float32)).argmax(axis=1)
    assert np.mean(predicted == labels[:4096]) > 0.42
    assert HORIZON > 0


def test_rebuild_is_byte_identical(demo_repo: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    out, _ = demo_repo
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    build_demo_repository(out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    build_demo_repository(tmp_path, force=True)
    for name in list_repository(out):
        for filename in (MODEL_FILE, METADATA_FILE):
            first = (version_dir(out, name, DEMO_VERSION) / filename).read_bytes()
            assert first == (version_dir(tmp_path, name, DEMO_VERSION) / filename).read_bytes()


def test_cli_writes_a_second_demo_version_with_its_digest(tmp_path: Path) -> None:
    """`--version 2 --model tlob_tiny`: the README's way to get a version to switch to."""
    assert main(["--out", str(tmp_path), "--version", "2", "--model", "tlob_tiny"]) == 0
    assert list_repository(tmp_path) == {"tlob_tiny": ("2",)}
    folder = version_dir(tmp_path, "tlob_tiny", "2")
    meta = parse_metadata((folder / METADATA_FILE).read_text())
    assert meta.sha256 == hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    build_demo_repository(tmp_path, models=["tlob_tiny"])
    first = (version_dir(tmp_path, "tlob_tiny", DEMO_VERSION) / MODEL_FILE).read_bytes()
    assert first != (folder / MODEL_FILE).read_bytes()  # another seed: another model
    assert load_model(folder, "tlob_tiny", "2").input_dim == 5
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--model", "no_such_model"])
