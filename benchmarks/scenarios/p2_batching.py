"""P2: the Transformers engine's continuous batching against the naive way to serve 8 users: one plain HF
`model.generate` per request, each in its own thread, on the same converted model (vlserve's loader, bf16).

Load: 8 concurrent requests, each one image + text, greedy, fixed output length (engine: `ignore_eos`; HF:
`min_new_tokens = max_new_tokens`). Mixes: 1 tile per image (`max_tiles=1`; the target, ≥ 3× output tok/s) and 13
tiles per image (reported; a single repeat in the full profile, prefill-dominated). Both sides tile and tokenize
inside the timed request. The full profile runs the full-size 1B architecture; the quick one the twin.
"""

from __future__ import annotations

import queue
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from benchmarks import models
from benchmarks.inprocess import InProcessEngine
from benchmarks.load import LoadResult, RequestTiming, run_engine
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context
from benchmarks.stats import Figure, at_least, paired, ratios
from benchmarks.threads import on_own_thread
from benchmarks.workload import RequestSpec, image_mix, thirteen_tile_size

ID, TITLE = "P2", "Continuous batching: 8 concurrent image requests, Transformers engine"
BASELINE = "a plain HF model.generate per request in 8 threads, same converted model (no batching)"
IF_MISSED = (
    "each request's prefill (the ViT on its tile plus a ~300-token prompt: 2-4 s of compute-bound work on 2 cores) "
    "is a large, unbatchable share of the run: prefills run one at a time, in slices between decode steps (#15), "
    "and batching wins only in decode. What would close it: decode tokens riding along in the prefill chunks' "
    "forward passes (one weight read for both), or prefilling waiting prompts together"
)


def run(ctx: Context) -> ScenarioResult:
    cfg = ctx.config
    model = models.full_size(ctx.work_dir) if cfg.p2_full_size else models.twin(ctx.work_dir)
    n, tokens = cfg.p2_requests, cfg.p2_max_tokens
    target = at_least(3.0) if model.full_size else None  # the target is about the full-size arch
    mixes = [("1-tile", image_mix(n, tokens, max_tiles=1), cfg.repeats, target)]
    if cfg.p2_thirteen_tile:
        mixes.append(("13-tile", image_mix(n, tokens, max_tiles=12, size=thirteen_tile_size()), 1, None))
    result = ScenarioResult(ID, TITLE, BASELINE)
    with InProcessEngine(model) as engine, NaiveGenerate(model.path, threads=n) as naive:
        warm = image_mix(2, 4, max_tiles=1)
        run_engine(engine, warm, 2)
        naive.run(warm)
        for label, specs, repeats, target in mixes:
            runs = paired(repeats, {"engine": lambda specs=specs: run_engine(engine, specs, n),
                                    "naive": lambda specs=specs: naive.run(specs)}, warmup=False)  # fmt: skip
            _report(ctx, result, f"{model.label}, {label}, c={n}, {tokens} tokens", runs, target)
    if not model.full_size:
        result.notes.append("run on the twin (quick profile): the ≥ 3× target applies to the full-size arch, so the "
                            "ratio is only reported")  # fmt: skip
    result.notes.append("HF generate runs with transformers' default (sdpa) attention and DynamicCache; the engine "
                        "with its slot KV cache; both in bf16 with torch's default thread count")  # fmt: skip
    return result


def _report(ctx: Context, result: ScenarioResult, label: str, runs: dict[str, list[LoadResult]], target) -> None:
    engine, naive = runs["engine"], runs["naive"]
    engine_tps, naive_tps = [r.tokens_per_s for r in engine], [r.tokens_per_s for r in naive]
    result.check(Figure.of(f"{label}: tok/s engine / naive threads", "×", ratios(engine_tps, naive_tps)), target,
                 IF_MISSED)
    result.add(Figure.of(f"{label}: output tok/s, engine", "tok/s", engine_tps),
               Figure.of(f"{label}: output tok/s, naive threads", "tok/s", naive_tps),
               Figure.of(f"{label}: median TTFT, engine", "s", [r.median_ttft for r in engine]),
               Figure.of(f"{label}: median TTFT, naive threads", "s", [r.median_ttft for r in naive]))  # fmt: skip
    if not all(r.work_as_asked for r in engine + naive):
        result.notes.append(f"{label}: some requests did not produce exactly max_tokens tokens")
    ctx.log(f"P2 {label}: engine {statistics.median(engine_tps):.1f} tok/s, naive {statistics.median(naive_tps):.1f} tok/s")


class NaiveGenerate:
    """The baseline: the converted model loaded once, `generate` called per request from a pool of threads."""

    def __init__(self, model_dir: Path, threads: int, device: str = "cpu") -> None:
        import copy

        import torch

        from vlserve.families.internvl2_5 import loader

        self.loader, self.threads, self.device = loader, threads, device
        self.model = on_own_thread(  # not on the main thread, beside the engine under test (benchmarks/threads.py)
            lambda: loader.load_model(model_dir, dtype=torch.bfloat16, device_for=lambda _name: device).eval())
        tokenizer = loader.load_tokenizer(model_dir)
        self.tokenizers: queue.Queue = queue.Queue()  # a fast tokenizer must not be shared between threads
        for _ in range(threads):
            self.tokenizers.put(copy.deepcopy(tokenizer))

    def run(self, specs: list[RequestSpec]) -> LoadResult:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="naive-generate") as pool:
            timings = list(pool.map(self._one, specs))
        return LoadResult(self.threads, time.perf_counter() - start, tuple(timings))

    def _one(self, spec: RequestSpec) -> RequestTiming:
        import torch

        start = time.perf_counter()
        tokenizer = self.tokenizers.get()
        try:
            encoded = self.loader.encode(tokenizer, spec.engine_request("naive").messages)
        finally:
            self.tokenizers.put(tokenizer)
        ids = torch.tensor([encoded.input_ids], device=self.device)
        pixels = encoded.pixel_values
        pixels = pixels.to(self.device, self.model.dtype) if pixels is not None else None
        clock = _FirstToken()
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                                      max_new_tokens=spec.max_tokens, min_new_tokens=spec.max_tokens,
                                      do_sample=False, streamer=clock)  # fmt: skip
        end = time.perf_counter()
        first = clock.first or end
        produced = out.shape[1] - ids.shape[1]
        return RequestTiming(first - start, end - start, ids.shape[1], produced, spec.max_tokens, end - first)

    def close(self) -> None:
        self.model = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FirstToken:
    """A generate streamer that only notes when the first new token arrives (its first `put` is the prompt)."""

    def __init__(self) -> None:
        self.puts, self.first = 0, None

    def put(self, _tokens) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass
