"""The rules file on disk: the bounded read, the repository path, and the backups."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.core.rules import parse_config
from actors.storage.config_files import (
    MAX_CONFIG_BYTES,
    backup_name,
    backups_to_prune,
    read_config_text,
    resolve_repository,
    write_backup,
)
from tests.conftest import render_config


def test_backup_name_is_fixed_width_utc() -> None:
    """Stem, UTC stamp, zero-padded milliseconds and the config hash."""
    assert backup_name("rules", 1_700_000_000.5, "abc123") == "rules.20231114T221320.500Z.abc123.yml"
    assert backup_name("rules", 1_700_000_000.0, "h") == "rules.20231114T221320.000Z.h.yml"


def test_backups_to_prune_oldest_beyond_keep() -> None:
    """Names sort chronologically; everything but the newest ``keep`` is returned, oldest first."""
    names = [backup_name("rules", ts, "h") for ts in (1_700_000_300.0, 1_700_000_100.0, 1_700_000_200.25)]
    assert backups_to_prune(names, 1) == [names[1], names[2]]
    assert backups_to_prune(names, 3) == []
    assert backups_to_prune(names, 10) == []
    assert backups_to_prune(names, 0) == sorted(names)


def test_write_backup_writes_text_and_prunes_to_keep(tmp_path: Path) -> None:
    """The new backup holds the text; older backups beyond ``keep`` are deleted, others untouched."""
    folder = tmp_path / "backups"
    folder.mkdir()
    old = [folder / backup_name("rules", 1_600_000_000.0 + i, f"old{i}") for i in range(3)]
    for path in old:
        path.write_text("old")
    unrelated = folder / "notes.txt"
    unrelated.write_text("keep me")
    target = write_backup(folder, "rules", "model_router: {}\n", "newhash", keep=2)
    assert target.read_text() == "model_router: {}\n"
    assert target.name.endswith(".newhash.yml") and target.name.startswith("rules.")
    remaining = sorted(p.name for p in folder.iterdir())
    assert remaining == sorted([old[2].name, target.name, "notes.txt"])
    assert not list(folder.glob("*.tmp"))


def test_write_backup_creates_folder(tmp_path: Path) -> None:
    """A missing backups folder is created."""
    target = write_backup(tmp_path / "a" / "backups", "rules", "x", "h", keep=1)
    assert target.is_file()


def test_write_backup_does_not_prune_other_configs_backups(tmp_path: Path) -> None:
    """Pruning for ``rules.yml`` must leave the backups of ``rules.prod.yml`` (same folder) alone.

    Known bug (reported): the prune glob ``f"{stem}.*Z.*.yml"`` for stem ``rules`` also matches
    ``rules.prod.<stamp>Z.<hash>.yml``; the foreign name sorts after every digit-led stamp, so
    the backup just written is counted as "oldest" and deleted (or the other config's are).
    """
    folder = tmp_path / "backups"
    folder.mkdir()
    other = folder / backup_name("rules.prod", 1_600_000_000.0, "prodhash")
    other.write_text("prod config")
    target = write_backup(folder, "rules", "text", "h1", keep=1)
    assert other.exists(), "write_backup for 'rules' pruned a backup of 'rules.prod'"
    assert target.exists(), "write_backup for 'rules' deleted its own new backup"


def test_read_config_text_size_bound(tmp_path: Path) -> None:
    """Exactly the limit is read; one byte more is a ValueError."""
    path = tmp_path / "c.yml"
    path.write_bytes(b"#" * MAX_CONFIG_BYTES)
    assert len(read_config_text(path)) == MAX_CONFIG_BYTES
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ValueError, match="larger than"):
        read_config_text(path)


def test_read_config_text_errors(tmp_path: Path) -> None:
    """A missing file raises OSError; invalid UTF-8 raises UnicodeError."""
    with pytest.raises(FileNotFoundError):
        read_config_text(tmp_path / "missing.yml")
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"caf\xe9")
    with pytest.raises(UnicodeError):
        read_config_text(path)


def test_resolve_repository(tmp_path: Path, repo: Path) -> None:
    """An override wins; otherwise the config's path is resolved against the config's folder."""
    relative = parse_config(render_config(repo).replace(f'"{repo}"', '"../models"'))
    config_path = tmp_path / "conf" / "rules.yml"
    assert resolve_repository(config_path, relative, None) == (tmp_path / "models").resolve()
    assert resolve_repository(config_path, relative, Path("/elsewhere")) == Path("/elsewhere")
    absolute = parse_config(render_config(repo))
    assert resolve_repository(Path("/x/y/rules.yml"), absolute, None) == repo.resolve()


# ------------------------------------------------------------------ the actor ----
