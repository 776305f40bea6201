"""Concurrent load with the same request mix on either side: `c` closed-loop workers take requests in order from
one list; an HTTP worker streams `POST /v1/chat/completions` (async httpx, SSE), an in-process worker iterates
`engine.generate`. Both time each request the same way: TTFT = until the first non-empty text, latency = until
the stream ends; output tok/s = all completion tokens / wall time of the whole wave.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from benchmarks.inprocess import InProcessEngine
from benchmarks.workload import RequestSpec


class LoadError(RuntimeError):
    """A request failed: the comparison is not valid."""


@dataclass(frozen=True)
class RequestTiming:
    ttft: float  # seconds to the first non-empty text (the whole latency when no text came)
    latency: float
    prompt_tokens: int
    completion_tokens: int
    asked_tokens: int
    decode_s: float  # first to last token

    @property
    def inter_token_s(self) -> float | None:
        return self.decode_s / (self.completion_tokens - 1) if self.completion_tokens > 1 else None


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    wall_s: float
    requests: tuple[RequestTiming, ...]

    @property
    def tokens_per_s(self) -> float:
        return sum(r.completion_tokens for r in self.requests) / self.wall_s

    @property
    def median_ttft(self) -> float:
        return statistics.median(r.ttft for r in self.requests)

    @property
    def work_as_asked(self) -> bool:
        """Every request produced exactly max_tokens tokens (ignore_eos honoured): both sides did the same work."""
        return all(r.completion_tokens == r.asked_tokens for r in self.requests)

    @property
    def prompt_tokens(self) -> tuple[int, ...]:
        return tuple(r.prompt_tokens for r in self.requests)


Send = Callable[[RequestSpec], Awaitable[RequestTiming]]


async def closed_loop(specs: Sequence[RequestSpec], concurrency: int, send: Send) -> LoadResult:
    queue = iter(list(specs))
    timings: list[RequestTiming] = []

    async def worker() -> None:
        for spec in queue:  # the shared iterator hands each spec to exactly one worker
            timings.append(await send(spec))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(concurrency, time.perf_counter() - start, tuple(timings))


# ---------------------------------------------------------------- HTTP (OpenAI streaming)


def run_http(base_url: str, model: str, specs: Sequence[RequestSpec], concurrency: int) -> LoadResult:
    return asyncio.run(_http_wave(base_url, model, specs, concurrency))


async def _http_wave(base_url: str, model: str, specs: Sequence[RequestSpec], concurrency: int) -> LoadResult:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(1800.0), limits=limits) as client:

        async def send(spec: RequestSpec) -> RequestTiming:
            return await _http_request(client, spec.openai_body(model), spec.max_tokens)

        return await closed_loop(specs, concurrency, send)


async def _http_request(client, body: dict, asked: int) -> RequestTiming:
    start = time.perf_counter()
    first = last = None
    usage: dict = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise LoadError(f"HTTP {response.status_code}: {(await response.aread()).decode(errors='replace')[:500]}")
        async for chunk in _sse_chunks(response):
            usage = chunk.get("usage") or usage
            if any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", ())):
                last = time.perf_counter()
                first = first or last
    end = time.perf_counter()
    if not usage:
        raise LoadError("the stream ended without a usage chunk (stream_options.include_usage was asked)")
    first, last = first or end, last or end
    return RequestTiming(first - start, end - start, int(usage.get("prompt_tokens", 0)),
                         int(usage.get("completion_tokens", 0)), asked, last - first)  # fmt: skip


async def _sse_chunks(response):
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise LoadError(f"error in stream: {chunk['error']}")
        yield chunk


# ---------------------------------------------------------------- in-process engine


def run_engine(host: InProcessEngine, specs: Sequence[RequestSpec], concurrency: int) -> LoadResult:
    """The wave on the engine's own loop (see benchmarks.inprocess for why not a fresh loop per wave)."""
    return host.call(closed_loop(specs, concurrency, lambda spec: engine_request(host.engine, spec)))


_ids = itertools.count()


async def engine_request(engine, spec: RequestSpec) -> RequestTiming:
    request = spec.engine_request(f"bench-{next(_ids)}-{uuid.uuid4().hex[:8]}")
    start = time.perf_counter()
    first = last = None
    prompt = completion = 0
    async for delta in engine.generate(request):
        if delta.text:
            last = time.perf_counter()
            first = first or last
        if delta.finish_reason == "error":
            raise LoadError(f"the engine failed request {request.request_id}")
        prompt, completion = delta.prompt_tokens or prompt, max(completion, delta.completion_tokens)
    end = time.perf_counter()
    first, last = first or end, last or end
    return RequestTiming(first - start, end - start, prompt, completion, spec.max_tokens, last - first)
