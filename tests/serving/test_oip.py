"""The OIP translation on its own: tensors in, predictor rows out, predictor answers in, tensors out."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from actors.core.errors import InvalidRequest, Unavailable
from actors.serving import oip

FAST = oip.Layout("fast", "2", ("a", "b", "c"), 1, ("SELL", "HOLD", "BUY"))
WINDOWED = oip.Layout("windowed", "1", ("x", "y"), 3, ("SELL", "HOLD", "BUY"))


def tensor(name: str, shape: list[int], data: Any, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_paths_name_endpoint_model_and_version() -> None:
    assert oip.match_model_path("/v2/models/fast") == ("model", "fast", None)
    assert oip.match_model_path("/v2/models/fast/versions/2/infer") == ("infer", "fast", "2")
    assert oip.match_model_path("/v2/models/my%20model/ready") == ("ready", "my model", None)
    for other in ("/v2/models/", "/v2/models/fast/versions", "/v2/models/fast/stats", "/v2/models/a/b"):
        assert oip.match_model_path(other) is None


def test_metadata_lists_both_input_layouts_and_every_output() -> None:
    meta = oip.model_metadata(WINDOWED, ["1", "2"])
    assert meta["name"] == "windowed" and meta["versions"] == ["1", "2"] and meta["platform"] == "tflite"
    assert meta["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 6]}
    assert meta["inputs"][1:3] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]},
                                   {"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["inputs"][3] == {"name": "symbol", "datatype": "BYTES", "shape": [-1]}
    assert [o["name"] for o in meta["outputs"]] == list(oip.OUTPUTS)
    assert meta["outputs"][0]["shape"] == [-1, 3]
    assert oip.model_metadata(FAST, ["2"])["inputs"][1]["shape"] == [-1]
    assert all(isinstance(v, (str, int)) for v in meta["parameters"].values())  # protocol: scalar parameters


def test_features_tensor_flat_or_nested_becomes_feature_major_rows() -> None:
    flat = oip.parse_infer({"inputs": [tensor("features", [2, 6], list(range(12)))]}, b"", WINDOWED)
    nested = oip.parse_infer({"inputs": [tensor("features", [2, 6], [list(range(6)), list(range(6, 12))])]},
                             b"", WINDOWED)
    assert flat.rows == nested.rows == ({"x": [0, 1, 2], "y": [3, 4, 5]}, {"x": [6, 7, 8], "y": [9, 10, 11]})
    deeper = oip.parse_infer({"inputs": [tensor("features", [1, 6], [[[0, 1, 2], [3, 4, 5]]])]}, b"", WINDOWED)
    assert deeper.rows == flat.rows[:1]
    one = oip.parse_infer({"inputs": [tensor("features", [3], [1.0, 2.0, 3.0])]}, b"", FAST)
    assert one.rows == ({"a": 1.0, "b": 2.0, "c": 3.0},)


def test_per_feature_inputs_in_any_order() -> None:
    call = oip.parse_infer({"inputs": [tensor("c", [2], [5, 6]), tensor("a", [2], [1, 2]),
                                       tensor("b", [2, 1], [[3], [4]])]}, b"", FAST)
    assert call.rows == ({"a": 1, "b": 3, "c": 5}, {"a": 2, "b": 4, "c": 6})
    windowed = oip.parse_infer({"inputs": [tensor("x", [1, 3], [1, 2, 3]), tensor("y", [1, 3], [4, 5, 6])]},
                               b"", WINDOWED)
    assert windowed.rows == ({"x": [1, 2, 3], "y": [4, 5, 6]},)


def test_binary_tensor_data_in_and_out() -> None:
    rows = np.asarray([[1.5, -2.0, 0.25], [3.0, 4.0, 5.0]], dtype=np.float32)
    symbols = b"".join(struct.pack("<I", len(s)) + s for s in (b"BTC", b"ETH"))
    header = json.dumps({"inputs": [
        {"name": "features", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
        {"name": "symbol", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(symbols)}}],
        "parameters": {"binary_data_output": True}, "id": "r1"}).encode()
    body = header + rows.tobytes() + symbols
    head, tail = oip.split_body(body, str(len(header)))
    call = oip.parse_infer(json.loads(head), tail, FAST)
    assert call.rows == ({"a": 1.5, "b": -2.0, "c": 0.25}, {"a": 3.0, "b": 4.0, "c": 5.0})
    assert call.symbols == ("BTC", "ETH") and call.correlation_ids == ("r1/0", "r1/1")
    assert all(o.binary for o in call.outputs)
    predictions = [answer({"SELL": 0.1, "HOLD": 0.2, "BUY": 0.7}, "BUY", "2", "r1/0"),
                   answer({"SELL": 0.6, "HOLD": 0.3, "BUY": 0.1}, "SELL", "1", "r1/1")]
    response, binary = oip.infer_response(call, FAST, predictions)
    assert response["id"] == "r1" and response["model_version"] == "1,2"
    sizes = [o["parameters"]["binary_data_size"] for o in response["outputs"]]
    probabilities = np.frombuffer(binary[:sizes[0]], dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(probabilities, np.float32([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]))
    signals = binary[sizes[0]:sizes[0] + sizes[1]]
    assert signals == struct.pack("<I", 3) + b"BUY" + struct.pack("<I", 4) + b"SELL"
    assert len(binary) == sum(sizes)


def answer(probabilities: dict[str, float], signal: str, version: str, correlation_id: str) -> dict[str, Any]:
    return {"prediction": {"signal": signal, "confidence": max(probabilities.values()),
                           "probabilities": probabilities},
            "model": {"name": "fast", "version": version}, "correlation_id": correlation_id}


def test_json_outputs_only_those_requested() -> None:
    call = oip.parse_infer({"inputs": [tensor("features", [1, 3], [1, 2, 3])],
                            "outputs": [{"name": "signal"}, {"name": "probabilities"}]}, b"", FAST)
    response, binary = oip.infer_response(call, FAST, [answer({"BUY": 0.5, "HOLD": 0.25, "SELL": 0.25}, "BUY",
                                                              "2", "gen")])
    assert binary == b"" and "id" not in response and response["model_version"] == "2"
    assert response["outputs"] == [
        {"name": "signal", "datatype": "BYTES", "shape": [1], "data": ["BUY"]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.25, 0.25, 0.5]}]


def test_batch_body_is_what_predict_batch_takes() -> None:
    call = oip.parse_infer({"inputs": [tensor("features", [1, 3], [1, 2, 3])], "id": "only",
                            "parameters": {"symbol": "BTC", "sequence_id": 0}}, b"", FAST)
    assert oip.batch_body(call, "fast", "3") == {"requests": [
        {"model_name": "fast", "model_version": "3", "features": {"a": 1, "b": 2, "c": 3}, "symbol": "BTC",
         "correlation_id": "only"}]}
    anonymous = oip.parse_infer({"inputs": [tensor("features", [2, 3], [0] * 6)]}, b"", FAST)
    assert oip.batch_body(anonymous, "fast", None)["requests"][1] == {
        "model_name": "fast", "features": {"a": 0, "b": 0, "c": 0}}


@pytest.mark.parametrize(("body", "binary", "message"), [
    ({"inputs": []}, b"", "'inputs' must be a non-empty list"),
    ([1], b"", "must be a JSON object"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3], "INT64")]}, b"", "must be FP32"),
    ({"inputs": [tensor("features", [1, 3], [1, True, 3])]}, b"", "bool in a FP32 tensor"),
    ({"inputs": [tensor("features", [1, 2], [1, 2])]}, b"", "must have shape [batch, 3]"),
    ({"inputs": [tensor("features", [-1, 3], [1, 2, 3])]}, b"", "non-negative integers"),
    ({"inputs": [tensor("features", [0, 3], [])]}, b"", "no rows"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3]), tensor("a", [1], [1])]}, b"", "not both"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3]), tensor("features", [1, 3], [1, 2, 3])]}, b"",
     "given twice"),
    ({"inputs": [tensor("a", [2], [1, 2]), tensor("b", [1], [1]), tensor("c", [2], [1, 2])]}, b"", "has 1 rows"),
    ({"inputs": [tensor("x", [1], [1]), tensor("y", [1, 3], [1, 2, 3])]}, b"", "'x' must have shape [batch, 3]"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3])], "outputs": [{"name": "logits"}]}, b"", "unknown output"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3])], "id": 7}, b"", "'id' must be a string"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3])], "parameters": {"symbol": ""}}, b"", "non-empty string"),
    ({"inputs": [tensor("features", [2, 3], [0] * 6), tensor("symbol", [1], ["A"], "BYTES")]}, b"",
     "BYTES of shape [2]"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3]), tensor("symbol", [1], ["A"], "BYTES")],
      "parameters": {"symbol": "B"}}, b"", "not both"),
    ({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                  "parameters": {"binary_data_size": 12}}]}, b"\0" * 8, "exceeds the binary data"),
    ({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                  "parameters": {"binary_data_size": 8}}]}, b"\0" * 8, "do not hold shape"),
    ({"inputs": [tensor("features", [1, 3], [1, 2, 3])]}, b"\0" * 4, "belong to no input"),
])
def test_malformed_requests_are_bad_requests(body: Any, binary: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        oip.parse_infer(body, binary, FAST if "x" not in json.dumps(body) else WINDOWED)
    assert message in caught.value.message


def test_header_length_must_lie_inside_the_body() -> None:
    assert oip.split_body(b"{}", None) == (b"{}", b"")
    assert oip.split_body(b"{}ab", "2") == (b"{}", b"ab")
    for bad in ("x", "0", "5"):
        with pytest.raises(InvalidRequest):
            oip.split_body(b"{}ab", bad)


def test_a_failed_row_fails_the_call_with_its_status() -> None:
    predictions = [answer({"SELL": 1.0, "HOLD": 0.0, "BUY": 0.0}, "SELL", "2", "c0"),
                   {"index": 1, "error": {"code": "circuit_open", "message": "fast@2 is failing"}, "status": 503}]
    assert oip.first_failure(predictions) == oip.RowFailure(1, 503, "row 1: circuit_open: fast@2 is failing")
    assert oip.first_failure(predictions[:1]) is None


def test_an_answer_with_other_labels_is_refused() -> None:
    call = oip.parse_infer({"inputs": [tensor("features", [1, 3], [1, 2, 3])]}, b"", FAST)
    with pytest.raises(Unavailable):
        oip.infer_response(call, FAST, [answer({"UP": 0.5, "DOWN": 0.5}, "UP", "3", "c")])


def test_error_body_is_one_string_led_by_the_code() -> None:
    assert oip.error_body(InvalidRequest("bad_request", "no", {})) == {"error": "bad_request: no"}
    assert oip.error_body("row 1: x") == {"error": "row 1: x"}
