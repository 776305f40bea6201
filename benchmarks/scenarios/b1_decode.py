"""B1: batch-1 decode speed of the full-size 1B architecture (Transformers engine, bf16, text prompt) against the
memory-bandwidth bound, target ≥ 0.5 (issue #3): measured read bandwidth / bytes one decode step must read
(`arch.decode_bytes_per_token`: decoder weights, final norm, lm_head, one embedding row, the KV cache so far).

Decode tok/s = (tokens − 1) / (last token time − first token time), so prefill is excluded. The bandwidth the
decode is held to is measured right around it: each repeat sums 1 GiB five times just before and five times just
after its decode, and the bound uses the median of those ten. On this shared VM the read bandwidth swings between
~20 and ~60 GB/s from one second to the next, so a best-of figure measures the machine's best moment while the decode
(seconds long) lives through the typical ones; the best sum of the ten is still reported, with the ratio against it.
"""

from __future__ import annotations

import statistics

from benchmarks import arch, models
from benchmarks.inprocess import InProcessEngine
from benchmarks.load import run_engine
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context, bounds
from benchmarks.stats import Figure, at_least
from benchmarks.workload import text_mix

ID, TITLE = "B1", "Batch-1 decode vs the memory-bandwidth bound (full-size 1B, bf16)"
BASELINE = "read bandwidth measured around the decode (torch sum over 1 GiB) / weight + KV bytes read per token"
GB = 1e9
SUMS_EACH_SIDE = 5
IF_MISSED = (
    "the products (the bytes the bound counts) stream their weights at ~30 GB/s through ZenDNN's kernels at one row "
    "(~25 on oneDNN's, where ZenDNN is not used), where a sum reads 30-60 GB/s on this VM; q/k/v and gate/up are "
    "already fused and the step already skips transformers' wrappers. What is left outside the products is ~7 ms "
    "per step of small ops (norms, rotary, cache writes, attention)."
)


def run(ctx: Context) -> ScenarioResult:
    cfg, model = ctx.config, models.full_size(ctx.work_dir)
    specs = text_mix(1, cfg.b1_max_tokens)
    with InProcessEngine(model) as engine:
        run_engine(engine, text_mix(1, 4), 1)  # warm-up
        repeats = [_bracketed(lambda: run_engine(engine, specs, 1)) for _ in range(cfg.repeats)]
    timing = [load.requests[0] for _, load, _ in repeats]
    decode = [1 / t.inter_token_s for t in timing]
    context = timing[0].prompt_tokens + cfg.b1_max_tokens // 2
    per_token = arch.decode_bytes_per_token(model.config(), context)
    around = [statistics.median(before + after) for before, _, after in repeats]
    best = [max(before + after) for before, _, after in repeats]

    def ratios(bandwidths: list[float]) -> list[float]:  # decode tok/s over the bound each bandwidth gives
        return [d * per_token / bw for d, bw in zip(decode, bandwidths, strict=True)]

    result = ScenarioResult(ID, TITLE, BASELINE)
    result.check(Figure.of("decode tok/s / bandwidth bound", "×", ratios(around)), at_least(0.5), IF_MISSED)
    result.add(
        Figure.of("batch-1 decode", "tok/s", decode),
        Figure.of("bandwidth bound (median read bandwidth around the decode)", "tok/s", [bw / per_token for bw in around]),
        Figure.of("read bandwidth around the decode (median of 10 sums of 1 GiB fp32)", "GB/s", [bw / GB for bw in around]),
        Figure.of("best of those sums", "GB/s", [bw / GB for bw in best]),
        Figure.of("decode tok/s / bound at the best sum", "×", ratios(best)),
        Figure.of("copy bandwidth (read + write, 0.5 GiB)", "GB/s", [bounds.copy_bandwidth() / GB]),
        Figure.of(f"bytes read per decode step (context {context})", "MB", [per_token / 1e6]),
    )  # fmt: skip
    result.notes.append(f"{cfg.b1_max_tokens} output tokens after a {timing[0].prompt_tokens}-token text prompt; "
                        "the bound's bandwidth is the median of 5 sums just before and 5 just after each decode")  # fmt: skip
    ctx.log(f"B1 decode {decode[0]:.2f} tok/s vs bound {around[0] / per_token:.2f} tok/s")
    return result


def _bracketed(decode):
    """(bandwidth samples just before, the decode's result, bandwidth samples just after)."""
    before = bounds.read_bandwidth_samples(calls=SUMS_EACH_SIDE)
    result = decode()
    return before, result, bounds.read_bandwidth_samples(calls=SUMS_EACH_SIDE)
