"""A concurrency sweep of two sides with the same request mix (P1: vlserve HTTP vs in-process; P4: vLLM through
vlserve vs vLLM's server): warm-up once per side, then paired repeats per concurrency level, checks on
output tok/s (ours / baseline) and TTFT (baseline / ours), both ≥ 0.95×, and a tok/s-vs-concurrency chart."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks import charts
from benchmarks.load import LoadResult
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context
from benchmarks.stats import Figure, at_least, paired, ratios
from benchmarks.workload import RequestSpec

Drive = Callable[[Sequence[RequestSpec], int], LoadResult]


@dataclass(frozen=True)
class Side:
    name: str  # as it appears in figure names
    drive: Drive


def sweep(ctx: Context, result: ScenarioResult, label: str, ours: Side, baseline: Side,
          mix: Callable[[int], list[RequestSpec]], target: float = 0.95,
          if_missed: str = "") -> dict[int, dict[str, list[LoadResult]]]:  # fmt: skip
    """Waves of max(2c, 6) requests over c workers for every c in the config; returns the runs per c and side.

    At least 6 requests per wave: on the twin a request takes a few hundred ms, the size of this machine's
    occasional stalls, and a 2-request wave at c=1 let one stall decide a repeat's ratio (seen: 0.33-4.5×)."""
    warm = mix(1)[:1]
    ours.drive(warm, 1)
    baseline.drive(warm, 1)
    runs: dict[int, dict[str, list[LoadResult]]] = {}
    for c in ctx.config.p1_concurrency:
        specs = mix(max(2 * c, 6))
        runs[c] = paired(ctx.config.repeats, {"ours": lambda specs=specs, c=c: ours.drive(specs, c),
                                              "baseline": lambda specs=specs, c=c: baseline.drive(specs, c)},
                         warmup=False)  # fmt: skip
        _report(ctx, result, f"{label}, c={c}", ours.name, baseline.name, runs[c], target, if_missed)
    _chart(ctx, result, label, ours.name, baseline.name, runs)
    return runs


def _report(ctx: Context, result: ScenarioResult, label: str, ours_name: str, base_name: str,
            runs: dict[str, list[LoadResult]], target: float, if_missed: str = "") -> None:  # fmt: skip
    ours, base = runs["ours"], runs["baseline"]
    ours_tps, base_tps = [r.tokens_per_s for r in ours], [r.tokens_per_s for r in base]
    ours_ttft, base_ttft = [r.median_ttft for r in ours], [r.median_ttft for r in base]
    result.check(Figure.of(f"{label}: tok/s {ours_name} / {base_name}", "×", ratios(ours_tps, base_tps)), at_least(target),
                 if_missed)
    result.check(Figure.of(f"{label}: TTFT {base_name} / {ours_name}", "×", ratios(base_ttft, ours_ttft)), at_least(target),
                 if_missed)
    result.add(Figure.of(f"{label}: output tok/s, {ours_name}", "tok/s", ours_tps),
               Figure.of(f"{label}: output tok/s, {base_name}", "tok/s", base_tps),
               Figure.of(f"{label}: median TTFT, {ours_name}", "s", ours_ttft),
               Figure.of(f"{label}: median TTFT, {base_name}", "s", base_ttft))  # fmt: skip
    if not all(r.work_as_asked for r in ours + base):
        result.notes.append(f"{label}: some requests did not produce exactly max_tokens tokens (ignore_eos not honoured)")
    if {tuple(sorted(r.prompt_tokens)) for r in ours} != {tuple(sorted(r.prompt_tokens)) for r in base}:
        prompts = f"{sorted(ours[0].prompt_tokens)} vs {sorted(base[0].prompt_tokens)}"
        result.notes.append(f"{label}: prompt token counts differ between the sides ({prompts}): not like for like")
    ctx.log(f"{result.id} {label}: {ours_name} {statistics.median(ours_tps):.1f} tok/s vs "
            f"{base_name} {statistics.median(base_tps):.1f} tok/s")  # fmt: skip


def _chart(ctx: Context, result: ScenarioResult, label: str, ours_name: str, base_name: str,
           runs: dict[int, dict[str, list[LoadResult]]]) -> None:  # fmt: skip
    if ctx.chart_dir is None or len(runs) < 2:
        return
    xs = sorted(runs)
    lines = [charts.Series(name, xs, [Figure.of(name, "tok/s", [r.tokens_per_s for r in runs[c][key]]) for c in xs])
             for name, key in ((ours_name, "ours"), (base_name, "baseline"))]  # fmt: skip
    slug = f"{result.id.lower()}_" + "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_") + ".png"
    path = charts.line_chart(ctx.chart_dir / slug, f"{result.id} output tok/s vs concurrency ({label})",
                             "concurrent clients", "output tok/s", lines)  # fmt: skip
    if path:
        result.charts.append(path)
    else:
        result.notes.append("chart skipped: matplotlib is not installed (pip install -e .[bench])")
