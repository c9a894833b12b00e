"""A registration's model upload: decoded, checked and written as a version folder, or refused.

``POST /models`` may carry the model file (``model_base64``) and its metadata. The
transition manager runs ``write_upload`` in a worker thread (decoding up to 3 MiB and
writing two files are no work for the event loop) and registers the version only once it
is written; a version whose file then fails to load is removed again, so a failed upload
leaves nothing behind in the repository.
"""

from __future__ import annotations

import base64
import binascii
import logging
import shutil
from pathlib import Path

import yaml

from actors.core.commands import RegisterVersion
from actors.core.errors import Conflict, InvalidInput, TooLarge
from actors.storage.model_repo import MetadataError, parse_metadata, version_dir, write_model_version

log = logging.getLogger("model_router.transitions")

# A model travels base64-encoded (4 bytes per 3) inside a JSON body capped at 4 MiB
# (actors/web/errors.MAX_BODY_BYTES): 3 MiB of model is what fits.
MAX_UPLOAD_BYTES = 3 * 1024 * 1024


def write_upload(repository: Path, command: RegisterVersion) -> None:
    """Write the uploaded version's folder (model file and metadata); raises the error to answer (blocking)."""
    name, version = command.model, command.version
    folder = version_dir(repository, name, version)
    if (folder / "model.tflite").exists():
        raise Conflict("version_exists", f"{name}@{version} already exists",
                       {"model": name, "version": version})
    if folder.exists():
        # No model file: the leftover of an upload interrupted (a crash) between its two
        # writes. It was never listed or served, so it must not block this upload.
        log.warning("removing %s@%s: an upload interrupted before its model file was written", name, version)
        shutil.rmtree(folder)
    encoded = command.model_base64
    if not isinstance(encoded, str) or len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise TooLarge("model_too_large", f"model_base64 must be a string of at most {MAX_UPLOAD_BYTES} bytes",
                       {"limit_bytes": MAX_UPLOAD_BYTES})
    try:
        content = base64.b64decode(encoded, validate=True)
        metadata = parse_metadata(yaml.safe_dump(dict(command.metadata) if command.metadata else None))
    except (binascii.Error, ValueError, MetadataError) as exc:
        raise InvalidInput("invalid_model_upload", str(exc), {"model": name, "version": version}) from exc
    try:
        write_model_version(repository, name, version, content, metadata)
    except MetadataError as exc:  # a sha256 in the metadata that the uploaded bytes do not have
        raise InvalidInput("invalid_model_upload", str(exc), {"model": name, "version": version}) from exc
