"""P7 (GPU only): P4's comparison — the vLLM engine through vlserve against vLLM's own OpenAI server — on the
full-size InternVL2.5-8B architecture (InternLM2 backbone, random weights, ~16 GB) on one CUDA GPU.

Run it with `benchmarks/gpu_p7.sh` on a GPU machine (≤ 8 min: writing the 8B twin, two servers side by side on one
GPU at 0.42 memory utilisation each, enforce_eager on both to keep start-up short, c=1 and c=8, 1-tile image
(448×448) requests with 128 output tokens, 2 repeats). Anywhere without a GPU it is skipped with that reason.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

from benchmarks import models
from benchmarks.results import ScenarioResult, skipped
from benchmarks.scenarios import Context
from benchmarks.scenarios.p4_vllm import (
    VllmSetup,
    compare,
    for_vllm,
    one_tile_mix,
    vllm_usable,
)

ID, TITLE = "P7", "GPU: vLLM engine through vlserve vs vLLM's own server, full-size 8B arch"
BASELINE = "vLLM's OpenAI server, same folder and settings, same GPU"
IF_MISSED = (
    "both servers share one GPU and run the same vLLM engine code, so a gap is front-end cost or noise. The lent GPU "
    "machine allows one short run per session: 2 repeats of 6-16 requests lasting ~3 s each, and per-repeat ratios "
    "spread 0.76-1.10x across the checks of one run; more repeats would say whether a c=8 gap of a few percent "
    "is real."
)
ARCHITECTURE, MAX_TOKENS = "InternVL2_5-8B", 128
GPU = VllmSetup(
    options={"dtype": "bfloat16", "max_model_len": 8192, "max_num_seqs": 16, "gpu_memory_utilization": 0.42,
             "enforce_eager": True, "n_gpu": 1},
    flags=["--dtype", "bfloat16", "--max-model-len", "8192", "--max-num-seqs", "16", "--gpu-memory-utilization",
           "0.42", "--enforce-eager"],
    env={"VLLM_NO_USAGE_STATS": "1"},
)  # fmt: skip


def run(ctx: Context) -> ScenarioResult:
    python = ctx.config.vllm_python
    if not cuda_visible(python):
        return skipped(ID, TITLE, BASELINE, "GPU only: no CUDA GPU is visible here; run benchmarks/gpu_p7.sh on a "
                                            "machine with one (the last GPU run's figures: "
                                            "benchmarks/RESULTS-P7.md)")  # fmt: skip
    usable, reason = vllm_usable(python)
    if not usable:
        return skipped(ID, TITLE, BASELINE, reason)
    model = models.prepare(ctx.work_dir, full_size=True, architecture=ARCHITECTURE)
    short = replace(ctx, config=replace(ctx.config, p1_concurrency=(1, 8), repeats=min(ctx.config.repeats, 2)))
    result = ScenarioResult(ID, TITLE, BASELINE)
    compare(short, result, "8B full-size, 1-tile image", model,
            lambda n: for_vllm(one_tile_mix(n, MAX_TOKENS)), GPU, IF_MISSED)  # fmt: skip
    result.notes.append(f"settings {GPU.options}; {MAX_TOKENS} output tokens per request")
    return result


def cuda_visible(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                              capture_output=True, timeout=120, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
