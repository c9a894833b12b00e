"""Repository layout and metadata parsing: strict on content, tolerant of junk in the tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import attrs
import pytest

from actors.core.versions import latest_version
from actors.storage.model_repo import (
    METADATA_FILE,
    MODEL_FILE,
    MetadataError,
    ModelMetadata,
    dump_metadata,
    list_repository,
    parse_metadata,
    version_dir,
    write_model_version,
)

GOOD = """
features: [returns, volume_z]
window: 32
labels: [SELL, HOLD, BUY]
training_date: 2026-11-01
accuracy: 0.52
description: demo
"""


def test_parse_good_metadata() -> None:
    meta = parse_metadata(GOOD)
    assert meta.features == ("returns", "volume_z")
    assert meta.window == 32 and meta.input_dim == 64
    assert meta.labels == ("SELL", "HOLD", "BUY")
    assert meta.training_date == "2026-11-01"
    assert meta.accuracy == pytest.approx(0.52)
    assert meta.framework == "tflite"
    assert parse_metadata(dump_metadata(meta)) == meta


def test_defaults_and_to_dict() -> None:
    meta = parse_metadata("features: [a]\nlabels: [UP, DOWN]\n")
    assert meta.window == 1 and meta.accuracy is None and meta.training_date is None
    assert meta.to_dict() == {
        "features": ["a"],
        "window": 1,
        "labels": ["UP", "DOWN"],
        "training_date": None,
        "accuracy": None,
        "description": "",
        "framework": "tflite",
    }


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("features: [a]\nlabels: [X, Y]\nwindw: 3\n", "windw"),
        ("labels: [X, Y]\n", "features"),
        ("features: [a]\n", "labels"),
        ("features: []\nlabels: [X, Y]\n", "features"),
        ("features: a\nlabels: [X, Y]\n", "features"),
        ("features: [a, a]\nlabels: [X, Y]\n", "features"),
        ("features: [a]\nlabels: [X]\n", "labels"),
        ("features: [a]\nlabels: [X, Y]\nwindow: 0\n", "window"),
        ("features: [a]\nlabels: [X, Y]\nwindow: 2.5\n", "window"),
        ("features: [a]\nlabels: [X, Y]\naccuracy: 1.5\n", "accuracy"),
        ("features: [a]\nlabels: [X, Y]\naccuracy: high\n", "accuracy"),
        ("features: [a]\nlabels: [X, Y]\nframework: ''\n", "framework"),
        ("features: [a]\nlabels: [X, Y]\ndescription: [1]\n", "description"),
    ],
)
def test_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(MetadataError, match=field):
        parse_metadata(text)


def test_non_mapping_and_bad_yaml_rejected() -> None:
    with pytest.raises(MetadataError, match="mapping"):
        parse_metadata("- a\n- b\n")
    with pytest.raises(MetadataError, match="YAML"):
        parse_metadata("features: [a\n")


def test_latest_version_is_numeric() -> None:
    assert latest_version(("9", "10", "2")) == "10"
    assert latest_version(("1", "latest", "01")) == "1"
    assert latest_version(()) is None


def _touch_version(root: Path, name: str, version: str) -> None:
    folder = version_dir(root, name, version)
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"x")


def test_list_repository_ignores_junk(tmp_path: Path) -> None:
    for version in ("1", "10", "9"):
        _touch_version(tmp_path, "alpha", version)
    _touch_version(tmp_path, "beta", "3")
    for junk in ("tmp", "01", "0", "v2", "-1"):
        _touch_version(tmp_path, "alpha", junk)
    (tmp_path / "alpha" / "11").mkdir()  # no model.tflite yet: incomplete version
    _touch_version(tmp_path, "empty_model", "latest")
    _touch_version(tmp_path, ".staging", "1")
    (tmp_path / "README.md").write_text("not a model")
    assert list_repository(tmp_path) == {"alpha": ("1", "9", "10"), "beta": ("3",)}


def test_list_repository_missing_root(tmp_path: Path) -> None:
    assert list_repository(tmp_path / "nope") == {}


def test_write_model_version_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = ModelMetadata(features=("a", "b"), labels=("SELL", "BUY"))
    path = write_model_version(tmp_path, "m", "1", b"first", meta)
    assert path == tmp_path / "m" / "1"
    assert (path / MODEL_FILE).read_bytes() == b"first"
    digest = hashlib.sha256(b"first").hexdigest()
    assert parse_metadata((path / METADATA_FILE).read_text()) == attrs.evolve(meta, sha256=digest)

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_model_version(tmp_path, "m", "1", b"second", meta)
    assert (path / MODEL_FILE).read_bytes() == b"first"
    assert sorted(p.name for p in path.iterdir()) == sorted([MODEL_FILE, METADATA_FILE])


def test_write_model_version_rejects_bad_version(tmp_path: Path) -> None:
    meta = ModelMetadata(features=("a",), labels=("SELL", "BUY"))
    with pytest.raises(ValueError, match="positive integer"):
        write_model_version(tmp_path, "m", "latest", b"x", meta)


def test_write_model_version_refuses_a_sha256_the_bytes_do_not_have(tmp_path: Path) -> None:
    meta = ModelMetadata(features=("a",), labels=("SELL", "BUY"), sha256="0" * 64)
    with pytest.raises(MetadataError, match="sha256"):
        write_model_version(tmp_path, "m", "1", b"x", meta)
    assert not (tmp_path / "m" / "1" / MODEL_FILE).exists()


def test_sha256_round_trips_and_older_metadata_has_none() -> None:
    assert parse_metadata(GOOD).sha256 is None and "sha256" not in parse_metadata(GOOD).to_dict()
    digest = hashlib.sha256(b"model").hexdigest()
    meta = parse_metadata(GOOD + f"sha256: {digest}\n")
    assert meta.sha256 == digest and parse_metadata(dump_metadata(meta)) == meta
    with pytest.raises(MetadataError, match="sha256"):
        parse_metadata(GOOD + "sha256: " + digest.upper() + "\n")
