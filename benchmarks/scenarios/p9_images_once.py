"""P9-P11: an image is paid for once and never stalls the others (issue #15), full-size 1B architecture, bf16,
the default 13-tile image (1920×1440 at max_tiles 12), engines in process with their default launch options (the
quick profile runs the 1B twin: it checks the harness, its ratios mean little).

- P9 second turn: turn 1 asks about a fresh picture (16 tokens); turn 2 resends the conversation (the picture, the
  first question, turn 1's answer) with one new short question. TTFT(turn 2) / TTFT(turn 1), per repeat with a new
  picture each time; Transformers engine (encoder cache + prefix K/V reuse) and, where vLLM imports, the vLLM engine
  (its prefix caching, on explicitly).
- P10 no stall: a text stream decodes; after its 24th token a 13-tile request about a fresh picture arrives; the
  stream goes on until 24 tokens after that request finished. The stream's largest inter-token gap / its median
  gap (the issue's measure: over the stream's life, most of which runs beside the prefill), the same largest gap /
  the stream's median gap before the image came (stricter; reported), and the image request's TTFT against the TTFT
  of another fresh picture alone (same engine, same size).
- P11 same image, many users: 8 concurrent requests (32 tokens each, different questions) about one fresh picture,
  aggregate output tok/s, against 8 requests about 8 different pictures. One repeat (the baseline alone is ~6 min).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from benchmarks import models
from benchmarks.inprocess import InProcessEngine
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context
from benchmarks.scenarios.p4_vllm import CPU as VLLM_CPU
from benchmarks.scenarios.p4_vllm import eager, vllm_usable
from benchmarks.stats import Figure, at_least, at_most, ratios
from benchmarks.workload import PROMPTS, synthetic_image, thirteen_tile_size

ID, TITLE = "P9", "Images paid once: second turn (P9), no stall (P10), same image for many users (P11)"
BASELINE = "P9: turn 1's TTFT; P10: the stream's median gap and the image's TTFT alone; P11: 8 different images"
ARRIVAL = 24  # P10: the image request arrives after the stream's 24th token, and the stream ends 24 tokens after it
QUESTION, FOLLOW_UP = "Describe this picture in detail.", "Which colours stand out?"


@dataclass
class Timed:
    start: float
    times: list[float]
    text: str

    @property
    def ttft(self) -> float:
        return self.times[0] - self.start

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def run(ctx: Context) -> ScenarioResult:
    cfg, result = ctx.config, ScenarioResult(ID, TITLE, BASELINE)
    model = (models.full_size if cfg.p9_full_size else models.twin)(ctx.work_dir)
    repeats = cfg.repeats
    with InProcessEngine(model, caches=True) as host:
        _p9(ctx, result, host, "Transformers", repeats, seed=100)
        _p10(ctx, result, host, repeats)
        _p11(ctx, result, host)
        result.notes.append(f"Transformers engine caches after the run: {host.engine.cache_stats()}")
    usable, reason = vllm_usable(cfg.vllm_python)
    if not usable:
        result.notes.append(f"P9 on the vLLM engine skipped: {reason}")
        return result
    setup = eager(VLLM_CPU) if cfg.p4_enforce_eager else VLLM_CPU  # as P4: no cold torch.compile on 2 cores
    options = {**setup.options, "enable_prefix_caching": True}
    with _environment(setup.env), InProcessEngine(model, engine="vLLM", **options) as host:
        _p9(ctx, result, host, "vLLM", min(repeats, 2), seed=150)
    return result


# ---------------------------------------------------------------- P9


def _p9(ctx: Context, result: ScenarioResult, host: InProcessEngine, engine: str, repeats: int, seed: int) -> None:
    first, second = [], []
    for r in range(repeats):
        picture = synthetic_image(*thirteen_tile_size(), seed + r)
        turn1 = host.call(_stream(host.engine, _conversation(picture, QUESTION), 16, f"p9-{engine}-{r}-1"))
        turn2 = host.call(_stream(host.engine, _conversation(picture, QUESTION, turn1.text, FOLLOW_UP), 16,
                                  f"p9-{engine}-{r}-2"))  # fmt: skip
        first.append(turn1.ttft)
        second.append(turn2.ttft)
        ctx.log(f"P9 {engine}: turn 1 TTFT {turn1.ttft:.2f} s, turn 2 {turn2.ttft:.2f} s")
    result.check(Figure.of(f"P9 {engine}: turn-2 TTFT / turn-1 TTFT", "×", ratios(second, first)), at_most(0.10))
    result.add(Figure.of(f"P9 {engine}: turn-1 TTFT", "s", first), Figure.of(f"P9 {engine}: turn-2 TTFT", "s", second))


# ---------------------------------------------------------------- P10


def _p10(ctx: Context, result: ScenarioResult, host: InProcessEngine, repeats: int) -> None:
    stalls, strict, slowdowns, with_stream, alone = [], [], [], [], []
    for r in range(repeats):
        solo = host.call(_stream(host.engine, _ask(synthetic_image(*thirteen_tile_size(), 300 + r)), 8, f"p10a{r}"))
        stream, image = host.call(_stream_beside_image(host.engine, synthetic_image(*thirteen_tile_size(), 200 + r), r))
        gaps = stream.gaps
        stalls.append(max(gaps) / statistics.median(gaps))
        strict.append(max(gaps) / statistics.median(gaps[: ARRIVAL - 1]))  # against its pace before the image
        slowdowns.append(image.ttft / solo.ttft)
        with_stream.append(image.ttft)
        alone.append(solo.ttft)
        ctx.log(f"P10: largest gap {max(gaps) * 1000:.0f} ms, median {statistics.median(gaps) * 1000:.0f} ms; "
                f"image TTFT {image.ttft:.1f} s beside the stream, {solo.ttft:.1f} s alone")  # fmt: skip
    result.check(Figure.of("P10: stream's largest gap / median gap", "×", stalls), at_most(5.0))
    result.check(Figure.of("P10: image TTFT beside a stream / alone", "×", slowdowns), at_most(1.2))
    result.check(Figure.of("P10: stream's largest gap / its median gap before the image arrived", "×", strict))
    result.add(Figure.of("P10: image TTFT beside a stream", "s", with_stream), Figure.of("P10: image TTFT alone", "s", alone))


async def _stream_beside_image(engine, picture, r: int) -> tuple[Timed, Timed]:
    from vlserve.engines.base import GenerateRequest, SamplingParams
    from vlserve.messages import ChatMessage

    arrived, image_done = asyncio.Event(), asyncio.Event()
    request = GenerateRequest(f"p10s{r}", (ChatMessage.text("user", "Count from one to a thousand."),),
                              SamplingParams(max_tokens=4000, temperature=0.0, ignore_eos=True))  # fmt: skip
    stream = Timed(time.perf_counter(), [], "")

    async def text_stream() -> None:
        after = 0
        generator = engine.generate(request)
        async for delta in generator:
            if delta.token_ids:
                stream.times.append(time.perf_counter())
            if len(stream.times) == ARRIVAL:
                arrived.set()
            after += image_done.is_set()
            if after >= ARRIVAL:
                break
        await generator.aclose()

    async def image_request() -> Timed:
        await arrived.wait()
        timed = await _stream(engine, _ask(picture), 8, f"p10i{r}")
        image_done.set()
        return timed

    _, image = await asyncio.gather(text_stream(), image_request())
    return stream, image


# ---------------------------------------------------------------- P11


def _p11(ctx: Context, result: ScenarioResult, host: InProcessEngine) -> None:
    same = synthetic_image(*thirteen_tile_size(), 400)
    shared = host.call(_wave(host.engine, [same] * 8, "p11s"))
    different = host.call(_wave(host.engine, [synthetic_image(*thirteen_tile_size(), 500 + i) for i in range(8)],
                                "p11d"))  # fmt: skip
    ctx.log(f"P11: same image {shared:.2f} tok/s, 8 different images {different:.2f} tok/s")
    result.check(Figure.of("P11: same image / 8 different images, aggregate tok/s (c=8, 32 tokens)", "×",
                           [shared / different]), at_least(4.0))  # fmt: skip
    result.add(Figure.of("P11: same image, aggregate", "tok/s", [shared]),
               Figure.of("P11: 8 different images, aggregate", "tok/s", [different]))  # fmt: skip


async def _wave(engine, pictures, prefix: str) -> float:
    start = time.perf_counter()
    runs = await asyncio.gather(*(_stream(engine, _ask(p, PROMPTS[i % len(PROMPTS)]), 32, f"{prefix}{i}")
                                  for i, p in enumerate(pictures)))  # fmt: skip
    return sum(len(run.times) for run in runs) / (time.perf_counter() - start)


# ---------------------------------------------------------------- requests


def _ask(picture, question: str = QUESTION):
    return _conversation(picture, question)


def _conversation(picture, question: str, *history: str):
    """One user turn with the picture, then (answer, question) pairs from `history`."""
    from vlserve.messages import ChatMessage, ImagePart, TextPart

    messages = [ChatMessage("user", (ImagePart(picture, 12), TextPart(question)))]
    for i, text in enumerate(history):
        messages.append(ChatMessage.text("assistant" if i % 2 == 0 else "user", text))
    return tuple(messages)


async def _stream(engine, messages, max_tokens: int, request_id: str) -> Timed:
    from vlserve.engines.base import GenerateRequest, SamplingParams

    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    timed = Timed(time.perf_counter(), [], "")
    async for delta in engine.generate(GenerateRequest(request_id, messages, sampling)):
        timed.text += delta.text
        timed.times.extend([time.perf_counter()] * len(delta.token_ids))
    return timed


class _environment:
    """Environment variables set for a block (vLLM reads its CPU KV space when its engine starts)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        import os

        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        import os

        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
