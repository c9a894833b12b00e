"""Model names, version numbers, and the lifecycle of one model version.

One pattern decides what a model name is, everywhere: the HTTP edge checks it, the
repository lists only folders that match it and refuses to write any other. A name
starts with a letter or digit, so ``.``, ``..`` and hidden or private folders (``_x``)
can never be models.

The lifecycle of a version is a table (:data:`VERSION_TRANSITIONS`), in the manner of
h11's ``_state.py``: the status a version shows is computed from the facts its owners
publish (:func:`version_status`), and every change between two statuses that the
service makes is one of the table's edges, which the tests walk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

# A model version everywhere in the service: (model name, version number as text).
ModelKey = tuple[str, str]

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION_RE = re.compile(r"[1-9][0-9]{0,8}")

MODEL_NAME_RULE = "1-64 characters of letters, digits, '_', '-', '.', starting with a letter or digit"


def is_model_name(name: str) -> bool:
    """True for a name the repository can hold (see :data:`MODEL_NAME_RE`)."""
    return MODEL_NAME_RE.fullmatch(name) is not None and ".." not in name


def is_version_name(name: str) -> bool:
    """True for canonical positive integers ("1", "10"); "01", "v2", "latest" are not versions."""
    return VERSION_RE.fullmatch(name) is not None


def latest_version(versions: Iterable[str]) -> str | None:
    """Highest version by numeric value ("10" beats "9"); non-version strings are ignored."""
    valid = [v for v in versions if is_version_name(v)]
    return max(valid, key=int) if valid else None


# --------------------------------------------------------------------------- lifecycle

UNLOADED = "unloaded"
LOADING = "loading"
READY = "ready"
SERVING = "serving"
DRAINING = "draining"
FAILED = "failed"
DEREGISTERED = "deregistered"

VERSION_STATUSES = (UNLOADED, LOADING, READY, SERVING, DRAINING, FAILED, DEREGISTERED)

# status -> event -> next status. Events are what the owners do: the model cache loads,
# fails and unloads; the transition manager gives and takes traffic and drains; an
# operator registers and deregisters.
VERSION_TRANSITIONS: Mapping[str, Mapping[str, str]] = {
    UNLOADED: {"load": LOADING, "deregister": DEREGISTERED},
    LOADING: {"loaded": READY, "load_failed": FAILED},
    READY: {"traffic": SERVING, "unload": UNLOADED, "deregister": DEREGISTERED},
    SERVING: {"traffic_removed": DRAINING},
    DRAINING: {"drained": UNLOADED, "traffic": SERVING},
    FAILED: {"load": LOADING, "deregister": DEREGISTERED},
    DEREGISTERED: {"register": UNLOADED},
}


class InvalidVersionTransition(ValueError):
    """A version was asked to change status along an edge the lifecycle does not have."""


def next_status(status: str, event: str) -> str:
    """The status after ``event``; :class:`InvalidVersionTransition` if the table has no such edge."""
    try:
        return VERSION_TRANSITIONS[status][event]
    except KeyError:
        raise InvalidVersionTransition(f"a {status} version cannot take {event!r}") from None


@attrs.frozen
class VersionFacts:
    """What the owners know of one version at one moment, gathered by the caller."""

    deregistered: bool = False
    draining: bool = False
    loaded: bool = False
    loading: bool = False
    failed: bool = False
    traffic_share: float = 0.0


def version_status(facts: VersionFacts) -> str:
    """The one status a version shows, from its owners' facts (first match wins)."""
    if facts.deregistered:
        return DEREGISTERED
    if facts.draining:
        return DRAINING
    if facts.loaded:
        return SERVING if facts.traffic_share > 0 else READY
    if facts.loading:
        return LOADING
    if facts.failed:
        return FAILED
    return UNLOADED
