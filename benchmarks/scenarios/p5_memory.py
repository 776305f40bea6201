"""P5: resident memory of the full-size 1B architecture loaded by the Transformers engine in bf16, 8-bit and 4-bit,
each in a fresh interpreter (`benchmarks.memory_worker`), against the theoretical footprint (`arch.footprint`).

Measured = RSS after load with every weight page read once (so lazily mapped weights would count), minus RSS of the
same interpreter before the load with the engine's libraries (torch, transformers, bitsandbytes, and zentorch where
the engine multiplies on ZenDNN) already imported: the model's own memory. RSS right after load and the libraries'
share are reported too. The anonymous part (RssAnon, minus the bare interpreter's) separates memory the engine
allocated from checkpoint pages that are still mapped; library imports are reported apart.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import arch, models
from benchmarks.config import BENCH_DIR
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context
from benchmarks.stats import Figure, within

ID, TITLE = "P5", "Resident memory of the full-size 1B arch: bf16, 8-bit, 4-bit"
BASELINE = ("theoretical footprint (CPU's default kernels): decoder linears at 16 bit / int8 + bf16 row scales / "
            "int4 + bf16 scale and zero per 64 inputs of a row; embeddings, lm_head, norms, biases, vision tower and "
            "projector at bf16")  # fmt: skip
MIB = 1024**2


def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult(ID, TITLE, BASELINE)
    model = models.full_size(ctx.work_dir)
    config = model.config()
    for quantization in ctx.config.p5_quantizations:
        theory = arch.footprint(config, quantization)
        samples = [_measure(model, quantization) for _ in range(ctx.config.p5_repeats)]
        label = {"none": "bf16"}.get(quantization, quantization)
        resident = [(s["paged_in"] - s["libraries_imported"]) / MIB for s in samples]
        result.check(Figure.of(f"{label}: resident / theoretical", "×", [r / (theory["total"] / MIB) for r in resident]),
                     within(0.10))  # fmt: skip
        result.add(
            Figure.of(f"{label}: theoretical footprint", "MiB", [theory["total"] / MIB]),
            Figure.of(f"{label}: resident (weights paged in) − libraries imported", "MiB", resident),
            Figure.of(f"{label}: of which anonymous", "MiB",
                      [(s["paged_in_anon"] - s["bare_torch_anon"]) / MIB for s in samples]),
            Figure.of(f"{label}: of which file-backed (checkpoint pages still mapped)", "MiB",
                      [(s["paged_in"] - s["paged_in_anon"] - s["bare_torch"] + s["bare_torch_anon"]) / MIB
                       for s in samples]),
            Figure.of(f"{label}: RSS right after load − bare torch", "MiB", [(s["loaded"] - s["bare_torch"]) / MIB for s in samples]),
            Figure.of(f"{label}: library imports (transformers, bitsandbytes)", "MiB",
                      [(s["libraries_imported"] - s["bare_torch"]) / MIB for s in samples]),
            Figure.of(f"{label}: peak RSS during load", "MiB", [s["peak"] / MIB for s in samples]),
            Figure.of(f"{label}: tensor bytes held by torch", "MiB", [s["tensor_bytes"] / MIB for s in samples]),
        )  # fmt: skip
        parts = ", ".join(f"{k} {v / MIB:,.0f} MiB" for k, v in theory.items() if k != "total")
        result.notes.append(f"{label} theory: {parts}")
        ctx.log(f"P5 {label}: resident {resident[0]:,.0f} MiB vs theoretical {theory['total'] / MIB:,.0f} MiB")
    on_disk = sum(f.stat().st_size for f in model.path.glob("*.safetensors")) / MIB
    result.notes.append(f"the checkpoint's safetensors files hold {on_disk:,.0f} MiB: a file-backed part near that "
                        "size means the whole checkpoint stays mapped and resident, including 16-bit weights that "
                        "quantization replaced (clean pages the kernel may reclaim, but counted in RSS and in a "
                        "container's memory)")  # fmt: skip
    result.notes.append("the engine's KV cache grows on demand (no preallocation), so it is not part of a loaded "
                        "model's footprint; bitsandbytes' nested absmax quantization stores less than the fp32 "
                        "absmax the theory counts (~1% of the 4-bit total)")  # fmt: skip
    return result


def _measure(model: models.PreparedModel, quantization: str) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_worker", str(model.path), quantization],
        capture_output=True, text=True, timeout=1800, check=False, cwd=str(BENCH_DIR.parent),
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"memory worker ({quantization}) failed: {completed.stderr[-1500:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])
