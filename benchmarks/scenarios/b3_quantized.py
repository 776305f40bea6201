"""B3/B4/B5: `8-bit` and `4-bit` against bf16 on CPU (full-size 1B architecture, Transformers engine, in-process),
and against llama.cpp on the same architecture (issue #18). One engine at a time, bf16 first, all in one run:

- B3: batch-1 decode tok/s (a text prompt, B1's measure: tokens after the first over the time after the first),
  8-bit / bf16 (target ≥ 1.4×) and 4-bit / bf16 (target ≥ 1.8×), launch defaults; reported beside them: 8-bit
  with `cpu_quant weight_only`, 4-bit with `cpu_quant weight_only` (PyTorch's int4 kernel), and both with
  `quantize_lm_head`.
- Paired, every measure (B3, B4, TTFT): the bf16 engine stays loaded, and each variant's waves alternate with the
  same waves on bf16, so a ratio compares runs seconds apart under the same conditions (this host's decode pace
  drifts by ±20% within minutes: bf16 measured 22 and 29 tok/s in one process).
- B4: aggregate output tok/s of P2's workload (8 concurrent requests, one 1-tile image each), quantized / bf16
  (target ≥ 1.0× each).
- TTFT of a 13-tile image, quantized / bf16 (target ≤ 1.15×; full profile only).
- On a CPU without a native bfloat16 product (AVX2 only) the launch default `cpu_gemm auto` is `float32`
  (float32_prefill.py): the bf16 baseline's image tiles and prompt chunks (and the quantized variants' image tiles)
  in float32, not on torch's emulated bf16 product for minutes per wave (a 1-tile image's first token: 9.9 s
  against 43.5 s).
- AWQ `Int4` on CPU (reported, no target): batch-1 decode tok/s of the full-size 4B-AWQ architecture (the smallest
  AWQ spec; its 3B language model on the int4 kernels), full profile only.
- B5: vlserve's batch-1 decode against llama.cpp's (`llama-bench` tg, 2 threads) on the language model converted by
  llama.cpp's own converter: bf16 vs bf16, 8-bit vs q8_0, 4-bit vs q4_0 (target ≥ 1.0×, reported); skipped with
  the reason where llama.cpp is not built (benchmarks/build_llama_cpp.sh).
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import llama_cpp, models
from benchmarks.inprocess import InProcessEngine
from benchmarks.load import run_engine
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context
from benchmarks.stats import Figure, at_least, at_most, paired, ratios
from benchmarks.workload import PROMPTS, RequestSpec, image_mix, text_mix, thirteen_tile_size

ID, TITLE = "B3", "Quantized decode on CPU: 8-bit / 4-bit vs bf16 (B3, B4) and vs llama.cpp (B5), full-size 1B"
BASELINE = "bf16 on the same engine (B3/B4); llama.cpp llama-bench bf16 / q8_0 / q4_0, 2 threads (B5)"
VARIANTS = (("8-bit", "8-bit", {}), ("4-bit", "4-bit", {}),
            ("8-bit weight-only", "8-bit", {"cpu_quant": "weight_only"}),
            ("4-bit weight-only", "4-bit", {"cpu_quant": "weight_only"}),
            ("8-bit + int8 lm_head", "8-bit", {"quantize_lm_head": True}),
            ("4-bit + int8 lm_head", "4-bit", {"quantize_lm_head": True}))  # fmt: skip
DECODE_ONLY = ("8-bit weight-only", "4-bit weight-only", "8-bit + int8 lm_head",
               "4-bit + int8 lm_head")  # reported beside the targets  # fmt: skip
PEERS = {"bf16": "bf16", "8-bit": "q8_0", "4-bit": "q4_0"}
TARGETS = {"8-bit": 1.4, "4-bit": 1.8}


def run(ctx: Context) -> ScenarioResult:
    cfg, model = ctx.config, models.full_size(ctx.work_dir)
    result = ScenarioResult(ID, TITLE, BASELINE)
    decode, batch8, ttft, kernels = {}, {}, {}, {}  # per measure: label -> (its samples, bf16's beside them)
    with InProcessEngine(model, "none") as bf16:
        kernels["bf16"] = bf16.info.extra.get("cpu_gemm")
        for label, quantization, options in VARIANTS:
            with InProcessEngine(model, quantization, **options) as engine:
                kernels[label] = engine.info.extra.get("quant_kernels") or engine.info.extra.get("cpu_gemm")
                decode[label] = _paired(cfg, engine, bf16, _decode(cfg))
                if label not in DECODE_ONLY:
                    batch8[label] = _paired(cfg, engine, bf16, _batch8(cfg))
                    if not cfg.quick:
                        ttft[label] = _paired(cfg, engine, bf16, _ttft)
            ctx.log(f"B3 {label}: decode {decode[label][0][0]:.1f} tok/s ({kernels[label]}), bf16 beside it "
                    f"{decode[label][1][0]:.1f}")  # fmt: skip
    for label, target in TARGETS.items():
        result.check(Figure.of(f"B3 batch-1 decode {label} / bf16", "×", ratios(*decode[label])), at_least(target))
    for label in DECODE_ONLY:
        result.check(Figure.of(f"B3 batch-1 decode {label} / bf16", "×", ratios(*decode[label])))
    for label in TARGETS if batch8 else ():
        result.check(Figure.of(f"B4 batch-8 1-tile aggregate {label} / bf16", "×", ratios(*batch8[label])),
                     at_least(1.0))  # fmt: skip
        if ttft:
            result.check(Figure.of(f"13-tile TTFT {label} / bf16", "×", ratios(*ttft[label])), at_most(1.15, "×"))
    _peer(ctx, result, model, {label: samples for label, (samples, _) in decode.items()} | {
        "bf16": decode["8-bit"][1]})  # fmt: skip
    if not cfg.quick:
        try:
            _awq(ctx, result)
        except Exception as exc:  # noqa: BLE001 - a report beside the targets must not lose them
            result.notes.append(f"AWQ Int4 4B decode not measured: {type(exc).__name__}: {exc}")
    for measure, unit, results in (("batch-1 decode", "tok/s", decode), ("batch-8 aggregate output", "tok/s", batch8),
                                   ("13-tile TTFT", "s", ttft)):  # fmt: skip
        for label, (samples, beside) in results.items():
            result.add(Figure.of(f"{label}: {measure} ({kernels[label]})", unit, samples))
            result.add(Figure.of(f"bf16 beside {label}: {measure} ({kernels['bf16']})", unit, beside))
    result.notes.append(f"decode after a text prompt, {cfg.b1_max_tokens} output tokens; batch 8: "
                        f"{cfg.p2_requests} concurrent 1-tile image requests of {cfg.b1_max_tokens} tokens. Every "
                        "measure of a variant alternates with the same measure of the bf16 engine, loaded beside "
                        "it (B5's bf16: the decode waves beside 8-bit)")  # fmt: skip
    return result


Measure = Callable[[InProcessEngine], float]


def _paired(cfg, engine: InProcessEngine, bf16: InProcessEngine, measure: Measure) -> tuple[list[float], list[float]]:
    """`measure` of the variant and of bf16, alternating (one unrecorded warm-up each): (variant's, bf16's)."""
    sides = paired(cfg.repeats, {"variant": lambda: measure(engine), "bf16": lambda: measure(bf16)})
    return sides["variant"], sides["bf16"]


def _decode(cfg) -> Measure:
    return lambda engine: 1 / run_engine(engine, text_mix(1, cfg.b1_max_tokens), 1).requests[0].inter_token_s


def _batch8(cfg) -> Measure:
    specs = image_mix(cfg.p2_requests, cfg.b1_max_tokens, max_tiles=1)
    return lambda engine: run_engine(engine, specs, cfg.p2_requests).tokens_per_s


def _ttft(engine: InProcessEngine) -> float:
    return run_engine(engine, [RequestSpec(PROMPTS[0], 1, thirteen_tile_size(), max_tiles=12)], 1).median_ttft


def _awq(ctx: Context, result: ScenarioResult) -> None:
    """The smallest AWQ spec's decode on CPU (issue #18 item 5): reported beside the 1B figures."""
    model = models.prepare(ctx.work_dir, full_size=True, architecture="InternVL2_5-4B-AWQ")
    with InProcessEngine(model, "Int4") as engine:
        kernels = engine.info.extra.get("quant_kernels") or "int4"
        run_engine(engine, text_mix(1, 4), 1)  # warm-up
        samples = [1 / run_engine(engine, text_mix(1, ctx.config.b1_max_tokens), 1).requests[0].inter_token_s
                   for _ in range(ctx.config.repeats)]  # fmt: skip
    result.add(Figure.of(f"AWQ Int4 {model.label}: batch-1 decode ({kernels})", "tok/s", samples))
    ctx.log(f"B3 AWQ 4B: decode {samples[0]:.1f} tok/s")


def _peer(ctx: Context, result: ScenarioResult, model, decode: dict[str, list[float]]) -> None:
    why_not = llama_cpp.available()
    if why_not:
        result.notes.append(f"B5 skipped: {why_not}")
        return
    files = llama_cpp.ggufs(model.path, ctx.work_dir)
    for label, peer in PEERS.items():
        theirs = llama_cpp.decode_tok_s(files[peer], ctx.config.b1_max_tokens, repetitions=ctx.config.repeats)
        result.check(Figure.of(f"B5 batch-1 decode vlserve {label} / llama.cpp {peer}", "×",
                               ratios(decode[label], theirs)), at_least(1.0))  # fmt: skip
        result.add(Figure.of(f"llama.cpp {peer}: tg{ctx.config.b1_max_tokens}, 2 threads", "tok/s", theirs))
        ctx.log(f"B5 llama.cpp {peer}: {theirs[0]:.1f} tok/s")
