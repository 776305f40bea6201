"""POST /v1/chat/completions through the real `openai` SDK and raw HTTP, against the session's twin model on the
real Transformers engine."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
import openai
import pytest
from api_helpers import assert_openai_error, png_data_uri
from PIL import Image


@pytest.fixture(scope="module")
def client(live, model_uid) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def ask(text: str = "Describe the image.", image: str | None = None, detail: str | None = None) -> list[dict]:
    if image is None:
        return [{"role": "user", "content": text}]
    image_url = {"url": image, **({"detail": detail} if detail else {})}
    return [{"role": "user", "content": [{"type": "image_url", "image_url": image_url}, {"type": "text", "text": text}]}]


def test_chat_with_an_image_data_uri(client, model_uid):
    raw = client.chat.completions.with_raw_response.create(
        model=model_uid, messages=ask(image=png_data_uri()), max_tokens=6, temperature=0,
        extra_headers={"X-Request-Id": "sdk-test-1"},
    )
    assert raw.headers["x-request-id"] == "sdk-test-1"
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == model_uid and len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 256  # one 448x448 tile alone is 256 image tokens
    assert 1 <= usage.completion_tokens <= 6 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_gives_role_then_content_then_finish_then_usage(client, model_uid):
    messages = ask(image=png_data_uri())
    chunks = list(client.chat.completions.create(
        model=model_uid, messages=messages, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model=model_uid, messages=messages, max_tokens=8, temperature=0)
    assert streamed == whole.choices[0].message.content  # greedy: the stream and the whole answer agree
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_models_list_and_retrieve(client, model_uid):
    assert model_uid in [m.id for m in client.models.list()]
    model = client.models.retrieve(model_uid)
    assert model.id == model_uid and model.object == "model" and model.owned_by == "vlserve"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_streaming_without_include_usage_sends_no_usage_chunk(client, model_uid):
    chunks = list(client.chat.completions.create(model=model_uid, messages=ask(), max_tokens=3, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_raw_sse_lines_end_with_done(http, model_uid):
    body = {"model": model_uid, "messages": ask(), "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_n_seed_stop_and_max_completion_tokens(client, model_uid):
    two = client.chat.completions.create(model=model_uid, messages=ask(), n=2, max_completion_tokens=4, seed=3)
    assert [c.index for c in two.choices] == [0, 1] and two.usage.completion_tokens <= 8
    again = client.chat.completions.create(model=model_uid, messages=ask(), n=2, max_completion_tokens=4, seed=3)
    assert [c.message.content for c in again.choices] == [c.message.content for c in two.choices]
    greedy = client.chat.completions.create(model=model_uid, messages=ask(), max_tokens=12, temperature=0)
    text = greedy.choices[0].message.content
    stop = text[len(text) // 2:][:3].strip() or text[-1]
    stopped = client.chat.completions.create(model=model_uid, messages=ask(), max_tokens=12, temperature=0, stop=[stop])
    assert stop not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    assert text.startswith(stopped.choices[0].message.content)


def test_detail_low_and_max_tiles_change_the_image_tokens(client, model_uid):
    wide = png_data_uri((896, 448))  # a 2x1 grid plus a thumbnail by default

    def prompt_tokens(detail=None, **extra):
        return client.chat.completions.create(model=model_uid, messages=ask(image=wide, detail=detail), max_tokens=1,
                                              extra_body=extra).usage.prompt_tokens

    high, low, one_tile = prompt_tokens("high"), prompt_tokens("low"), prompt_tokens(max_tiles=1)
    assert high - low == 2 * 256 and low == one_tile


def test_video_url_parts_are_sampled_into_frames(client, model_uid):
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(6):
            frame = np.full((48, 64, 3), 40 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    uri = "data:video/mp4;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": uri}},
                                             {"type": "text", "text": "What happens?"}]}]
    completion = client.chat.completions.create(model=model_uid, messages=messages, max_tokens=2,
                                                extra_body={"num_frames": 3})
    assert completion.usage.prompt_tokens > 3 * 256  # three frames, one tile each


class _Images(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        buf = io.BytesIO()
        Image.new("RGB", (64, 64) if self.path == "/ok.png" else (2000, 2000), (0, 90, 0)).save(buf, format="BMP")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, *args):
        pass


def test_http_image_urls_are_fetched_within_the_size_limit(client, http, model_uid):
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{web.server_address[1]}"
    try:
        ok = client.chat.completions.create(model=model_uid, messages=ask(image=f"{base}/ok.png"), max_tokens=1)
        assert ok.usage.prompt_tokens > 256
        too_big = http.post("/v1/chat/completions", json={"model": model_uid, "messages": ask(image=f"{base}/big.bmp")})
        error = assert_openai_error(too_big, 400, "invalid_request_error")
        assert "media limit" in error["message"] and error["param"] == "messages.0.content.0.image_url"
    finally:
        web.shutdown()


def test_errors_are_openai_error_bodies(client, http, model_uid):
    with pytest.raises(openai.NotFoundError, match="not running"):
        client.chat.completions.create(model="no-such-model", messages=ask())
    error = assert_openai_error(http.post("/v1/chat/completions", json={"model": model_uid, "messages": ask(),
                                                                       "temperature": 3}), 400)
    assert error["param"] == "temperature" and "less than or equal to 2" in error["message"]
    error = assert_openai_error(http.post("/v1/chat/completions", json={"model": model_uid, "messages": ask(),
                                                                       "tools": [{"type": "function"}]}), 400)
    assert error["param"] == "tools" and "not supported" in error["message"]
    error = assert_openai_error(http.post("/v1/chat/completions", json={"model": model_uid, "messages": ask(),
                                                                       "top_logprobs": 3}), 400)
    assert error["param"] == "top_logprobs"
    error = assert_openai_error(http.post("/v1/chat/completions", json={"messages": ask()}), 400)
    assert error["param"] == "model"
    bad_image = http.post("/v1/chat/completions", json={"model": model_uid, "messages": ask(image="data:image/png;base64,AAAA")})
    assert "not a readable image" in assert_openai_error(bad_image, 400)["message"]
    ignored = http.post("/v1/chat/completions", json={"model": model_uid, "messages": ask(), "max_tokens": 1,
                                                      "some_future_field": {"x": 1}, "user": "u"})
    assert ignored.status_code == 200


def test_client_disconnect_aborts_the_engine_request(live, http, model_uid):
    engine = live.services.host.engines(model_uid)[0]
    body = {"model": model_uid, "messages": ask(), "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        next(line for line in lines if '"content"' in line and '"role"' not in line)
        assert live.services.host.in_flight(model_uid) == (1,)
    # the response is closed after a few tokens of 4000: the server must abort the engine's work, not finish it
    deadline = time.monotonic() + 10
    while live.services.host.in_flight(model_uid) != (0,) or engine.scheduler.batch or engine.scheduler.waiting:
        assert time.monotonic() < deadline, "the engine kept generating after the client went away"
        time.sleep(0.05)
    steps = engine.scheduler.steps
    time.sleep(0.3)
    assert engine.scheduler.steps == steps


def test_a_stream_the_engine_refuses_is_an_http_error_not_a_broken_stream(http, model_uid):
    body = {"model": model_uid, "messages": ask(), "n": 9, "stream": True}  # the engine batches at most 8
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400, "invalid_request_error")
    assert error["param"] == "n" and "max_batch_size" in error["message"]


def test_logprobs_and_top_logprobs_stream_and_not(client, model_uid):
    kwargs = {"model": model_uid, "messages": ask("Name a colour."), "max_tokens": 5, "temperature": 0,
              "logprobs": True, "top_logprobs": 3, "extra_body": {"ignore_eos": True}}
    whole = client.chat.completions.create(**kwargs)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens == 5
    assert "".join(entry.token for entry in content) == whole.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        assert entry.top_logprobs[0].token == entry.token and entry.bytes == list(entry.token.encode("utf-8"))
    streamed = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices and c.choices[0].logprobs]
    assert [e.logprob for c in streamed for e in c.choices[0].logprobs.content] == [e.logprob for e in content]
    plain = client.chat.completions.create(**{**kwargs, "logprobs": None, "top_logprobs": None})
    assert plain.choices[0].logprobs is None
