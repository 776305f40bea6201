"""What one run does: the full profile (the figures RESULTS.md reports) and the quick one (every CPU scenario at
reduced repeats, output lengths and sizes, in minutes). Scenarios read only this object, so a test can shrink a
run further (tiny images, twins only) without touching scenario code."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORK = BENCH_DIR / ".work"
DEFAULT_RESULTS = BENCH_DIR / "RESULTS.md"


@dataclass(frozen=True)
class RunConfig:
    quick: bool = False
    repeats: int = 3  # measured repeats per side; one warm-up run per side comes before them
    work_dir: Path = DEFAULT_WORK
    results_path: Path | None = DEFAULT_RESULTS  # None: print only, write nothing
    only: tuple[str, ...] = ()  # scenario ids; empty: all
    merge: bool = False  # keep the other scenarios' results from the last run of this profile (results-<profile>.json)
    # P1: serving overhead
    p1_concurrency: tuple[int, ...] = (1, 8)  # the two levels (P1 and P4)
    p1_max_tokens: int = 64
    p1_full_size: bool = True  # the full-size 1B arch (text prompts) next to the twin (1-tile image prompts)
    # P2: continuous batching vs naive threads
    p2_requests: int = 8
    p2_max_tokens: int = 256
    p2_full_size: bool = True
    p2_thirteen_tile: bool = True
    # P3: tiling
    p3_sizes: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080), (3840, 2160))
    p3_repeats: int = 15
    # P5: memory
    p5_quantizations: tuple[str, ...] = ("none", "8-bit", "4-bit")
    p5_repeats: int = 2
    # P6: launch overhead
    p6_repeats: int = 5
    # B1/B2: bounds on the full-size 1B arch
    b1_max_tokens: int = 64
    b2_max_tiles: tuple[int, ...] = (1, 6, 12)  # TTFT vs tiles (1, 7, 13 tiles); the last one is checked
    # P9-P11: images paid once (full-size 1B, 13-tile images); the quick profile runs the twin
    p9_full_size: bool = True
    # P12: structured output (full-size 1B): objects in the schema's list, concurrency levels, mask-timing walks
    p12_items: int = 3
    p12_concurrency: tuple[int, ...] = (1, 8)
    p12_mask_walks: int = 20
    p12_repeats: int = 6  # pairs of waves: a wave's pace drifts by ±15% on this machine, the mask costs a few %
    # P4/P7: vLLM
    p4_full_size: bool = True  # the full-size 1B arch with text prompts next to the twin (1-tile images)
    # no torch.compile on either side: a cold compile takes minutes per server start on 2 cores, and both sides get
    # the same setting (P7 on a GPU compiles)
    p4_enforce_eager: bool = True
    vllm_python: str = field(default_factory=lambda: os.environ.get("VLSERVE_BENCH_VLLM_PYTHON", sys.executable))

    @property
    def profile(self) -> str:
        return "quick" if self.quick else "full"


def quick_config(**overrides) -> RunConfig:
    """Every CPU scenario, reduced: 1 repeat (P3 5), short outputs, P2 and P4 on the twin, B2 at 1 tile, vLLM eager."""
    base = RunConfig(
        quick=True, repeats=1, p1_concurrency=(1, 8), p1_max_tokens=16, p2_max_tokens=32, p2_full_size=False,
        p3_repeats=5, p5_repeats=1, p6_repeats=2, b1_max_tokens=12, b2_max_tiles=(1,),
        p4_full_size=False, p4_enforce_eager=True, p9_full_size=False, p12_items=1, p12_mask_walks=5,
        p12_repeats=1,
    )
    return replace(base, **overrides)


def full_config(**overrides) -> RunConfig:
    return replace(RunConfig(), **overrides)
