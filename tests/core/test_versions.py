"""Model names, version numbers, and the version lifecycle table."""

from __future__ import annotations

import itertools

import pytest

from actors.core.versions import (
    VERSION_STATUSES,
    VERSION_TRANSITIONS,
    InvalidVersionTransition,
    VersionFacts,
    is_model_name,
    is_version_name,
    latest_version,
    next_status,
    version_status,
)


@pytest.mark.parametrize("name", ["fast", "tlob_tiny", "m.v2", "A-1", "9lives", "x" * 64])
def test_model_names_accepted(name: str) -> None:
    assert is_model_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "...", "_x", "-x", ".hidden", "a/b", "a\\b", "a..b",
                                  "x" * 65, "naïve", "a b"])
def test_model_names_refused(name: str) -> None:
    """Regression: '..', '.', '...' and '_x' passed the edge check and then broke the repository."""
    assert not is_model_name(name)


def test_versions_and_newest() -> None:
    assert is_version_name("1") and is_version_name("10")
    assert not any(is_version_name(v) for v in ("0", "01", "v2", "latest", "", "1.0"))
    assert latest_version(["9", "10", "2", "junk"]) == "10"
    assert latest_version([]) is None


def test_the_table_covers_every_status_and_stays_within_it() -> None:
    assert set(VERSION_TRANSITIONS) == set(VERSION_STATUSES)
    for status, edges in VERSION_TRANSITIONS.items():
        for event, target in edges.items():
            assert target in VERSION_STATUSES
            assert next_status(status, event) == target


def test_missing_edges_are_refused() -> None:
    every_event = {e for edges in VERSION_TRANSITIONS.values() for e in edges}
    for status, event in itertools.product(VERSION_STATUSES, every_event):
        if event not in VERSION_TRANSITIONS[status]:
            with pytest.raises(InvalidVersionTransition):
                next_status(status, event)


def test_every_status_is_reachable_from_unloaded() -> None:
    reached, frontier = {"unloaded"}, ["unloaded"]
    while frontier:
        for target in VERSION_TRANSITIONS[frontier.pop()].values():
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(VERSION_STATUSES)


@pytest.mark.parametrize(("facts", "status"), [
    (VersionFacts(), "unloaded"),
    (VersionFacts(loading=True), "loading"),
    (VersionFacts(loaded=True), "ready"),
    (VersionFacts(loaded=True, traffic_share=0.05), "serving"),
    (VersionFacts(loaded=True, traffic_share=1.0, draining=True), "draining"),
    (VersionFacts(failed=True), "failed"),
    (VersionFacts(failed=True, loading=True), "loading"),
    (VersionFacts(deregistered=True, loaded=True, traffic_share=1.0), "deregistered"),
])
def test_status_from_facts(facts: VersionFacts, status: str) -> None:
    assert version_status(facts) == status
