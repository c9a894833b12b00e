"""Both rules sources write with a compare-and-set on the version."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.storage.rules_sources import FileRules, RedisRules, StaleWrite, text_version
from tests.conftest import RedisServer


def test_file_writes_check_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("a: 1\n")
    source = FileRules(path)
    text, version = source.read()
    assert (text, version) == ("a: 1\n", text_version("a: 1\n"))
    new = source.write("a: 2\n", version)
    assert source.read() == ("a: 2\n", new)
    with pytest.raises(StaleWrite) as stale:
        source.write("a: 3\n", version)
    assert stale.value.current == new and path.read_text() == "a: 2\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_redis_versions_increase_and_stale_writes_are_refused(redis_server: RedisServer) -> None:
    source = RedisRules.connect(redis_server.url, key="test:rules")
    with pytest.raises(FileNotFoundError):
        source.read()
    assert source.seed("a: 1\n") == "1"
    assert source.seed("a: 9\n") == "1"  # a document is there: seeding changes nothing
    assert source.write("a: 2\n", "1") == "2"
    with pytest.raises(StaleWrite) as stale:
        source.write("a: 3\n", "1")
    assert stale.value.current == "2"
    assert source.write("a: 4\n", None) == "3"
    assert source.read() == ("a: 4\n", "3")
    source.close()
