"""Fast path for the block-style YAML operators write: a line-based reader of a plain subset.

The subset is conservative (space indentation, identifier keys, single-line plain or quoted
scalars without escapes, single-line flow collections of such scalars, comments).  Anything
else, including every invalid document and every repeated key, raises ``_Slow`` and goes through
PyYAML, so the result is always what PyYAML returns.  Plain scalars are typed by PyYAML's own
resolver and constructor.  Anchors and aliases are outside the subset.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from actors.core.rules.yaml_nodes import _FAST_YAML, _PLAIN_TAGS, _node_data, _plain_tag, _Slow

_MISSING = object()
_INLINE_SCALARS: dict[str, Any] = {}
_KEY = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_TAIL = r"(?: +#.*| *)$"
_DQ_RE = re.compile(rf'"([^"\\]*)"{_TAIL}')
_SQ_RE = re.compile(rf"'([^']*)'{_TAIL}")
_PLAIN_RE = re.compile(rf"([A-Za-z0-9_./~][A-Za-z0-9_./~+\-:*?!,() ]*?){_TAIL}")
_FLOW_ITEM = r"""("[^"\\]*"|'[^']*'|[A-Za-z0-9_./~][A-Za-z0-9_./~+\-* ]*?) *"""
_FLOW_ENTRY_RE = re.compile(rf" *({_KEY}): +{_FLOW_ITEM}([,}}])")
_FLOW_SEQ_ITEM_RE = re.compile(rf" *{_FLOW_ITEM}([,\]])")
_FLOW_EMPTY_RE = re.compile(rf"(\{{ *\}}|\[ *\]){_TAIL}")
_TAIL_RE = re.compile(_TAIL)
_PLAIN_VALUE_LIMIT = 4096
_PLAIN_VALUES: dict[str, Any] = {}


def _plain_value(text: str) -> Any:
    """A plain scalar typed exactly as SafeLoader types it (values memoized: all immutable)."""
    known = _PLAIN_VALUES.get(text, _MISSING)
    if known is not _MISSING:
        return known
    value = _node_data(yaml.ScalarNode(_PLAIN_TAGS.get(text) or _plain_tag(text), text), set(), [])
    _remember(_PLAIN_VALUES, text, value)
    return value


def _remember(memo: dict[str, Any], key: str, value: Any) -> None:
    """Bounded memo insert: past the limit the memo starts over (inputs come from edited files)."""
    if len(memo) >= _PLAIN_VALUE_LIMIT:
        memo.clear()
    memo[key] = value


def _flow_scalar(token: str) -> Any:
    first = token[0]
    if first == '"' or first == "'":
        return token[1:-1]
    return _plain_value(token)


def _flow_value(text: str) -> Any:
    """A single-line flow mapping or sequence of scalars, or raise _Slow."""
    if _FLOW_EMPTY_RE.match(text):
        return {} if text[0] == "{" else []
    pos = 1
    if text[0] == "{":
        out: dict[Any, Any] = {}
        while True:
            m = _FLOW_ENTRY_RE.match(text, pos)
            if m is None:
                raise _Slow
            key = _plain_value(m.group(1))
            if key in out:
                raise _Slow
            out[key] = _flow_scalar(m.group(2))
            pos = m.end()
            if m.group(3) == "}":
                break
    else:
        items: list[Any] = []
        while True:
            m = _FLOW_SEQ_ITEM_RE.match(text, pos)
            if m is None:
                raise _Slow
            items.append(_flow_scalar(m.group(1)))
            pos = m.end()
            if m.group(2) == "]":
                break
        out = items  # type: ignore[assignment]
    if _TAIL_RE.match(text, pos) is None:
        raise _Slow
    return out




def _inline_value(text: str) -> Any:
    """The value after ``key: `` or ``- `` on one line (not empty, not a comment).

    Scalars are memoized by their line text (bounded): they are immutable, and a config
    repeats the same model names and horizon expressions over and over.
    """
    value = _INLINE_SCALARS.get(text, _MISSING)
    if value is _MISSING:
        value = _inline_value_uncached(text)
        if type(value) is not dict and type(value) is not list:
            _remember(_INLINE_SCALARS, text, value)
    return value


def _inline_value_uncached(text: str) -> Any:
    first = text[0]
    if first == '"':
        m = _DQ_RE.match(text)
    elif first == "'":
        m = _SQ_RE.match(text)
    elif first == "{" or first == "[":
        return _flow_value(text)
    else:
        m = _PLAIN_RE.match(text)
        if m is None:
            raise _Slow
        plain = m.group(1)
        if ": " in plain or plain[-1] == ":":
            raise _Slow
        return _plain_value(plain)
    if m is None:
        raise _Slow
    return m.group(1)


def _read_subset(rows: list[tuple[str, str, str, str]]) -> Any:
    """Build the data from (indent, dash, key, rest) rows; every deviation raises _Slow.

    ``stack`` holds the open block collections as [column, container, is_mapping, indentless];
    ``pending`` is the slot (container, key or index, column, in_mapping) of an entry whose line
    ended after ``key:`` or ``-``: a deeper block becomes its value, otherwise it stays null.
    """
    root: Any = None
    stack: list[list[Any]] = []
    pending: tuple[Any, Any, int, bool] | None = None
    for indent, dash, key, rest in rows:
        if not dash and not key:
            if rest and rest[0] != "#":
                raise _Slow  # a bare scalar line: multi-line scalar or scalar document
            continue
        col = len(indent)
        is_map = not dash
        # Find (or open) the collection this row's first item belongs to.
        if pending is not None:
            owner, slot, pcol, from_map = pending
            pending = None
            if col > pcol or (from_map and col == pcol and not is_map):
                container: Any = {} if is_map else []
                owner[slot] = container
                stack.append([col, container, is_map, col == pcol])
            else:
                container = None
        else:
            container = None
        if container is None:
            while stack and stack[-1][0] > col:
                stack.pop()
            if not stack:
                if root is not None or col:
                    raise _Slow
                root = {} if is_map else []
                stack.append([0, root, is_map, False])
            top = stack[-1]
            if top[0] == col and top[3] and is_map:
                stack.pop()
                top = stack[-1]
            if top[0] != col or top[2] != is_map:
                raise _Slow
            container = top[1]
        if dash:
            if key:  # "- key: ..." opens a mapping at the key's column
                mapping: dict[Any, Any] = {}
                container.append(mapping)
                col += len(dash)
                stack.append([col, mapping, True, False])
                container = mapping
            elif rest and rest[0] != "#":
                container.append(_inline_value(rest))
                continue
            else:
                container.append(None)
                pending = (container, len(container) - 1, col, False)
                continue
        name = _plain_value(key)
        if name in container:
            raise _Slow  # repeated key: the slow path reports it with its position
        if rest and rest[0] != "#":
            container[name] = _inline_value(rest)
        else:
            container[name] = None
            pending = (container, name, col, True)
    if root is None:
        raise _Slow
    return root


_ROW_RE = re.compile(rf"^( *)(- +|-$)?(?:({_KEY}):(?: +|$))?(.*)$", re.MULTILINE)


def _load_subset(text: str) -> Any:
    """Data for a document in the fast subset, else raise _Slow (never a YAML error).

    Only printable ASCII and newlines are accepted, so tabs, CR, BOMs and Unicode line breaks
    take the slow path; document markers and directives are rejected as bare scalar lines.
    """
    if not _FAST_YAML or not text.isascii() or not text.replace("\n", "").isprintable():
        raise _Slow
    return _read_subset(_ROW_RE.findall(text))

