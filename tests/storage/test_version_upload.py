"""A registration's upload, directly: written whole or refused with the error to answer."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from actors.build.demo_models import build_random_model
from actors.core.commands import RegisterVersion
from actors.core.errors import Conflict, InvalidInput, TooLarge
from actors.storage.model_repo import file_digest, parse_metadata, version_dir
from actors.storage.version_upload import MAX_UPLOAD_BYTES, write_upload

METADATA = {"features": ["a", "b", "c"], "labels": ["SELL", "HOLD", "BUY"]}


@pytest.fixture
def model_bytes(tmp_path: Path) -> bytes:
    build_random_model(tmp_path / "built", "m", "1", ("a", "b", "c"), seed=5)
    return (tmp_path / "built" / "m" / "1" / "model.tflite").read_bytes()


def upload(version: str, encoded: str, metadata: dict[str, object] | None = None) -> RegisterVersion:
    return RegisterVersion("m", version, METADATA if metadata is None else metadata, encoded)


def test_an_upload_is_written_with_its_sha256_and_removed_again(tmp_path: Path, model_bytes: bytes) -> None:
    repo = tmp_path / "repo"
    write_upload(repo, upload("2", base64.b64encode(model_bytes).decode()))
    folder = version_dir(repo, "m", "2")
    assert (folder / "model.tflite").read_bytes() == model_bytes
    assert parse_metadata((folder / "metadata.yml").read_text()).sha256 == file_digest(model_bytes)
    shutil.rmtree(folder)  # what the manager does when the written version fails to load
    assert not folder.exists() and (repo / "m").is_dir()


def test_an_existing_version_is_a_conflict(tmp_path: Path, model_bytes: bytes) -> None:
    repo = tmp_path / "repo"
    encoded = base64.b64encode(model_bytes).decode()
    write_upload(repo, upload("2", encoded))
    with pytest.raises(Conflict) as caught:
        write_upload(repo, upload("2", encoded))
    assert caught.value.code == "version_exists"


def test_a_leftover_without_model_file_does_not_block_the_upload(tmp_path: Path, model_bytes: bytes) -> None:
    """A crash between the metadata and the model file leaves a folder nobody served."""
    repo = tmp_path / "repo"
    leftover = version_dir(repo, "m", "3")
    leftover.mkdir(parents=True)
    (leftover / "metadata.yml").write_text("features: [a]\n")
    write_upload(repo, upload("3", base64.b64encode(model_bytes).decode()))
    assert (leftover / "model.tflite").read_bytes() == model_bytes


@pytest.mark.parametrize(("encoded", "metadata", "error", "code"), [
    ("not base64!", None, InvalidInput, "invalid_model_upload"),
    ("QUJD", {"features": "a"}, InvalidInput, "invalid_model_upload"),
    ("A" * (MAX_UPLOAD_BYTES * 4 // 3 + 8), None, TooLarge, "model_too_large"),
])
def test_bad_uploads_are_refused_and_leave_nothing(tmp_path: Path, encoded: str,
                                                        metadata: dict[str, object] | None,
                                                        error: type[Exception], code: str) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(error) as caught:
        write_upload(repo, upload("4", encoded, metadata))
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert not version_dir(repo, "m", "4").exists()


def test_a_sha256_the_bytes_do_not_have_is_refused(tmp_path: Path, model_bytes: bytes) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(InvalidInput, match="sha256"):
        write_upload(repo, upload("5", base64.b64encode(model_bytes).decode(), {**METADATA, "sha256": "0" * 64}))
