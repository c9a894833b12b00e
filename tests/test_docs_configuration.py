"""docs/configuration.md names every key, option and environment variable the code reads.

Each list is collected from the code, not written down here, so a new schema key, a new
``app.py`` option or a new environment variable fails this test until the reference has it.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import attrs
import pytest

import app
from actors.core.rules import rule_section, validate
from actors.core.rules.settings import (
    AccessSettings,
    DataPlaneSettings,
    ModelThreshold,
    ReloadSettings,
    SwitchingSettings,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
#: Environment variable names: the service's and client's prefixes and the plain names they read.
ENV_NAME = re.compile(r"\"((?:MODEL_ROUTER|REMOTE_INFERENCE)_[A-Z0-9_]+|MODEL_REPOSITORY|PRELOAD_MODELS|REDIS_URL"
                      r"|LOG_LEVEL)\"")
#: Any other variable read through environ/env .get(...) or [...], or os.getenv.
ENV_READ = re.compile(r"(?:environ|\benv)(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]*)\"|getenv\(\s*\"([A-Z][A-Z0-9_]*)\"")


def documented() -> str:
    return DOC.read_text()


def schema_keys() -> list[str]:
    """Every key of the rules document, spelled as the reference's tables spell it."""
    sections = {"reload": ReloadSettings, "switching": SwitchingSettings, "data_plane": DataPlaneSettings,
                "access": AccessSettings}
    keys = [f"`config.{name}`" for name in validate._CONFIG_KEYS]
    keys += [f"`{section}.{f.name}`" for section, cls in sections.items() for f in attrs.fields(cls)]
    keys += [f"`model_thresholds.<model>.{f.name}`" for f in attrs.fields(ModelThreshold)]
    keys += [f"`rules[].{name}`" for name in rule_section._RULE_KEYS]
    keys += [f"`rules[].match.{name}`" for name in rule_section._MATCH_KEYS]
    keys += [f"`{name}`" for name in validate._TOP_KEYS]
    return keys


def app_options() -> list[str]:
    """The options ``python app.py --help`` lists (hidden ones excepted), from the real parser."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        app.parse_options(["--help"], {})
    return sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.getvalue())) - {"--help"})


def environment_variables() -> list[str]:
    """Every variable app.py and actors/ read, found in their sources."""
    names: set[str] = set()
    for path in [ROOT / "app.py", *sorted((ROOT / "actors").rglob("*.py"))]:
        text = path.read_text()
        names.update(ENV_NAME.findall(text))
        names.update(a or b for a, b in ENV_READ.findall(text))
    return sorted(names)


def test_collectors_find_what_the_code_reads() -> None:
    """The collectors themselves work: they find known entries (so an empty list cannot pass)."""
    assert {"`config.max_batch_items`", "`data_plane.port`", "`access.cors_origins`", "`reload.signal`",
            "`rules[].match.horizon_ms`", "`model_thresholds.<model>.min_samples`"} <= set(schema_keys())
    assert {"--config", "--data-port", "--batch-delay-us", "--certfile", "--access-log"} <= set(app_options())
    assert {"MODEL_ROUTER_DATA_PORT", "PRELOAD_MODELS", "REDIS_URL", "LOG_LEVEL", "REMOTE_INFERENCE_URL",
            "MODEL_ROUTER_ADMIN_KEY_FILE"} <= set(environment_variables())
    assert len(schema_keys()) >= 40 and len(app_options()) >= 15


def test_every_schema_key_is_documented() -> None:
    text = documented()
    missing = [key for key in schema_keys() if key not in text]
    assert missing == [], f"docs/configuration.md lacks these rules-file keys: {missing}"


def test_every_app_option_is_documented() -> None:
    text = documented()
    missing = [option for option in app_options() if f"`{option}" not in text]
    assert missing == [], f"docs/configuration.md lacks these `python app.py` options: {missing}"


def test_every_environment_variable_is_documented() -> None:
    text = documented()
    missing = [name for name in environment_variables() if f"`{name}`" not in text]
    assert missing == [], f"docs/configuration.md lacks these environment variables: {missing}"


def test_documented_defaults_match_the_code() -> None:
    """The Default column of each settings table is the attrs default (a changed default fails here)."""
    text = documented()
    sections = {"reload": ReloadSettings, "switching": SwitchingSettings, "data_plane": DataPlaneSettings}
    wrong = []
    for section, cls in sections.items():
        for f in attrs.fields(cls):
            row = re.search(r"^\| `" + re.escape(f"{section}.{f.name}") + r"` \|[^|]*\| ([^|]*) \|", text, re.M)
            assert row, f"no table row for {section}.{f.name}"
            default = f.default
            shown = row.group(1).strip().strip("`").strip('"')
            expected = "null" if default is None else str(default).lower() if isinstance(default, bool) else (
                f"{default:g}" if isinstance(default, float) else str(default))
            if shown != expected:
                wrong.append(f"{section}.{f.name}: documented {shown!r}, code {expected!r}")
    assert wrong == []
