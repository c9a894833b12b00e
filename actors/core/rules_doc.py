"""The rules document as data: parse a body, patch its rule list, and say what a change does.

The rules API edits one document (the ``model_router`` YAML). These pure functions
return a new document for each edit (the input is never mutated), so the caller can
validate the result with the same parser as a file reload before anything is written.
:func:`changed_buckets` is the dry run's answer to "what would this change route
differently": every (asset class, horizon bucket) pair whose model differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from actors.core.rules import RouterConfig, compile_snapshot
from actors.core.rules.problems import _Problems
from actors.core.rules.yaml_reader import _Invalid, _load_yaml

ROOT = "model_router"
# libyaml's loader and dumper when PyYAML has them: an edit parses and writes the whole document.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class DocumentError(ValueError):
    """The body is not a rules document, or an edit does not fit it (``path`` says where)."""

    def __init__(self, message: str, path: str = "<document>") -> None:
        super().__init__(message)
        self.path = path


MAX_DEPTH = 64  # a rules document is a handful of levels deep; anything deeper is refused


def _too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``data`` nests deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """A document from a request body: JSON when the content type says so, else YAML.

    YAML goes through the rules file's own reader, so alias expansion is bounded the same
    way; any nesting deeper than MAX_DEPTH is refused before the document is walked.
    """
    kind = "JSON" if "json" in content_type.lower() else "YAML"
    found = _Problems()
    try:
        text = raw.decode("utf-8")
        if kind == "JSON":
            data = json.loads(text)
        else:
            try:
                data = _load_yaml(text, found)
            except _Invalid:
                data = None
    except RecursionError as exc:
        raise DocumentError(f"body nests deeper than {MAX_DEPTH} levels") from exc
    except (UnicodeError, ValueError) as exc:
        raise DocumentError(f"body is not valid {kind}: {str(exc)[:200]}") from exc
    if found.details:
        raise DocumentError(f"body is not valid YAML: {found.details[0]['message']}")
    if _too_deep(data):
        raise DocumentError(f"body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict) or not isinstance(data.get(ROOT), dict):
        raise DocumentError(f"the document must be a mapping with a '{ROOT}' section")
    return data


def load_text(text: str) -> dict[str, Any]:
    """The stored document (YAML text) as data."""
    return parse_body(text.encode("utf-8"), "application/yaml")


def dump(document: Mapping[str, Any]) -> str:
    """YAML text, keys in the order the document has them."""
    return yaml.dump(dict(document), Dumper=_DUMPER, sort_keys=False, allow_unicode=True)


def _copy(value: Any) -> Any:
    """A deep copy of YAML data (mappings, lists, scalars), so edits never touch their input."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _rules(document: Mapping[str, Any]) -> list[Any]:
    rules = document[ROOT].get("rules")
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise DocumentError("'rules' must be a list", f"{ROOT}.rules")
    return rules


def _with_rules(document: Mapping[str, Any], rules: list[Any]) -> dict[str, Any]:
    result = _copy(dict(document))
    result[ROOT]["rules"] = rules
    return result


def _check_index(rules: list[Any], index: int, *, allow_end: bool = False) -> None:
    upper = len(rules) if allow_end else len(rules) - 1
    if not 0 <= index <= upper:
        raise DocumentError(f"rule index {index} out of range 0..{upper}", f"{ROOT}.rules[{index}]")


def _item(item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise DocumentError("a rule must be an object (match, model, ...)")
    if _too_deep(item):  # else writing the document back (yaml.dump recurses) would fail
        raise DocumentError(f"a rule nests deeper than {MAX_DEPTH} levels")
    return {k: v for k, v in item.items() if k != "index"}  # "index" is GET /rules' view, not a field


def add_item(document: Mapping[str, Any], item: Any, index: int | None = None) -> dict[str, Any]:
    """A rule appended (or inserted at ``index``)."""
    rules = _copy(_rules(document))
    position = len(rules) if index is None else index
    _check_index(rules, position, allow_end=True)
    rules.insert(position, _item(item))
    return _with_rules(document, rules)


def patch_item(document: Mapping[str, Any], index: int, changes: Any) -> dict[str, Any]:
    """Rule ``index`` with ``changes`` merged in (``match`` merged key by key; null removes a key)."""
    rules = _copy(_rules(document))
    _check_index(rules, index)
    rule = rules[index]
    if not isinstance(rule, dict):
        raise DocumentError("the rule to patch is not an object", f"{ROOT}.rules[{index}]")
    for key, value in _item(changes).items():
        if key == "match" and isinstance(value, Mapping) and isinstance(rule.get("match"), dict):
            merged = {**rule["match"], **value}
            rule["match"] = {k: v for k, v in merged.items() if v is not None}
        elif value is None:
            rule.pop(key, None)
        else:
            rule[key] = value
    return _with_rules(document, rules)


def delete_item(document: Mapping[str, Any], index: int) -> dict[str, Any]:
    rules = _copy(_rules(document))
    _check_index(rules, index)
    del rules[index]
    return _with_rules(document, rules)


def _representatives(points: list[float]) -> list[tuple[float, str]]:
    """One horizon per bucket of ``points`` (gaps and the points themselves) with its label."""
    if not points:
        return [(0.0, "(-inf,+inf)")]
    out: list[tuple[float, str]] = [(points[0] - 1.0, f"(-inf,{_fmt(points[0])})")]
    for i, point in enumerate(points):
        out.append((point, f"[{_fmt(point)},{_fmt(point)}]"))
        if i + 1 < len(points):
            out.append(((point + points[i + 1]) / 2, f"({_fmt(point)},{_fmt(points[i + 1])})"))
    out.append((points[-1] + 1.0, f"({_fmt(points[-1])},+inf)"))
    return out


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def changed_buckets(old: RouterConfig, new: RouterConfig) -> list[dict[str, Any]]:
    """Every (asset class, horizon bucket) pair whose model (or fallback) the change alters.

    Asset classes are those the rules name (a glob stands for itself); the buckets are
    those of both rule sets together, so a boundary that moved shows up on both sides.
    Symbol-specific rules are judged for a request without a symbol.
    """
    before, after = compile_snapshot(old), compile_snapshot(new)
    classes = sorted({r.asset_class for r in (*old.rules, *new.rules)})
    points = sorted({*before.points, *after.points})
    changes: list[dict[str, Any]] = []
    for asset_class in classes:
        for horizon, label in _representatives(points):
            a = before.select(asset_class, horizon)
            b = after.select(asset_class, horizon)
            if (a.model, a.fallback) != (b.model, b.fallback):
                changes.append({"asset_class": asset_class, "horizon_bucket": label,
                                "from": {"model": a.model, "fallback": a.fallback, "rule_index": a.rule_index},
                                "to": {"model": b.model, "fallback": b.fallback, "rule_index": b.rule_index}})
    if old.settings.default_model != new.settings.default_model:
        changes.append({"asset_class": "*", "horizon_bucket": "(-inf,+inf)", "unmatched": True,
                        "from": {"model": old.settings.default_model}, "to": {"model": new.settings.default_model}})
    return changes
