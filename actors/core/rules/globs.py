"""Glob patterns for ``asset_class`` and ``symbol``: validation, coverage and compiled matchers.

fnmatch alone is too forgiving (an unbalanced ``[`` silently becomes literal text), so globs
are checked here first; matchers are compiled to the cheapest callable for the hot path.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
from collections.abc import Callable
from typing import Any

from actors.core.rules.problems import _echo

_WILDCARD_CHARS = frozenset("*?[")
_GLOB_CHARS_RE = re.compile(r"^[A-Za-z0-9_\-./:*?\[\]!]+$")


@functools.lru_cache(maxsize=4096)
def _glob_problem(pattern: str) -> str | None:
    """Explain why ``pattern`` is not an acceptable glob, or None when it is fine."""
    if not pattern:
        return "empty glob (use '*' to match anything)"
    if not _GLOB_CHARS_RE.match(pattern):
        bad = sorted({c for c in pattern if not _GLOB_CHARS_RE.match(c)})
        return f"glob {_echo(pattern)} contains disallowed characters {_echo(''.join(bad))}"
    return _bracket_problem(pattern)


def _bracket_problem(pattern: str) -> str | None:
    """Reject unbalanced or empty ``[...]`` classes, which fnmatch would silently treat as text."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "]":
            return f"glob {_echo(pattern)} has an unbalanced ']'"
        if ch == "[":
            close = pattern.find("]", i + 1)
            body = pattern[i + 1 : close] if close != -1 else ""
            if close == -1 or "[" in body:
                return f"glob {_echo(pattern)} has an unbalanced '['"
            if body in ("", "!"):
                return f"glob {_echo(pattern)} has an empty character class"
            i = close
        i += 1
    return None


def _has_wildcard(pattern: str) -> bool:
    return not _WILDCARD_CHARS.isdisjoint(pattern)


def _pattern_covers(a: str, b: str) -> bool:
    """Conservative 'every string matching b matches a' test for shadow warnings."""
    return a == "*" or a == b or (not _has_wildcard(b) and fnmatch.fnmatchcase(b, a))


@functools.lru_cache(maxsize=4096)
def _compile_glob(pattern: str) -> Callable[[str], Any]:
    """Cheapest matcher for a validated glob: equality for literals, a regex otherwise.

    Cached: matchers are pure, and a reload mostly compiles the globs of the previous one.
    """
    if pattern == "*":
        return _always
    if not _has_wildcard(pattern):
        return functools.partial(operator.eq, pattern)
    return re.compile(fnmatch.translate(pattern)).match


def _always(_: str) -> bool:
    return True
