"""Rules document edits are pure and the dry run names exactly the buckets that change."""

from __future__ import annotations

import pytest

from actors.core import rules_doc
from actors.core.rules import parse_config

DOC = {"model_router": {"rules": [
    {"match": {"asset_class": "crypto", "horizon_ms": "<60000"}, "model": "fast", "priority": 10},
    {"match": {"asset_class": "fx", "horizon_ms": "*"}, "model": "slow", "priority": 20}],
    "config": {"default_model": "slow"}}}


def test_edits_return_new_documents() -> None:
    added = rules_doc.add_item(DOC, {"index": 7, "match": {"asset_class": "eq"}, "model": "fast"}, index=0)
    assert [r["match"]["asset_class"] for r in added["model_router"]["rules"]] == ["eq", "crypto", "fx"]
    assert "index" not in added["model_router"]["rules"][0]
    patched = rules_doc.patch_item(DOC, 0, {"match": {"horizon_ms": None, "symbol": "BTC*"}, "priority": None})
    assert patched["model_router"]["rules"][0] == {"match": {"asset_class": "crypto", "symbol": "BTC*"},
                                                   "model": "fast"}
    assert len(rules_doc.delete_item(DOC, 1)["model_router"]["rules"]) == 1
    assert len(DOC["model_router"]["rules"]) == 2 and "priority" in DOC["model_router"]["rules"][0]  # untouched
    for bad in (lambda: rules_doc.delete_item(DOC, 2), lambda: rules_doc.patch_item(DOC, -1, {}),
                lambda: rules_doc.add_item(DOC, "not a rule")):
        with pytest.raises(rules_doc.DocumentError):
            bad()


def test_bodies_parse_as_json_or_yaml_and_round_trip() -> None:
    text = rules_doc.dump(DOC)
    assert rules_doc.load_text(text) == DOC
    assert rules_doc.parse_body(b'{"model_router": {"rules": []}}', "application/json") == {
        "model_router": {"rules": []}}
    for raw, kind in ((b"[1, 2]", "application/yaml"), (b"{", "application/json"), (b"a: 1", "text/yaml")):
        with pytest.raises(rules_doc.DocumentError):
            rules_doc.parse_body(raw, kind)


def test_changed_buckets_names_only_what_routes_differently() -> None:
    old = parse_config(rules_doc.dump(DOC))
    moved = rules_doc.patch_item(DOC, 0, {"match": {"horizon_ms": "<30000"}})
    changes = rules_doc.changed_buckets(old, parse_config(rules_doc.dump(moved)))
    assert [(c["asset_class"], c["horizon_bucket"], c["from"]["model"], c["to"]["model"]) for c in changes] == [
        ("crypto", "[30000,30000]", "fast", "slow"), ("crypto", "(30000,60000)", "fast", "slow")]
    assert rules_doc.changed_buckets(old, old) == []


def test_hostile_bodies_are_document_errors_not_crashes() -> None:
    """Regression (found by the fuzzer): deep nesting raised RecursionError (a 500 on PUT /rules)."""
    from actors.core.rules_doc import DocumentError, parse_body
    from tests.core.rules.rule_docs import billion_laughs

    for raw, content_type in ((b"[" * 10000 + b"]" * 10000, "application/json"),
                              (b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json"),
                              (("a: " + "[" * 5000 + "]" * 5000).encode(), "application/yaml"),
                              (billion_laughs().encode(), "application/yaml"),
                              (b"\xff\xfe", "application/yaml")):
        with pytest.raises(DocumentError) as refused:
            parse_body(raw, content_type)
        assert len(str(refused.value)) < 400


def test_a_deeply_nested_rule_is_refused_before_the_document_is_written_back() -> None:
    """Regression (found by the fuzzer): POST /rules/items with a rule nested 500 deep answered 500
    (RecursionError in yaml.dump once the item was in the document)."""
    deep: object = 1
    for _ in range(500):
        deep = {"x": deep}
    for edit in (lambda: rules_doc.add_item(DOC, {"match": {"asset_class": "crypto"}, "model": "fast", "n": deep}),
                 lambda: rules_doc.patch_item(DOC, 0, {"n": [deep]})):
        with pytest.raises(rules_doc.DocumentError, match="nests deeper than 64"):
            edit()
    shallow = rules_doc.add_item(DOC, {"match": {"asset_class": "crypto"}, "model": "fast", "n": {"a": [1]}})
    assert rules_doc.load_text(rules_doc.dump(shallow)) == shallow  # what passes still writes back
