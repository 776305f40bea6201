"""Operations: liveness, readiness, Prometheus metrics, status, request ids on responses and log lines, and the
error body of routes that do not exist."""

from __future__ import annotations

import json
import logging
import time

from api_helpers import SEED_LAUNCH, assert_openai_error, png_data_uri
from prometheus_client.parser import text_string_to_metric_families

from vlserve.api.logs import JsonFormatter, RequestIdFilter, request_id_var


def test_health_and_status(http, model_uid):
    assert http.get("/health").json() == {"status": "ok"}
    status = http.get("/status").json()
    assert status["status"] == "ok" and status["models"] == {model_uid: "ready"} and status["uptime_s"] >= 0


def test_readiness_follows_the_launched_models(http, twin_1b, model_uid):
    assert http.get("/ready").json() == {"status": "ready", "models": {model_uid: "ready"}}
    assert http.get("/ready", params={"model": model_uid}).status_code == 200
    assert_openai_error(http.get("/ready", params={"model": "nope"}), 404)
    # a launch that fails after it started (a bad engine option) stays listed, in error, until terminated
    body = {**SEED_LAUNCH, "model_uid": "broken", "model_path": str(twin_1b), "max_batch_size": 0}
    assert http.post("/v1/models", params={"wait_ready": False}, json=body).status_code == 200
    deadline = time.monotonic() + 30
    while (state := http.get("/v1/models/broken").json())["status"] != "error":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "max_batch_size must be an integer >= 1" in state["error"]
    not_ready = http.get("/ready")
    assert not_ready.status_code == 503 and not_ready.json()["models"]["broken"] == "error"
    chat = http.post("/v1/chat/completions", json={"model": "broken", "messages": [{"role": "user", "content": "hi"}]})
    assert "max_batch_size" in assert_openai_error(chat, 503, "model_not_ready")["message"]
    assert http.get("/v1/models/broken/progress").json()["status"] == "error"
    assert http.delete("/v1/models/broken").status_code == 200
    assert http.get("/ready").status_code == 200


def test_metrics_count_requests_tokens_latency_and_models(http, model_uid):
    body = {"model": model_uid, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        list(response.iter_lines())
    http.get("/v1/models/nope")
    text = http.get("/metrics").text
    assert 'vlserve_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert 'vlserve_http_requests_total{method="GET",route="/v1/models/{model_uid}",status="404"}' in text
    assert f'vlserve_generated_tokens_total{{model="{model_uid}"}}' in text
    assert f'vlserve_time_to_first_token_seconds_count{{model="{model_uid}"}}' in text
    assert f'vlserve_generation_duration_seconds_bucket{{le="+Inf",model="{model_uid}"}}' in text
    assert 'vlserve_http_request_duration_seconds_count{route="/v1/chat/completions"}' in text
    assert "vlserve_running_models 1.0" in text


def test_image_caches_show_in_the_description_and_metrics(http, model_uid):
    """The same picture in two requests (once as a fresh upload): one encoder-cache miss, then a hit; the figures
    are in the model's placement and in /metrics."""
    picture = png_data_uri((300, 200), color=(10, 120, 240))

    def ask(question: str) -> None:
        content = [{"type": "image_url", "image_url": {"url": picture}}, {"type": "text", "text": question}]
        body = {"model": model_uid, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=body).status_code == 200

    def encoder() -> dict:
        return http.get(f"/v1/models/{model_uid}").json()["placement"][0]["caches"]["encoder"]

    before = encoder()
    ask("What colour?")
    ask("Which shape?")  # another question: the prompt differs after the image, the image is the same
    after = encoder()
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"] + 1
    assert after["bytes"] > 0 and after["budget_bytes"] == 512 << 20
    samples = _metric_samples(http.get("/metrics").text)
    labels = (("cache", "encoder"), ("model", model_uid), ("replica", "0"))
    assert samples[("vlserve_cache_hits_total", labels)] == after["hits"]
    # Prometheus writes big floats in exponent form (4.58752e+06), so values are compared parsed, not as text
    assert samples[("vlserve_cache_bytes", labels)] == after["bytes"]
    assert ("vlserve_cache_tokens_reused_total", (("cache", "prefix"),) + labels[1:]) in samples


def _metric_samples(text: str) -> dict[tuple, float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_request_ids_are_echoed_or_made_up(http):
    assert http.get("/health", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    made_up = http.get("/health").headers["x-request-id"]
    assert len(made_up) == 32 and made_up != http.get("/health").headers["x-request-id"]
    unsafe = http.get("/health", headers={"X-Request-Id": "x" * 500}).headers["x-request-id"]
    assert unsafe != "x" * 500


def test_access_log_lines_carry_the_request_id(http):
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.emit = seen.append
    logger = logging.getLogger("vlserve.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        http.get("/v1/models", headers={"X-Request-Id": "trace-me"})
    finally:
        logger.removeHandler(handler)
    [line] = [r for r in seen if r.request_id == "trace-me"]
    assert line.status == 200 and line.path == "/v1/models" and line.duration_ms >= 0
    entry = json.loads(JsonFormatter().format(line))
    assert entry["request_id"] == "trace-me" and entry["status"] == 200 and entry["logger"] == "vlserve.access"


def test_json_formatter_uses_the_current_request_id():
    record = logging.LogRecord("vlserve.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    token = request_id_var.set("rid-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello there" and entry["request_id"] == "rid-1" and entry["level"] == "warning"


def test_unknown_routes_and_methods_are_openai_errors(http):
    assert "no route GET /v2/nothing" in assert_openai_error(http.get("/v2/nothing"), 404, "not_found_error")["message"]
    assert_openai_error(http.put("/v1/chat/completions"), 405, "invalid_request_error")
    error = assert_openai_error(http.post("/v1/chat/completions", content=b"{not json",
                                          headers={"content-type": "application/json"}), 400)
    assert error["message"] == "the request body is not valid JSON" and error["param"] is None
