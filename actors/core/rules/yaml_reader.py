"""YAML text to plain data, exactly as ``yaml.load(text, Loader=SafeLoader)`` would build it.

Three routes, fastest first: the line-based subset reader, libyaml's composer with the fast
node converter, and PyYAML's SafeConstructor for anything unusual.  Errors are located
problems, repeated keys are problems with paths, and a document whose alias-expanded node
count passes ``MAX_EXPANDED_NODES`` is refused before anything expands it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import yaml

from actors.core.rules.problems import DOCUMENT_PATH, _Problems
from actors.core.rules.yaml_nodes import _ComposeLoader, _duplicate_keys, _expanded_size, _node_data, _Slow
from actors.core.rules.yaml_subset import _load_subset

#: Most nodes a document may have once every alias is expanded.  A rules file with thousands
#: of rules has tens of thousands; an alias bomb has billions and would freeze the service.
MAX_EXPANDED_NODES = 100_000
#: Most scalar characters once every alias is expanded: one long string referenced by many
#: aliases is small as text but large to hash (the config hash serialises the data).
MAX_EXPANDED_CHARS = 10_000_000
#: Matches every anchor (``&`` then an anchor character); aliases need one, so a document
#: without a match shares no nodes and is as large as its text.  False hits only cost a count.
_MAYBE_ANCHOR_RE = re.compile(r"&[^\s,\[\]{}]")


class _Invalid(Exception):
    """The document is not valid YAML (or is refused); the problem is already recorded."""


def _load_yaml(text: str, probs: _Problems) -> Any:
    """Parse YAML safely with located errors; raise _Invalid when the text is not usable YAML.

    libyaml (when present) composes the node tree and a small converter builds the data
    for the schema's types, which is several times faster than PyYAML's Python constructor;
    anything unusual is handed to SafeConstructor, so the result is always what
    ``yaml.load(text, Loader=SafeLoader)`` returns.  Repeated keys (which PyYAML silently
    resolves as last-wins) are reported as problems with their paths.

    Only documents with an anchor can share nodes through aliases, so only they are measured
    against ``MAX_EXPANDED_NODES`` and ``MAX_EXPANDED_CHARS``, before anything expands them.
    """
    with contextlib.suppress(_Slow):  # outside the plain subset: take the libyaml route below
        return _load_subset(text)
    try:
        node = yaml.compose(text, Loader=_ComposeLoader)
        if node is None:
            return None
        if _MAYBE_ANCHOR_RE.search(text) is not None:
            _refuse_if_too_large(node, probs)
        dups: list[yaml.MappingNode] = []
        try:
            data = _node_data(node, set(), dups)
        except Exception:
            # Not handled above (or a genuine construction error, which SafeConstructor raises
            # again).  Check keys first: constructing merge keys (<<) rewrites mapping nodes.
            found = _Problems()
            _duplicate_keys(node, DOCUMENT_PATH, found, set())
            data = yaml.constructor.SafeConstructor().construct_document(node)
            probs.details.extend(found.details)
            return data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        probs.add(DOCUMENT_PATH, f"invalid YAML{where}: {problem}")
        raise _Invalid from exc
    if dups:
        _duplicate_keys(node, DOCUMENT_PATH, probs, set())
    return data


def _refuse_if_too_large(node: yaml.Node, probs: _Problems) -> None:
    """Record a problem and raise _Invalid when the alias-expanded document is over a limit."""
    nodes, chars = _expanded_size(node, MAX_EXPANDED_NODES, MAX_EXPANDED_CHARS)
    if nodes > MAX_EXPANDED_NODES:
        probs.add(DOCUMENT_PATH, f"document too large: more than {MAX_EXPANDED_NODES} YAML nodes once "
                  "aliases are expanded (the MAX_EXPANDED_NODES limit)")
        raise _Invalid
    if chars > MAX_EXPANDED_CHARS:
        probs.add(DOCUMENT_PATH, f"document too large: more than {MAX_EXPANDED_CHARS} characters of scalars "
                  "once aliases are expanded (the MAX_EXPANDED_CHARS limit)")
        raise _Invalid
