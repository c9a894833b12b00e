"""On-disk model repository: ``<root>/<model_name>/<version>/{model.tflite, metadata.yml}``.

The layout follows Triton / TF Serving so operators can drop a new version folder next to the
old one and the router hot-reloads it. Versions are positive integers written canonically
("1", "2", "10"; no leading zeros) and compared numerically, so "10" is newer than "9". Anything
else in the tree (``tmp``, ``.staging``, ``README``) is ignored rather than rejected, because a
repository is shared with humans and deployment tools.

A version folder only counts once its ``model.tflite`` exists (or, for a remote version served
by other servers, once its ``metadata.yml`` names ``endpoints``; see docs/remote-models.md):
``write_model_version`` writes ``metadata.yml`` first and the model last (each via temp file +
``os.replace``), so a watcher never sees a half-written version.

``write_model_version`` records the model file's sha256 in ``metadata.yml``; the loader refuses a
``model.tflite`` whose bytes no longer match, before the TFLite runtime parses them (a flipped bit
can make a model that loads and answers wrongly, or crash the runtime).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import attrs
import yaml

from actors.core.versions import is_model_name, is_version_name
from actors.storage.atomic import atomic_write_bytes

MODEL_FILE = "model.tflite"
METADATA_FILE = "metadata.yml"
_KNOWN_KEYS = frozenset(
    {"features", "window", "labels", "training_date", "accuracy", "description", "framework", "sha256",
     "endpoints", "timeout_ms"}
)
_ENDPOINT_KEYS = frozenset({"url", "model", "version", "weight"})
MAX_ENDPOINTS = 16
DEFAULT_TIMEOUT_MS = 2000
MAX_TIMEOUT_MS = 60_000
_SHA256_HEX = frozenset("0123456789abcdef")


class MetadataError(ValueError):
    """metadata.yml is malformed; the message names the offending field so operators can fix it."""


def _check_names(field: str, values: tuple[str, ...], minimum: int) -> None:
    """Feature/label lists must be non-empty strings, unique, and long enough to be meaningful."""
    if len(values) < minimum:
        raise MetadataError(f"{field}: expected at least {minimum} entries, got {len(values)}")
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise MetadataError(f"{field}: entries must be non-empty strings, got {value!r}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise MetadataError(f"{field}: duplicate entries {duplicates}")


def _validate_features(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    """attrs validator for ``features``."""
    _check_names("features", value, 1)


def _validate_labels(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    """attrs validator for ``labels`` (a classifier needs at least two classes)."""
    _check_names("labels", value, 2)


def _validate_window(_instance: object, _attribute: object, value: int) -> None:
    """attrs validator for ``window``; bool is rejected because YAML ``yes`` would sneak through."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MetadataError(f"window: expected a positive integer, got {value!r}")


def _validate_accuracy(_instance: object, _attribute: object, value: float | None) -> None:
    """attrs validator for ``accuracy``: an offline accuracy is a fraction in [0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetadataError(f"accuracy: expected a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise MetadataError(f"accuracy: expected a number in [0, 1], got {value!r}")


def _validate_text(field: str, allow_empty: bool) -> Any:
    """Build an attrs validator for plain string fields."""

    def check(_instance: object, _attribute: object, value: object) -> None:
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            raise MetadataError(
                f"{field}: expected a {'' if allow_empty else 'non-empty '}string, got {value!r}"
            )

    return check


def _validate_training_date(_instance: object, _attribute: object, value: str | None) -> None:
    """attrs validator for ``training_date`` (free-form string, usually ISO date)."""
    if value is not None and not isinstance(value, str):
        raise MetadataError(f"training_date: expected a string, got {value!r}")


def _validate_sha256(_instance: object, _attribute: object, value: str | None) -> None:
    """attrs validator for ``sha256``: 64 lowercase hex digits, as ``sha256sum`` prints them."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _SHA256_HEX:
        raise MetadataError(f"sha256: expected 64 lowercase hex digits, got {value!r}")


@attrs.frozen
class Endpoint:
    """A remote server answering for a version over the Open Inference Protocol (docs/remote-models.md).

    ``model``/``version`` name the model on that server (version None: its serving version);
    ``weight`` is its share of traffic among the healthy endpoints.
    """

    url: str
    model: str
    version: str | None = None
    weight: float = 1.0

    @property
    def infer_url(self) -> str:
        """Where OIP ``infer`` calls go."""
        tail = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v2/models/{self.model}{tail}/infer"

    @property
    def ready_url(self) -> str:
        """The server readiness probe used by active health checks."""
        return f"{self.url}/v2/health/ready"

    def to_dict(self) -> dict[str, Any]:
        view: dict[str, Any] = {"url": self.url, "model": self.model, "weight": self.weight}
        if self.version is not None:
            view["version"] = self.version
        return view


def _parse_endpoint(position: int, raw: object) -> Endpoint:
    """One ``endpoints`` entry; every mistake names its position so operators find it."""
    where = f"endpoints[{position}]"
    if not isinstance(raw, dict):
        raise MetadataError(f"{where}: expected a mapping with url and model, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _ENDPOINT_KEYS)
    if unknown:
        raise MetadataError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_ENDPOINT_KEYS)}")
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or \
            len(url.split("://", 1)[1].strip("/")) == 0 or any(c.isspace() for c in url):
        raise MetadataError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
    model = raw.get("model")
    if not isinstance(model, str) or not is_model_name(model):
        raise MetadataError(f"{where}.model: expected a model name, got {model!r}")
    version = raw.get("version")
    if version is not None:
        version = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
        if not isinstance(version, str) or not is_version_name(version):
            raise MetadataError(f"{where}.version: expected a positive integer version, got {version!r}")
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or weight <= 0:
        raise MetadataError(f"{where}.weight: expected a number > 0, got {weight!r}")
    return Endpoint(url.rstrip("/"), model, version, float(weight))


def parse_endpoints(raw: object) -> tuple[Endpoint, ...]:
    """The ``endpoints`` list: 1..16 entries, no endpoint named twice."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ENDPOINTS:
        raise MetadataError(f"endpoints: expected a list of 1..{MAX_ENDPOINTS} endpoints, got {raw!r}")
    endpoints = tuple(_parse_endpoint(i, entry) for i, entry in enumerate(raw))
    targets = [e.infer_url for e in endpoints]
    duplicates = sorted({t for t in targets if targets.count(t) > 1})
    if duplicates:
        raise MetadataError(f"endpoints: the same endpoint is listed twice: {duplicates}")
    return endpoints


def _validate_timeout(_instance: object, _attribute: object, value: int) -> None:
    """attrs validator for ``timeout_ms``: a bounded per-call timeout for remote endpoints."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT_MS:
        raise MetadataError(f"timeout_ms: expected an integer in 1..{MAX_TIMEOUT_MS}, got {value!r}")


def file_digest(content: bytes) -> str:
    """The sha256 recorded for a model file."""
    return hashlib.sha256(content).hexdigest()


@attrs.frozen
class ModelMetadata:
    """What the router needs to know about a model version besides its weights.

    The model input is feature-major: all ``window`` values of ``features[0]``, then of
    ``features[1]``, ... so ``input_dim == len(features) * window``. Output column ``i`` is the
    probability of ``labels[i]``.
    """

    features: tuple[str, ...] = attrs.field(converter=tuple, validator=_validate_features)
    labels: tuple[str, ...] = attrs.field(converter=tuple, validator=_validate_labels)
    window: int = attrs.field(default=1, validator=_validate_window)
    training_date: str | None = attrs.field(default=None, validator=_validate_training_date)
    accuracy: float | None = attrs.field(default=None, validator=_validate_accuracy)
    description: str = attrs.field(default="", validator=_validate_text("description", True))
    framework: str = attrs.field(default="tflite", validator=_validate_text("framework", False))
    # Of model.tflite; None in repositories written before it was recorded (loaded with a warning).
    sha256: str | None = attrs.field(default=None, validator=_validate_sha256)
    # Non-empty: the version is served by these remote endpoints instead of a model.tflite.
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=tuple)
    timeout_ms: int = attrs.field(default=DEFAULT_TIMEOUT_MS, validator=_validate_timeout)

    @property
    def remote(self) -> bool:
        """Whether this version is answered by remote endpoints (no model.tflite)."""
        return bool(self.endpoints)

    @property
    def input_dim(self) -> int:
        """Width of the flat input vector the model expects."""
        return len(self.features) * self.window

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-friendly view (lists instead of tuples), in a stable key order."""
        view: dict[str, Any] = {
            "features": list(self.features),
            "window": self.window,
            "labels": list(self.labels),
            "training_date": self.training_date,
            "accuracy": self.accuracy,
            "description": self.description,
            "framework": self.framework,
        }
        if self.sha256 is not None:
            view["sha256"] = self.sha256
        if self.endpoints:
            view["endpoints"] = [e.to_dict() for e in self.endpoints]
            view["timeout_ms"] = self.timeout_ms
        return view


def _string_list(field: str, raw: object) -> tuple[str, ...]:
    """YAML lists become tuples; a bare string or mapping is a mistake worth naming."""
    if not isinstance(raw, list):
        raise MetadataError(f"{field}: expected a list of strings, got {type(raw).__name__}")
    return tuple(raw)


def _coerce_date(raw: object) -> object:
    """YAML turns ``2026-11-01`` into a date; keep it as the ISO string the author wrote."""
    if isinstance(raw, (dt.date, dt.datetime)):
        return raw.isoformat()
    return raw


def _load_mapping(text: str) -> dict[str, Any]:
    """Parse YAML and insist on a top-level mapping with only known keys."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MetadataError(f"metadata.yml is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MetadataError("metadata.yml must be a mapping of field names to values")
    unknown = sorted(str(k) for k in data if k not in _KNOWN_KEYS)
    if unknown:
        raise MetadataError(f"unknown field(s) {unknown}; allowed: {sorted(_KNOWN_KEYS)}")
    for required in ("features", "labels"):
        if required not in data:
            raise MetadataError(f"{required}: missing required field")
    return data


def parse_metadata(text: str) -> ModelMetadata:
    """Parse ``metadata.yml`` strictly; typos must fail loudly instead of silently defaulting."""
    data = _load_mapping(text)
    kwargs: dict[str, Any] = {
        "features": _string_list("features", data["features"]),
        "labels": _string_list("labels", data["labels"]),
    }
    if "endpoints" in data:
        kwargs["endpoints"] = parse_endpoints(data["endpoints"])
    elif "timeout_ms" in data:
        raise MetadataError("timeout_ms: only meaningful with endpoints")
    for key in ("window", "accuracy", "description", "framework", "sha256", "timeout_ms"):
        if key in data:
            kwargs[key] = data[key]
    if "training_date" in data:
        kwargs["training_date"] = _coerce_date(data["training_date"])
    if isinstance(kwargs.get("accuracy"), int) and not isinstance(kwargs["accuracy"], bool):
        kwargs["accuracy"] = float(kwargs["accuracy"])
    return ModelMetadata(**kwargs)


def dump_metadata(metadata: ModelMetadata) -> str:
    """Render metadata as YAML deterministically (stable key order) so rewrites are byte-identical."""
    return yaml.safe_dump(metadata.to_dict(), sort_keys=False, default_flow_style=None)


def version_dir(root: Path, name: str, version: str) -> Path:
    """Folder holding one model version."""
    return Path(root) / name / version


def names_endpoints(folder: Path) -> bool:
    """Whether a version folder without model.tflite is a remote version (its metadata names endpoints).

    A cheap textual check, so a scan never parses YAML; the loader validates the metadata fully.
    """
    try:
        text = (folder / METADATA_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.startswith("endpoints:") for line in text.splitlines())


def _model_versions(model_dir: Path) -> tuple[str, ...]:
    """Complete versions of one model (integer-named folder with model.tflite, or a remote version), numeric order."""
    found = [
        child.name
        for child in model_dir.iterdir()
        if child.is_dir() and is_version_name(child.name)
        and ((child / MODEL_FILE).is_file() or names_endpoints(child))
    ]
    return tuple(sorted(found, key=int))


def list_repository(root: Path) -> dict[str, tuple[str, ...]]:
    """Map model name -> its versions; hidden folders and models without a version are omitted."""
    root = Path(root)
    if not root.is_dir():
        return {}
    result: dict[str, tuple[str, ...]] = {}
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not is_model_name(model_dir.name):
            continue
        versions = _model_versions(model_dir)
        if versions:
            result[model_dir.name] = versions
    return result


def write_model_version(
    root: Path, name: str, version: str, tflite_bytes: bytes, metadata: ModelMetadata
) -> Path:
    """Publish one model version atomically; metadata first so the model file marks completion.

    The metadata written carries the sha256 of ``tflite_bytes``; a ``metadata.sha256`` given by
    the caller (an upload) must already match them.
    """
    digest = file_digest(tflite_bytes)
    if metadata.sha256 is not None and metadata.sha256 != digest:
        raise MetadataError(f"sha256: the model bytes hash to {digest}, not {metadata.sha256}")
    target = _publish_metadata(root, name, version, attrs.evolve(metadata, sha256=digest))
    atomic_write_bytes(target / MODEL_FILE, tflite_bytes)  # last: the model file marks completion
    return target


def write_remote_version(root: Path, name: str, version: str, metadata: ModelMetadata) -> Path:
    """Publish a remote version (metadata naming endpoints, no model file) atomically."""
    if not metadata.remote:
        raise MetadataError("endpoints: a remote version needs at least one endpoint")
    return _publish_metadata(root, name, version, metadata)


def _publish_metadata(root: Path, name: str, version: str, metadata: ModelMetadata) -> Path:
    """Check the name and version, then write ``metadata.yml`` atomically; the version's folder."""
    if not is_version_name(version):
        raise ValueError(f"version must be a positive integer string, got {version!r}")
    if not is_model_name(name):
        raise ValueError(f"invalid model name {name!r}")
    target = version_dir(root, name, version)
    atomic_write_bytes(target / METADATA_FILE, dump_metadata(metadata).encode("utf-8"))
    return target
