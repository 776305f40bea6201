"""OpenAI chat request -> GenerateRequest: parts, detail/max_tiles, media loading with limits, sampling validation."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from pydantic import ValidationError

from vlserve.errors import InvalidRequest
from vlserve.messages import ImagePart, TextPart
from vlserve.registry import Registry, resolve
from vlserve.serving.chat_request import MessageConverter, refuse_unsupported, to_sampling
from vlserve.serving.media_fetch import MediaFetcher, MediaPolicy
from vlserve.serving.protocol import ChatCompletionRequest


def png_bytes(size=(32, 24), color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def body(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


@pytest.fixture
def resolved(tmp_path):
    return resolve(Registry(tmp_path), model_name="InternVL2.5", model_engine="Transformers", model_size_in_billions=1)


async def no_fetch(url: str) -> bytes:
    raise AssertionError("no network expected")


async def convert(resolved, messages, fetch=no_fetch, **fields):
    return await MessageConverter(body(messages=messages, **fields), resolved, fetch).convert()


async def test_string_and_part_contents_become_typed_parts(resolved):
    image = {"type": "image_url", "image_url": {"url": data_uri(png_bytes())}}
    msgs = await convert(resolved, [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [image, {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": "a red box"},
    ])
    assert [m.role for m in msgs] == ["system", "user", "assistant"]
    assert msgs[0].content == (TextPart("be brief"),)
    part = msgs[1].content[0]
    assert isinstance(part, ImagePart) and part.image.size == (32, 24) and part.image.mode == "RGB"
    assert part.max_tiles is None and msgs[1].content[1] == TextPart("what is it?")


@pytest.mark.parametrize(("detail", "max_tiles", "expected"), [
    ("low", None, 1), ("low", 6, 1), ("high", None, None), ("auto", 6, 6), ("high", 4, 4),
])
async def test_detail_low_means_one_tile_else_the_request_max_tiles(resolved, detail, max_tiles, expected):
    image = {"type": "image_url", "image_url": {"url": data_uri(png_bytes()), "detail": detail}}
    msgs = await convert(resolved, [{"role": "user", "content": [image]}], max_tiles=max_tiles)
    assert msgs[0].content[0].max_tiles == expected


async def test_bad_media_is_a_400_naming_the_part(resolved):
    not_image = {"type": "image_url", "image_url": {"url": data_uri(b"not an image")}}
    with pytest.raises(InvalidRequest, match="not a readable image") as info:
        await convert(resolved, [{"role": "user", "content": [{"type": "text", "text": "x"}, not_image]}])
    assert info.value.param == "messages.0.content.1.image_url"
    with pytest.raises(InvalidRequest, match="data: URI or an http"):
        await convert(resolved, [{"role": "user", "content": [{"type": "image_url", "image_url": "ftp://host/a.png"}]}])
    with pytest.raises(InvalidRequest, match="file:// media is off"):
        await convert(resolved, [{"role": "user", "content": [{"type": "image_url", "image_url": "file:///etc/passwd"}]}],
                      fetch=MediaFetcher())
    with pytest.raises(InvalidRequest, match="user messages only"):
        await convert(resolved, [{"role": "system", "content": [{"type": "image_url", "image_url": data_uri(png_bytes())}]}])
    with pytest.raises(InvalidRequest, match="tool and function"):
        await convert(resolved, [{"role": "tool", "content": "42"}])


async def test_video_parts_are_sampled_by_the_family(resolved, monkeypatch):
    import vlserve.families.internvl2_5.video as video

    calls = []
    monkeypatch.setattr(video, "sample_frames", lambda data, *n: calls.append((data, n)) or [Image.new("RGB", (8, 8))] * 3)
    part = {"type": "video_url", "video_url": {"url": data_uri(b"fake video", "video/mp4")}}
    msgs = await convert(resolved, [{"role": "user", "content": [part]}], num_frames=3)
    assert calls == [(b"fake video", (3,))] and len(msgs[0].content[0].frames) == 3
    undecodable = {"type": "video_url", "video_url": data_uri(b"not a video", "video/mp4")}
    monkeypatch.undo()
    with pytest.raises(InvalidRequest) as info:
        await convert(resolved, [{"role": "user", "content": [undecodable]}])
    assert info.value.param == "messages.0.content.0.video_url"


def test_sampling_fields_map_onto_sampling_params():
    s = to_sampling(body(max_completion_tokens=64, temperature=0, top_p=0.5, top_k=0, seed=7, stop="END", n=2,
                         repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=-0.5, ignore_eos=True), 4096)
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed, s.stop, s.n) == (64, 0, 0.5, -1, 7, ("END",), 2)
    assert (s.repetition_penalty, s.presence_penalty, s.frequency_penalty, s.ignore_eos) == (1.1, 0.5, -0.5, True)
    assert to_sampling(body(), 4096).max_tokens == 512  # the engine-neutral default
    assert to_sampling(body(stop=["a", "b"]), None).stop == ("a", "b")
    with pytest.raises(InvalidRequest, match="disagree"):
        to_sampling(body(max_tokens=5, max_completion_tokens=6), None)
    with pytest.raises(InvalidRequest, match="4096-token context") as info:
        to_sampling(body(max_tokens=5000), 4096)
    assert info.value.param == "max_tokens"


@pytest.mark.parametrize("field", [
    {"temperature": 2.5}, {"top_p": 0}, {"top_p": 1.5}, {"n": 0}, {"max_tokens": 0}, {"presence_penalty": 3},
    {"frequency_penalty": -3}, {"top_k": -2}, {"stop": [""]}, {"max_tiles": 0}, {"messages": []},
])
def test_out_of_range_values_are_rejected(field):
    with pytest.raises(ValidationError):
        body(**field)


@pytest.mark.parametrize("field", [  # logprobs and response_format are served now (test_logprobs / structured tests)
    {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"tool_choice": "auto"}, {"logit_bias": {"1": 2}},
])
def test_known_but_unsupported_fields_are_refused_by_name(field):
    with pytest.raises(InvalidRequest, match="not supported") as info:
        refuse_unsupported(body(**field))
    assert info.value.param == next(iter(field))


def test_unknown_and_harmless_fields_are_accepted():
    refuse_unsupported(body(user="u", some_future_field=1, logprobs=False, tool_choice="none",
                            response_format={"type": "text"}))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        payload = {"/small.png": png_bytes(), "/big": b"x" * 5000}.get(self.path)
        self.send_response(200 if payload else 404)
        self.end_headers()
        self.wfile.write(payload or b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_http_images_are_fetched_with_a_size_limit(resolved, web):
    fetch = MediaFetcher(MediaPolicy(timeout_s=5, max_bytes=4096, allow_private=True))  # a loopback stand-in
    msgs = await convert(resolved, [{"role": "user", "content": [{"type": "image_url", "image_url": f"{web}/small.png"}]}],
                         fetch=fetch)
    assert msgs[0].content[0].image.size == (32, 24)
    with pytest.raises(InvalidRequest, match="larger than"):
        await fetch(f"{web}/big")
    with pytest.raises(InvalidRequest, match="HTTP 404"):
        await fetch(f"{web}/missing")
