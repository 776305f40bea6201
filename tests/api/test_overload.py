"""Backpressure: a model launched with 4 running slots and a queue of 8 gets 64 concurrent streams; those beyond
the 12 it can hold are refused with 503 and Retry-After, and every accepted one completes with the same text as
the same request run alone (greedy)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from api_helpers import SEED_LAUNCH

UID = "busy"


@pytest.fixture(scope="module")
def busy_model(live, twin_1b, model_uid):
    body = {**SEED_LAUNCH, "model_uid": UID, "model_path": str(twin_1b), "dtype": "float32",
            "max_concurrent_requests": 4, "max_queued_requests": 8}
    response = httpx.post(f"{live.url}/v1/models", json=body, timeout=300)
    assert response.status_code == 200, response.text
    yield UID
    httpx.delete(f"{live.url}/v1/models/{UID}", timeout=120)


def request(i: int) -> dict:
    return {"model": UID, "messages": [{"role": "user", "content": f"Count to {i} in words, please."}],
            "max_tokens": 24, "temperature": 0, "ignore_eos": True, "stream": True}


async def stream(client: httpx.AsyncClient, i: int) -> tuple[int, str | None, str]:
    async with client.stream("POST", "/v1/chat/completions", json=request(i)) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, response.headers.get("retry-after"), response.text
        pieces, done = [], False
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                pieces += [c["delta"].get("content") or "" for c in chunk["choices"]]
        assert done
        return 200, None, "".join(pieces)


async def storm(url: str, count: int) -> list[tuple[int, str | None, str]]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        return await asyncio.gather(*(stream(client, i) for i in range(count)))


def test_64_streams_against_4_slots_and_a_queue_of_8(live, busy_model):
    described = httpx.get(f"{live.url}/v1/models/{UID}").json()
    assert (described["max_concurrent_requests"], described["max_queued_requests"]) == (4, 8)
    started = time.perf_counter()
    results = asyncio.run(storm(live.url, 64))
    elapsed = time.perf_counter() - started
    accepted = {i: text for i, (status, _, text) in enumerate(results) if status == 200}
    refused = [(status, retry, text) for status, retry, text in results if status != 200]
    print(f"64 concurrent streams in {elapsed:.1f} s: {len(accepted)} accepted, {len(refused)} refused with 503")
    assert len(accepted) >= 12 and len(refused) >= 64 - 12 - 4  # a few may arrive after earlier ones finished
    for status, retry, text in refused:
        error = json.loads(text)["error"]
        assert status == 503 and retry == "1" and error["type"] == "overloaded_error" and "busy" in error["message"]
    with httpx.Client(base_url=live.url, timeout=120) as http:
        for i, text in accepted.items():
            alone = http.post("/v1/chat/completions", json={**request(i), "stream": False}).json()
            assert text == alone["choices"][0]["message"]["content"], f"request {i} got another answer"
    gate = live.services.chat.admission(UID)
    assert gate.running == 0 and gate.queued == 0 and live.services.host.in_flight(UID) == (0,)
