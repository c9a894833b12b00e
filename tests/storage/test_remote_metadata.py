"""metadata.yml naming remote endpoints: strict validation, round trip, listing and loading."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from actors.model_cache import load_version
from actors.serving.remote_model import RemoteModel
from actors.storage.model_repo import (
    MODEL_FILE,
    Endpoint,
    MetadataError,
    dump_metadata,
    list_repository,
    parse_metadata,
    write_remote_version,
)
from actors.storage.tflite_backend import LoadedModel, ModelLoadError

HEAD = "features: [a, b, c]\nlabels: [SELL, HOLD, BUY]\n"


def meta(endpoints: str, extra: str = "") -> str:
    return HEAD + extra + "endpoints:\n" + textwrap.indent(textwrap.dedent(endpoints), "  ")


def test_endpoints_parse_with_defaults_and_round_trip() -> None:
    parsed = parse_metadata(meta("""\
        - {url: "http://10.0.0.1:8001/", model: fast, weight: 3}
        - {url: "https://b.example", model: fast, version: 2}
        """, "timeout_ms: 750\n"))
    assert parsed.remote and parsed.timeout_ms == 750
    assert parsed.endpoints == (Endpoint("http://10.0.0.1:8001", "fast", None, 3.0),
                                Endpoint("https://b.example", "fast", "2", 1.0))
    assert parsed.endpoints[1].infer_url == "https://b.example/v2/models/fast/versions/2/infer"
    assert parsed.endpoints[0].ready_url == "http://10.0.0.1:8001/v2/health/ready"
    assert parse_metadata(dump_metadata(parsed)) == parsed
    local = parse_metadata(HEAD)
    assert not local.remote and "endpoints" not in local.to_dict()


@pytest.mark.parametrize(("entries", "message"), [
    ('- {url: "ftp://x", model: fast}', "endpoints[0].url"),
    ('- {url: "http://", model: fast}', "endpoints[0].url"),
    ('- {url: "http://a b", model: fast}', "endpoints[0].url"),
    ('- {url: 5, model: fast}', "endpoints[0].url"),
    ('- {url: "http://a", model: "../x"}', "endpoints[0].model"),
    ('- {url: "http://a"}', "endpoints[0].model"),
    ('- {url: "http://a", model: fast, weight: 0}', "endpoints[0].weight"),
    ('- {url: "http://a", model: fast, weight: -1}', "endpoints[0].weight"),
    ('- {url: "http://a", model: fast, weight: true}', "endpoints[0].weight"),
    ('- {url: "http://a", model: fast, weight: .nan}', "endpoints[0].weight"),
    ('- {url: "http://a", model: fast, version: "01"}', "endpoints[0].version"),
    ('- {url: "http://a", model: fast, retries: 2}', "endpoints[0]: unknown field"),
    ('- "http://a"', "endpoints[0]: expected a mapping"),
    ('- {url: "http://a", model: fast}\n- {url: "http://a/", model: fast}', "listed twice"),
])
def test_bad_endpoints_are_named(entries: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_metadata(meta(entries))


def test_endpoint_count_and_timeout_bounds() -> None:
    with pytest.raises(MetadataError, match=r"1\.\.16"):
        parse_metadata(HEAD + "endpoints: []\n")
    many = "".join(f'- {{url: "http://h{i}", model: fast}}\n' for i in range(17))
    with pytest.raises(MetadataError, match=r"1\.\.16"):
        parse_metadata(meta(many))
    assert len(parse_metadata(meta(many.split("\n", 1)[1])).endpoints) == 16
    for bad in ("0", "60001", "1.5", "true"):
        with pytest.raises(MetadataError, match="timeout_ms"):
            parse_metadata(meta('- {url: "http://a", model: fast}', f"timeout_ms: {bad}\n"))
    with pytest.raises(MetadataError, match="only meaningful with endpoints"):
        parse_metadata(HEAD + "timeout_ms: 100\n")


def test_remote_versions_are_listed_and_load_as_remote_models(tmp_path: Path, repo: Path) -> None:
    remote = parse_metadata(meta('- {url: "http://127.0.0.1:9", model: fast}'))
    write_remote_version(repo, "fast", "2", remote)
    (repo / "fast" / "3").mkdir()
    (repo / "fast" / "3" / "metadata.yml").write_text(HEAD)  # neither a model nor endpoints: incomplete
    assert list_repository(repo)["fast"] == ("1", "2")
    loaded = load_version(repo / "fast" / "2", "fast", "2")
    assert isinstance(loaded, RemoteModel)
    assert loaded.input_dim == 3 and loaded.n_labels == 3 and loaded.state.up == (True,)
    with pytest.raises(RuntimeError, match="is remote"):
        loaded.predict(None)  # type: ignore[arg-type]
    assert isinstance(load_version(repo / "fast" / "1", "fast", "1"), LoadedModel)
    (repo / "fast" / "2" / MODEL_FILE).write_bytes((repo / "fast" / "1" / MODEL_FILE).read_bytes())
    with pytest.raises(ModelLoadError, match="both"):
        load_version(repo / "fast" / "2", "fast", "2")
    (repo / "fast" / "4").mkdir()
    (repo / "fast" / "4" / "metadata.yml").write_text(HEAD + "endpoints: [{url: 'gopher://x', model: fast}]\n")
    with pytest.raises(ModelLoadError, match="invalid metadata in fast/4"):
        load_version(repo / "fast" / "4", "fast", "4")
    with pytest.raises(MetadataError):
        write_remote_version(repo, "fast", "5", parse_metadata(HEAD))
