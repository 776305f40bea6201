"""A corpus of bad requests against a server with the default settings (sharing the session's loaded model): each
is a 4xx with an OpenAI error body whose message says what is wrong, and the server stays alive and serving."""

from __future__ import annotations

import base64
import io
import json
import socket
import time

import httpx
import pytest
from api_helpers import png_data_uri, start_server
from PIL import Image

from vlserve.api.app import create_app
from vlserve.config import ServerConfig

UID = "InternVL2.5"


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


PNG = encoded(Image.new("RGB", (64, 48), (1, 2, 3)), "PNG")
BOMB = encoded(Image.new("1", (20000, 20000)), "PNG", optimize=True)  # 400 Mpx in a few tens of kB
WIDE = encoded(Image.new("RGB", (1792, 1792), (9, 9, 9)), "PNG")  # 26 tiles at max_tiles 40


def image_part(url) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def user(*parts, text: str = "What is this?") -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def chat(**fields) -> dict:
    return {"model": UID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}


def images(url: str, count: int) -> dict:
    return chat(messages=user(*[image_part(url)] * count))


# name -> (request keyword arguments for httpx, expected status, words the message must contain)
CORPUS: dict[str, tuple[dict, int, str]] = {
    "malformed JSON": ({"content": b'{"model": "x", "messages": [', "headers": {"content-type": "application/json"}},
                       400, "not valid JSON"),
    "JSON array body": ({"json": [1, 2]}, 400, "must be a JSON object"),
    "not UTF-8": ({"content": b'{"model": "\xff\xfe"}', "headers": {"content-type": "application/json"}}, 400,
                   "could not be read as JSON"),
    "wrong content-type": ({"content": json.dumps(chat()).encode(), "headers": {"content-type": "text/plain"}},
                           400, "Content-Type: application/json"),
    "empty body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "body is empty"),
    "missing model": ({"json": {"messages": [{"role": "user", "content": "hi"}]}}, 400, "model"),
    "unknown model": ({"json": chat(model="no-such-model")}, 404, "not running"),
    "model is a number": ({"json": chat(model=7)}, 400, "model"),
    "empty messages": ({"json": chat(messages=[])}, 400, "messages"),
    "messages not a list": ({"json": chat(messages="hi")}, 400, "messages"),
    "unknown role": ({"json": chat(messages=[{"role": "wizard", "content": "hi"}])}, 400, "role"),
    "missing role": ({"json": chat(messages=[{"content": "hi"}])}, 400, "role"),
    "tool role": ({"json": chat(messages=[{"role": "tool", "content": "42"}])}, 400, "tool"),
    "content is a number": ({"json": chat(messages=[{"role": "user", "content": 5}])}, 400, "content"),
    "unknown part type": ({"json": chat(messages=[{"role": "user", "content": [{"type": "audio", "x": 1}]}])},
                          400, "content"),
    "image part without url": ({"json": chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}])}, 400, "url"),
    "image url is a number": ({"json": chat(messages=user(image_part(12)))}, 400, "url"),
    "image in a system message": ({"json": chat(messages=[{"role": "system", "content": [image_part(png_data_uri())]},
                                                          {"role": "user", "content": "hi"}])}, 400, "user messages"),
    "temperature too high": ({"json": chat(temperature=3)}, 400, "temperature"),
    "temperature a string": ({"json": chat(temperature="hot")}, 400, "temperature"),
    "top_p zero": ({"json": chat(top_p=0)}, 400, "top_p"),
    "n zero": ({"json": chat(n=0)}, 400, "n"),
    "n above the batch": ({"json": chat(n=9)}, 400, "max_batch_size"),
    "max_tokens zero": ({"json": chat(max_tokens=0)}, 400, "max_tokens"),
    "max_tokens beyond the context": ({"json": chat(max_tokens=20000)}, 400, "context"),
    "prompt + max_tokens beyond the context": ({"json": chat(max_tokens=16380)}, 400, "> this model's context of 16384"),
    "max_tokens disagree": ({"json": chat(max_tokens=3, max_completion_tokens=4)}, 400, "disagree"),
    "empty stop string": ({"json": chat(stop=[""])}, 400, "stop"),
    "tools": ({"json": chat(tools=[{"type": "function"}])}, 400, "not supported"),
    "top_logprobs without logprobs": ({"json": chat(top_logprobs=2)}, 400, "needs logprobs"),
    "top_logprobs above 20": ({"json": chat(logprobs=True, top_logprobs=21)}, 400, "top_logprobs"),
    "unknown response_format": ({"json": chat(response_format={"type": "xml"})}, 400, "not supported"),
    "invalid JSON schema": ({"json": chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "objekt"}}})}, 400, "invalid JSON schema"),
    "json_schema without schema": ({"json": chat(response_format={"type": "json_schema"})}, 400, "needs"),
    "two structured outputs": ({"json": chat(structured_outputs={"regex": "a+", "choice": ["a"]})}, 400,
                               "exactly one"),
    "bad regex": ({"json": chat(structured_outputs={"regex": "(unclosed"})}, 400, "invalid regex"),
    "max_tiles zero": ({"json": chat(max_tiles=0)}, 400, "max_tiles"),
    "num_frames too many": ({"json": chat(num_frames=1000)}, 400, "num_frames"),
    "bad base64": ({"json": chat(messages=user(image_part("data:image/png;base64,@@@not-base64@@@")))}, 400, "base64"),
    "data URI without comma": ({"json": chat(messages=user(image_part("data:image/png;base64")))}, 400, "','"),
    "zero-byte image": ({"json": chat(messages=user(image_part("data:image/png;base64,")))}, 400, "empty"),
    "truncated PNG": ({"json": chat(messages=user(image_part(uri(PNG[: len(PNG) // 2]))))}, 400, "readable image"),
    "text called PNG": ({"json": chat(messages=user(image_part(uri(b"hello, I am not an image"))))}, 400,
                        "readable image"),
    "TIFF called PNG": ({"json": chat(messages=user(image_part(uri(encoded(Image.new("RGB", (8, 8)), "TIFF")))))},
                        400, "accepted: PNG, JPEG, WEBP, GIF, BMP"),
    "20000-pixel sides": ({"json": chat(messages=user(image_part(uri(BOMB))))}, 400, "pixels per image"),
    "100 images": ({"json": images(png_data_uri(), 100)}, 400, "at most 32 per request"),
    "too many tiles": ({"json": {**images(uri(WIDE), 3), "max_tiles": 40}}, 400, "at most 64 per request"),
    "garbage video": ({"json": chat(messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": uri(b"\x00" * 64, "video/mp4")}}]}])}, 400, "video"),
    "ftp URL": ({"json": chat(messages=user(image_part("ftp://example.com/a.png")))}, 400, "http(s) URL"),
    "file URL": ({"json": chat(messages=user(image_part("file:///etc/passwd")))}, 400, "file:// media is off"),
    "metadata URL": ({"json": chat(messages=user(image_part("http://169.254.169.254/latest/meta-data/")))}, 400,
                     "link-local"),
    "private URL": ({"json": chat(messages=user(image_part("http://10.0.0.1/a.png")))}, 400, "private address"),
    "loopback name": ({"json": chat(messages=user(image_part("http://localhost:1/a.png")))}, 400, "loopback"),
    "stream is an object": ({"json": chat(stream={"yes": 1})}, 400, "stream"),
}


@pytest.fixture(scope="module")
def default_server(live, model_uid):
    assert model_uid == UID
    server = start_server(create_app(ServerConfig(), host=live.services.host), lifespan=False)
    yield server
    server.stop()


def test_the_corpus_is_refused_with_useful_4xx_and_the_server_keeps_serving(default_server):
    assert len(CORPUS) >= 40
    started = time.perf_counter()
    with httpx.Client(base_url=default_server.url, timeout=120) as http:
        for name, (request, status, words) in CORPUS.items():
            response = http.post("/v1/chat/completions", **request)
            assert response.status_code == status, (name, response.status_code, response.text)
            error = response.json()["error"]
            assert error["code"] == status and len(error["message"]) > 10, name
            assert words in error["message"], (name, error["message"])
            assert http.get("/health").json() == {"status": "ok"}, name
        good = http.post("/v1/chat/completions", json=chat(messages=user(image_part(png_data_uri()))))
        assert good.status_code == 200 and good.json()["choices"][0]["message"]["role"] == "assistant"
    print(f"{len(CORPUS)} bad requests refused in {time.perf_counter() - started:.1f} s")


def test_a_declared_oversized_body_is_refused_before_it_is_read(default_server):
    port = int(default_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000000\r\n\r\n{")
        sock.settimeout(30)
        answer = b""
        while b"larger than this server's limit" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than this server's limit" in answer
