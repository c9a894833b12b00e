"""ConfigError, the problem collector and bounded echoes of offending values.

Every message that quotes a value from the config goes through ``_echo``/``_describe``: a
value may be huge (a long string, or a YAML alias tree that expands exponentially), and a
full ``repr`` of it would freeze the service and flood logs and HTTP responses.
"""

from __future__ import annotations

import itertools
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

#: Path of problems that concern the whole document rather than a key under ``model_router``.
DOCUMENT_PATH = "<document>"
#: Longest key text used in a problem path before it is shortened with ``...``.
_PATH_KEY_LIMIT = 80
#: Longest echo of a value in a message; reprlib bounds each level, this bounds the whole.
_ECHO_LIMIT = 200


class ConfigError(ValueError):
    """Every problem found in a config, so an operator can fix them all in one edit.

    ``message`` is a one-line summary for logs and HTTP responses; ``details`` holds one
    ``{"path": ..., "message": ...}`` dict per problem, with paths relative to ``model_router``.
    """

    def __init__(self, message: str, details: Iterable[Mapping[str, str]] = ()) -> None:
        self.message = message
        self.details: tuple[dict[str, str], ...] = tuple(dict(d) for d in details)
        super().__init__(message)

    def __str__(self) -> str:
        lines = [self.message]
        lines.extend(f"  {d['path']}: {d['message']}" for d in self.details)
        return "\n".join(lines)


class _Problems:
    """Collects every problem so one parse reports them all."""

    def __init__(self) -> None:
        self.details: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.details.append({"path": path, "message": message})


class _BoundedRepr(reprlib.Repr):
    """``repr`` with size limits; dicts keep insertion order, as the built-in repr does."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = 4
        self.maxlist = 6
        self.maxtuple = 6
        self.maxset = 6
        self.maxfrozenset = 6
        self.maxstring = 80
        self.maxlong = 40
        self.maxother = 80

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        inner = level - 1
        items = itertools.islice(x.items(), self.maxdict)
        pieces = [f"{self.repr1(k, inner)}: {self.repr1(v, inner)}" for k, v in items]
        if len(x) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"


_BOUNDED = _BoundedRepr()


def _echo(value: Any) -> str:
    """A repr of ``value`` short enough for any message, whatever the value's size or depth.

    Small values read exactly like ``repr``; large ones keep their start (and, for strings,
    their end) around ``...``.  Built breadth- and depth-limited, so a structure that shares
    sub-structures billions of times over is never walked.
    """
    text = _BOUNDED.repr(value)
    return text if len(text) <= _ECHO_LIMIT else f"{text[:_ECHO_LIMIT - 3]}..."


def _describe(value: Any) -> str:
    """Type and bounded repr of a rejected value, e.g. ``int 5`` or ``list [1, 2, ...]``."""
    return f"{type(value).__name__} {_echo(value)}"


def _path_key(key: Any) -> str:
    """A mapping key as it appears in a problem path, shortened when very long."""
    text = str(key)
    if len(text) <= _PATH_KEY_LIMIT:
        return text
    half = (_PATH_KEY_LIMIT - 3) // 2
    return f"{text[:half]}...{text[-half:]}"


def _join(base: str, key: str) -> str:
    return key if not base else f"{base}.{key}"


def _summary(details: list[dict[str, str]]) -> str:
    first = details[0]
    more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
    head = f"invalid router config: {len(details)} problem(s)"
    return f"{head}; first: {first['path']}: {first['message']}{more}"
