"""Composed YAML nodes to data: libyaml's composer, a fast converter and the node-level checks.

libyaml composes the node tree and ``_node_data`` builds the data for the schema's types, several
times faster than PyYAML's Python constructor; anything unusual raises ``_Slow`` so the caller
hands the node to SafeConstructor and the result is always what SafeLoader returns.  The same
node graph is checked for repeated keys (which PyYAML silently resolves as last-wins) and for its
size once aliases are expanded (a "billion laughs" document is tiny as text and as a graph, but
anything that walks the data -- hashing, error messages -- expands every alias).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import yaml

from actors.core.rules.problems import DOCUMENT_PATH, _echo, _join, _path_key, _Problems

_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Slow(Exception):
    """Input a fast path does not handle; the general (PyYAML) path decides instead."""


#: Tags the fast converter builds itself; every other tag (timestamps, binary, sets, merge keys,
#: explicit tags, ...) goes through PyYAML's SafeConstructor so behaviour stays identical.
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_PLAIN_TAG_MEMO_LIMIT = 4096
_PLAIN_TAGS: dict[str, str] = {}


class _ComposeLoader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The SafeLoader's parser and composer with a memoized implicit-tag resolver.

    Resolution of a plain scalar depends only on its text (the resolver tables are fixed and
    SafeLoader has no path resolvers), so memoizing it is exact; quoted scalars and collections
    always get the default tags, as in ``BaseResolver.resolve``.
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR_TAG
            return _PLAIN_TAGS.get(value) or _plain_tag(value)
        return _MAP_TAG if kind is yaml.MappingNode else _SEQ_TAG


def _plain_tag(value: str) -> str:
    """Resolve a plain scalar's tag with SafeLoader's own rules and memoize it (bounded)."""
    tag: str = yaml.resolver.BaseResolver.resolve(_RESOLVER, yaml.ScalarNode, value, (True, False))
    if len(_PLAIN_TAGS) >= _PLAIN_TAG_MEMO_LIMIT:
        _PLAIN_TAGS.clear()
    _PLAIN_TAGS[value] = tag
    return tag


_RESOLVER = yaml.resolver.Resolver()  # the resolver class SafeLoader and CSafeLoader both use
#: The fast paths rely on SafeLoader having no path resolvers and on its tables being Resolver's.
_FAST_YAML = (not _SAFE_LOADER.yaml_path_resolvers
              and _SAFE_LOADER.yaml_implicit_resolvers is yaml.resolver.Resolver.yaml_implicit_resolvers)
if not _FAST_YAML:  # pragma: no cover - nothing in this service registers resolvers
    _ComposeLoader = _SAFE_LOADER  # type: ignore[misc]

_SCALAR_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _node_data(node: yaml.Node, seen: set[int], dups: list[yaml.MappingNode]) -> Any:
    """Build plain data from a composed node, exactly as SafeConstructor would.

    Handles the schema's types only; raises _Slow for anything else (other tags, a collection
    reached twice through an alias).  Mappings with fewer keys than entries go to ``dups``.
    """
    tag = node.tag
    cls = type(node)
    if cls is yaml.ScalarNode:
        if tag == _STR_TAG:
            return node.value
        if tag == _INT_TAG:
            value = node.value
            if value.isdigit() and value.isascii() and (value[0] != "0" or len(value) == 1):
                return int(value)
            return _SCALAR_CONSTRUCTOR.construct_yaml_int(node)
        if tag == _NULL_TAG:
            return None
        if tag == _BOOL_TAG:
            return _SCALAR_CONSTRUCTOR.construct_yaml_bool(node)
        if tag == _FLOAT_TAG:
            return _SCALAR_CONSTRUCTOR.construct_yaml_float(node)
        raise _Slow
    if id(node) in seen:
        raise _Slow
    seen.add(id(node))
    if cls is yaml.MappingNode and tag == _MAP_TAG:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            out[_node_data(key_node, seen, dups)] = _node_data(value_node, seen, dups)
        if len(out) != len(node.value):
            dups.append(node)
        return out
    if cls is yaml.SequenceNode and tag == _SEQ_TAG:
        return [_node_data(item, seen, dups) for item in node.value]
    raise _Slow


def _scalar_key(node: yaml.Node) -> tuple[bool, Any]:
    """(True, key) for a scalar key node the fast converter handles, else (False, None)."""
    if type(node) is not yaml.ScalarNode or node.tag == "tag:yaml.org,2002:merge":
        return False, None
    try:
        return True, _node_data(node, set(), [])
    except Exception:  # any key the converter cannot build is simply not compared
        return False, None


def _mark_text(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _duplicate_keys(node: yaml.Node, path: str, probs: _Problems, seen: set[int]) -> None:
    """Report repeated mapping keys with the config path of the repeated key (slow, rare)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", probs, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            ok, key = _scalar_key(key_node)
            if not ok:
                continue
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:
                continue
            if path == DOCUMENT_PATH:
                child = "" if key == "model_router" else f"{DOCUMENT_PATH}.{_path_key(key)}"
            else:
                child = _join(path, _path_key(key))
            if earlier is not key_node:
                probs.add(child or f"{DOCUMENT_PATH}.{_path_key(key)}",
                          f"duplicate key {_echo(key)} at {_mark_text(key_node.start_mark)} "
                          f"(first defined at {_mark_text(earlier.start_mark)})")
            _duplicate_keys(value_node, child, probs, seen)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    """Child nodes of a collection (keys and values of a mapping), none for a scalar."""
    if type(node) is yaml.MappingNode:
        return chain.from_iterable(node.value)
    if type(node) is yaml.SequenceNode:
        return iter(node.value)
    return iter(())


def _expanded_size(root: yaml.Node, node_limit: int, char_limit: int) -> tuple[int, int]:
    """(nodes, scalar characters) of the document with every alias expanded.

    Subtree sizes are memoized, so a graph of shared nodes is walked once however often it is
    referenced, and counting stops as soon as one subtree's total passes a limit: the work is
    bounded by the distinct nodes (the text), never by the expansion.  A node reached again
    while it is still open (a recursive alias) counts once, as constructors and ``repr`` keep
    such a cycle a cycle.  Iterative, so depth is no issue.
    """
    scalar = yaml.ScalarNode
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes = {id(root)}
    stack: list[tuple[yaml.Node, Iterator[yaml.Node]]] = [(root, _children(root))]
    totals: list[tuple[int, int]] = [(1, 0)]
    while True:
        node, children = stack[-1]
        nodes, chars = totals[-1]
        deeper = None
        for child in children:
            if type(child) is scalar:
                nodes += 1
                chars += len(child.value)
            elif (known := sizes.get(id(child))) is not None:
                nodes += known[0]
                chars += known[1]
            elif id(child) in open_nodes:
                nodes += 1
            else:
                deeper = child
                break
            if nodes > node_limit or chars > char_limit:
                return nodes, chars
        if deeper is not None:
            totals[-1] = (nodes, chars)
            open_nodes.add(id(deeper))
            stack.append((deeper, _children(deeper)))
            totals.append((1, 0))
            continue
        stack.pop()
        totals.pop()
        open_nodes.discard(id(node))
        sizes[id(node)] = (nodes, chars)
        if not stack:
            return nodes, chars
        parent_nodes, parent_chars = totals[-1]
        totals[-1] = (parent_nodes + nodes, parent_chars + chars)
        if parent_nodes + nodes > node_limit or parent_chars + chars > char_limit:
            return parent_nodes + nodes, parent_chars + chars
