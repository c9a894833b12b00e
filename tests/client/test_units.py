"""Pure parts of the client: settings from the environment, backoff, result parsing, errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from actors.client import calls
from actors.client.errors import BadRequest, NotFound, ServerError, ServiceUnavailable, Unprocessable, api_error
from actors.client.results import BatchResult, ItemError, Operation, Prediction, SwitchEvent
from actors.client.settings import ClientSettings, RetryPolicy


def test_settings_come_from_arguments_then_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "admin"
    key_file.write_text("file-key\n")
    env = {"REMOTE_INFERENCE_URL": "http://svc:9000/", "REMOTE_INFERENCE_TIMEOUT": "2.5",
           "MODEL_ROUTER_API_KEY": "api", "MODEL_ROUTER_ADMIN_KEY_FILE": str(key_file),
           "REMOTE_INFERENCE_ENABLED": "false", "MODEL_ROUTER_CONFIG": str(tmp_path / "c.yml")}
    settings = ClientSettings.resolve(environ=env)
    assert (settings.base_url, settings.timeout_s, settings.remote) == ("http://svc:9000", 2.5, False)
    assert settings.config == tmp_path / "c.yml"
    assert settings.headers(admin=False) == {"Authorization": "Bearer api"}
    assert settings.headers(admin=True) == {"Authorization": "Bearer api", "X-Admin-Key": "file-key"}
    assert "api" not in repr(settings) and "file-key" not in repr(settings)
    explicit = ClientSettings.resolve(base_url="https://x", timeout=1, admin_key="k", remote=True, environ=env)
    assert (explicit.base_url, explicit.timeout_s, explicit.remote, explicit.ws_url) == ("https://x", 1, True, "wss://x")
    assert explicit.headers(admin=True)["X-Admin-Key"] == "k"
    assert ClientSettings.resolve(environ={}).remote is True
    with pytest.raises(ValueError):
        ClientSettings.resolve(timeout=0, environ={})


def test_backoff_is_exponential_jittered_and_capped() -> None:
    policy = RetryPolicy(attempts=8, base_delay_s=0.1, max_delay_s=1.0)
    rng = random.Random(7)
    for retry in range(8):
        ceiling = min(1.0, 0.1 * 2 ** retry)
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a constant
    assert policy.delay(0, rng, retry_after="0.5") == 0.5
    assert policy.delay(0, rng, retry_after="30") == 1.0  # capped
    assert 0 <= policy.delay(0, rng, retry_after="Wed, 21 Oct 2015 07:28:00 GMT") <= 0.1


def test_errors_are_typed_by_status_and_keep_the_body() -> None:
    body = {"error": {"code": "invalid_features", "message": "missing a", "details": {"missing": ["a"]}}}
    error = api_error(422, body)
    assert isinstance(error, Unprocessable) and error.code == "invalid_features"
    assert error.details == {"missing": ["a"]} and error.to_body() == body
    assert isinstance(api_error(400, {"error": {"code": "bad_request", "message": "m"}}), BadRequest)
    assert isinstance(api_error(404, {}), NotFound)
    assert isinstance(api_error(503, {}), ServiceUnavailable)
    odd = api_error(502, "<html>bad gateway</html>")
    assert isinstance(odd, ServerError) and "bad gateway" in odd.message


ANSWER = {"prediction": {"signal": "BUY", "confidence": 0.7, "probabilities": {"SELL": 0.1, "HOLD": 0.2, "BUY": 0.7}},
          "model": {"name": "fast", "version": "2"}, "rule_index": 0, "correlation_id": "c1",
          "config_hash": "abc", "latency_ms": 0.4, "symbol": "BTC", "fallback_from": "other"}


def test_results_mirror_the_service_answers() -> None:
    p = Prediction.from_answer(ANSWER, elapsed_ms=3.0)
    assert (p.signal, p.model_key, p.labels, p.fallback_from, p.elapsed_ms) == (
        "BUY", "fast@2", ("SELL", "HOLD", "BUY"), "other", 3.0)
    batch = BatchResult.from_answer({"predictions": [ANSWER, {"index": 1, "status": 404, "error": {
        "code": "model_not_found", "message": "no", "details": {}}}], "count": 2, "failed": 1, "latency_ms": 1.0},
        ["c1", "c2"])
    assert batch.predictions == (Prediction.from_answer(ANSWER),)
    (failure,) = batch.errors
    assert isinstance(failure, ItemError) and failure.correlation_id == "c2" and isinstance(failure.error, NotFound)
    op = Operation.from_answer({"id": "sw-1", "model": "fast", "from_version": "1", "to_version": "2",
                                "strategy": "gradual", "params": {"steps": [50.0, 100.0]}, "state": "running",
                                "weight_percent": 50.0, "step": 0, "reason": None, "log": [{"event": "created"}]})
    assert op.steps == (50.0, 100.0) and not op.is_terminal and not op.succeeded
    event = SwitchEvent.from_message({"type": "switch", "id": "1-0", "replay": False, "timestamp": 1.5,
                                      "symbol": "S", "old_model": "fast@1", "new_model": "fast@2",
                                      "latency_ms": 2, "reason": "switch_step", "operation_id": "sw-1",
                                      "asset_class": "crypto", "event_id": "e"})
    assert (event.stream_id, event.new_model, event.operation_id) == ("1-0", "fast@2", "sw-1")


def test_calls_add_a_correlation_id_only_when_missing() -> None:
    given = calls.predict({"features": {"a": 1}, "model_name": "fast", "correlation_id": "mine"})
    assert given.body["correlation_id"] == "mine"
    batch = calls.predict_batch([{"features": {}}, {"features": {}, "correlation_id": "x"}])
    ids = [item["correlation_id"] for item in batch.body["requests"]]
    assert ids[1] == "x" and len(ids[0]) == 32 and ids[0] != calls.predict({"features": {}}).body["correlation_id"]
    body = calls.switch_body("2", "gradual", steps=[5, 50, 100], interval_s=1)
    assert body == {"version": "2", "strategy": "gradual", "steps": [5, 50, 100], "interval_s": 1}
    assert calls.switch("a/b", body).path == "/models/a%2Fb/switch" and calls.switch("m", body).admin
