"""Faults on the real server and the real Transformers engine (twins): clients that go away, a request that fails
inside the engine, an engine whose scheduler thread dies, and a checkpoint that ships Python files."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from api_helpers import SEED_LAUNCH, assert_openai_error

MARKER_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("remote code ran")
"""


def ask(text: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, **fields}


def settle(live, uid: str, timeout: float = 10) -> None:
    """Wait until nothing of `uid` is running: host, admission gate and engine scheduler all empty."""
    engine = live.services.host.engines(uid)[0]
    gate = live.services.chat.admission(uid)
    deadline = time.monotonic() + timeout
    while (any(live.services.host.in_flight(uid)) or gate.running or gate.queued or engine.scheduler.batch
           or engine.scheduler.waiting or engine.scheduler.cache.active):  # fmt: skip
        assert time.monotonic() < deadline, "requests were left behind"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def remote_code_twin(twin_1b, tmp_path_factory):
    """The 1B twin plus the Python files a hub checkpoint ships (auto_map points at them); importing any of them
    would write the marker file."""
    folder = tmp_path_factory.mktemp("remote-code") / "twin"
    shutil.copytree(twin_1b, folder)
    marker = folder.parent / "REMOTE_CODE_RAN"
    for name in ("modeling_internvl_chat", "configuration_internvl_chat", "conversation", "modeling_intern_vit",
                 "tokenization_internlm2"):
        (folder / f"{name}.py").write_text(MARKER_CODE.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_internvl_chat.InternVLChatModel"
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer["auto_map"] = {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return folder, marker


def launch(http: httpx.Client, uid: str, path, **options) -> None:
    body = {**SEED_LAUNCH, "model_uid": uid, "model_path": str(path), "dtype": "float32", **options}
    response = http.post("/v1/models", json=body, timeout=300)
    assert response.status_code == 200, response.text


def test_a_dropped_stream_aborts_its_generation_200_times_without_leaks(live, http, model_uid):
    body = {"model": model_uid, **ask("Tell a long story."), "max_tokens": 2000, "ignore_eos": True, "stream": True}

    def cycle() -> None:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            next(line for line in response.iter_lines() if '"content":"' in line and '"role"' not in line)

    for _ in range(20):  # warm-up: allocator pools, caches
        cycle()
    settle(live, model_uid)
    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    for _ in range(200):
        cycle()
    settle(live, model_uid)
    elapsed = time.perf_counter() - started
    rss_after = psutil.Process().memory_info().rss
    growth = (rss_after - rss_before) / 2**20
    print(f"200 connect-stream-disconnect cycles in {elapsed:.1f} s; RSS {rss_before / 2**20:.0f} -> "
          f"{rss_after / 2**20:.0f} MiB ({growth:+.1f} MiB)")
    assert growth < 64, f"resident memory grew by {growth:.1f} MiB over 200 dropped streams"


def test_a_dropped_non_streaming_request_is_aborted_too(live, model_uid):
    engine = live.services.host.engines(model_uid)[0]
    body = {"model": model_uid, **ask("Go on."), "max_tokens": 4000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    settle(live, model_uid)
    steps = engine.scheduler.steps
    time.sleep(0.3)
    assert engine.scheduler.steps == steps, "the engine kept generating for a client that left"


def test_an_exception_inside_the_engine_fails_only_its_request(live, http, model_uid):
    """A fault while decoding one request (its token handling raises) fails that request alone; the requests
    decoded in the same batch finish with the text they have when run alone."""
    scheduler = live.services.host.engines(model_uid)[0].scheduler
    good = {"model": model_uid, **ask("Name three colours."), "max_tokens": 24, "ignore_eos": True}
    alone = http.post("/v1/chat/completions", json=good).json()["choices"][0]["message"]["content"]
    original = scheduler._accept

    def faulty(seq, token, *rest):
        if seq.job.max_tokens == 37 and seq.completion >= 3:
            raise RuntimeError("injected fault")
        original(seq, token, *rest)

    scheduler._accept = faulty
    try:
        bad = {"model": model_uid, **ask("Name three colours."), "max_tokens": 37, "ignore_eos": True}
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda b: http.post("/v1/chat/completions", json=b), [good, bad, good]))
    finally:
        del scheduler._accept
    error = assert_openai_error(results[1], 500, "engine_error")
    assert "injected fault" in error["message"]
    for response in (results[0], results[2]):
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == alone
    settle(live, model_uid)
    assert live.services.host.get(model_uid).phase.value == "ready"


class _Die(BaseException):
    """Not an Exception: nothing in the scheduler loop catches it, so its thread ends."""


def test_remote_code_never_runs_and_a_dead_engine_marks_only_its_model(live, http, model_uid, remote_code_twin):
    folder, marker = remote_code_twin
    launch(http, "victim", folder)
    assert http.post("/v1/chat/completions", json={"model": "victim", **ask("hi"), "max_tokens": 3}).status_code == 200
    assert not marker.exists(), "a Python file shipped with the checkpoint was executed"

    scheduler = live.services.host.engines("victim")[0].scheduler
    body = {"model": "victim", **ask("Keep going."), "max_tokens": 3000, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(line for line in lines if '"content":"' in line and '"role"' not in line)

        def die():
            raise _Die("injected: the scheduler thread dies")

        scheduler._decode_step = die
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]" and '"engine_error"' in rest[-2] and "scheduler thread died" in rest[-2]

    described = http.get("/v1/models/victim").json()
    assert described["status"] == "error" and "scheduler thread died" in described["error"]
    assert {m["id"]: m["status"] for m in http.get("/v1/models").json()["data"]}["victim"] == "error"
    refused = http.post("/v1/chat/completions", json={"model": "victim", **ask("hi"), "max_tokens": 2})
    assert "scheduler thread died" in assert_openai_error(refused, 503, "model_not_ready")["message"]
    other = http.post("/v1/chat/completions", json={"model": model_uid, **ask("hi"), "max_tokens": 3})
    assert other.status_code == 200 and http.get("/health").status_code == 200

    assert http.delete("/v1/models/victim").status_code == 200
    launch(http, "victim", folder)
    again = http.post("/v1/chat/completions", json={"model": "victim", **ask("hi"), "max_tokens": 3})
    assert again.status_code == 200 and http.get("/v1/models/victim").json()["status"] == "ready"
    assert http.delete("/v1/models/victim").status_code == 200
    assert not marker.exists()
