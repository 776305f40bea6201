"""B2: time to first token of an image prompt on the full-size 1B architecture (Transformers engine, bf16) against
the compute bound: FLOPs of the ViT, the projector and the LLM prefill (`arch.image_prompt_flops`, from the config)
/ the measured bf16 matmul rate (the fastest of a few torch.matmul shapes, measured in the same repeat).

One 1920×1440 image at max_tiles 1, 4, 6, 12 (1, 5, 7, 13 tiles; the quick profile runs 1 tile only), max_tokens 1.
TTFT includes tiling and tokenization (the engine's prep), which the bound does not count. Reported, no target;
the chart shows TTFT and the bound against tiles.
"""

from __future__ import annotations

import statistics

from benchmarks import arch, charts, models
from benchmarks.inprocess import InProcessEngine
from benchmarks.load import run_engine
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context, bounds
from benchmarks.stats import Figure, paired
from benchmarks.workload import PROMPTS, RequestSpec, thirteen_tile_size

ID, TITLE = "B2", "TTFT of an image prompt vs the compute bound (full-size 1B, bf16)"
BASELINE = "(ViT + projector + LLM prefill FLOPs) / measured bf16 torch.matmul rate"


def run(ctx: Context) -> ScenarioResult:
    from vlserve.families.internvl2_5.tiling import num_tiles

    cfg, model = ctx.config, models.full_size(ctx.work_dir)
    config, size, result = model.config(), thirteen_tile_size(), ScenarioResult(ID, TITLE, BASELINE)
    points: list[tuple[int, Figure, list[float]]] = []
    with InProcessEngine(model) as engine:
        run_engine(engine, [RequestSpec(PROMPTS[0], 1, size, max_tiles=1)], 1)  # warm-up
        for max_tiles in cfg.b2_max_tiles:
            tiles, spec = num_tiles(*size, max_tiles), RequestSpec(PROMPTS[0], 1, size, max_tiles=max_tiles)
            runs = paired(cfg.repeats, {"ttft": lambda spec=spec: run_engine(engine, [spec], 1),
                                        "rate": bounds.matmul_rate}, warmup=False)  # fmt: skip
            prompt_tokens = runs["ttft"][0].requests[0].prompt_tokens
            flops = arch.image_prompt_flops(config, tiles, prompt_tokens)
            ttft = [r.median_ttft for r in runs["ttft"]]
            bound = [flops["total"] / rate for rate, _ in runs["rate"]]
            label = f"{tiles} tile{'s' if tiles > 1 else ''}"
            result.check(Figure.of(f"{label}: compute bound / TTFT", "×", [b / t for b, t in zip(bound, ttft, strict=True)]))
            result.add(Figure.of(f"{label}: TTFT", "s", ttft), Figure.of(f"{label}: compute bound", "s", bound),
                       Figure.of(f"{label}: FLOPs (ViT {flops['ViT'] / 1e12:.2f} T + prefill of {prompt_tokens} "
                                 f"tokens {flops['LLM prefill'] / 1e12:.2f} T)", "TFLOP", [flops["total"] / 1e12]))  # fmt: skip
            points.append((tiles, Figure.of(label, "s", ttft), bound))
            ctx.log(f"B2 {label}: TTFT {ttft[0]:.2f} s vs compute bound {bound[0]:.2f} s")
    rates = [rate for rate, _ in runs["rate"]]
    result.add(Figure.of(f"bf16 matmul rate (best shape: {runs['rate'][0][1]})", "GFLOP/s", [r / 1e9 for r in rates]))
    _chart(ctx, result, points)
    return result


def _chart(ctx: Context, result: ScenarioResult, points) -> None:
    if ctx.chart_dir is None or len(points) < 2:
        return
    xs = [tiles for tiles, _, _ in points]
    path = charts.line_chart(ctx.chart_dir / "b2_ttft_vs_tiles.png", "B2 TTFT vs tiles (full-size 1B, bf16)", "tiles",
                             "seconds", [charts.Series("measured TTFT", xs, [f for _, f, _ in points]),
                                         charts.Series("compute bound", xs, values=[statistics.median(b) for _, _, b in points])])  # fmt: skip
    if path:
        result.charts.append(path)
    else:
        result.notes.append("chart skipped: matplotlib is not installed (pip install -e .[bench])")
