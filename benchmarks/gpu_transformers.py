"""GPU figures of the Transformers engine (benchmarks/gpu_check.sh runs it on a CUDA machine): the full-size 1B
architecture (random weights) on one GPU in bf16.

* batch-1 decode tok/s against the GPU's memory-bandwidth bound (bytes one decode step reads / measured read
  bandwidth), as B1 does on the CPU;
* the P2 workload (8 concurrent requests, one 1-tile image + 256 output tokens each): the engine's continuous
  batching against one HF `generate` per request in 8 threads, same converted model, same GPU.

    python -m benchmarks.gpu_transformers OUT_DIR [--repeats N] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks import arch, models
from benchmarks.config import DEFAULT_WORK
from benchmarks.inprocess import InProcessEngine
from benchmarks.load import run_engine
from benchmarks.scenarios import bounds
from benchmarks.scenarios.p2_batching import NaiveGenerate
from benchmarks.workload import image_mix, text_mix

GIB = 1024**3


def gpu_read_bandwidth(gib: float = 4.0, calls: int = 10) -> float:
    """Bytes/s of summing a float32 tensor on the GPU (best of `calls`, timed with synchronisation)."""
    import torch

    data = torch.ones(int(gib * GIB) // 4, dtype=torch.float32, device="cuda")
    data.sum()
    best = float("inf")
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        data.sum()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    del data
    torch.cuda.empty_cache()
    return gib * GIB / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--dry-run", action="store_true", help="the 1B twin on the CPU, short outputs (checks the script)")
    args = parser.parse_args()
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    device, tokens = ("cpu", 16) if args.dry_run else ("cuda", 256)
    model = models.twin(args.work) if args.dry_run else models.full_size(args.work)
    figures: dict[str, list] = {"device": [torch.cuda.get_device_name(0) if device == "cuda" else "cpu"]}
    with InProcessEngine(model, device=device) as engine:
        run_engine(engine, text_mix(1, 8), 1)  # warm-up
        bandwidth = gpu_read_bandwidth() if device == "cuda" else bounds.read_bandwidth()
        decode = []
        for _ in range(args.repeats):
            timing = run_engine(engine, text_mix(1, tokens // 2), 1).requests[0]
            decode.append(1 / timing.inter_token_s)
        per_token = arch.decode_bytes_per_token(model.config(), timing.prompt_tokens + tokens // 4)
        figures |= {"read bandwidth GB/s": [bandwidth / 1e9], "batch-1 decode tok/s": decode,
                    "bandwidth bound tok/s": [bandwidth / per_token],
                    "decode / bound": [d * per_token / bandwidth for d in decode]}  # fmt: skip
        print(f"B1 on GPU: {statistics.median(decode):.1f} tok/s, bound {bandwidth / per_token:.0f} tok/s", flush=True)
        specs = image_mix(8, tokens, max_tiles=1)
        with NaiveGenerate(model.path, threads=8, device=device) as naive:
            naive.run(image_mix(2, 4, max_tiles=1))
            run_engine(engine, image_mix(2, 4, max_tiles=1), 2)
            for _ in range(args.repeats):
                ours, theirs = run_engine(engine, specs, 8), naive.run(specs)
                figures.setdefault("P2 engine tok/s", []).append(ours.tokens_per_s)
                figures.setdefault("P2 naive threads tok/s", []).append(theirs.tokens_per_s)
                figures.setdefault("P2 engine / naive", []).append(ours.tokens_per_s / theirs.tokens_per_s)
                figures.setdefault("P2 engine median TTFT s", []).append(ours.median_ttft)
                figures.setdefault("P2 naive median TTFT s", []).append(theirs.median_ttft)
                print(f"P2 on GPU: engine {ours.tokens_per_s:.0f} tok/s, naive {theirs.tokens_per_s:.0f} tok/s", flush=True)
    (args.out / "gpu-transformers.json").write_text(json.dumps(figures, indent=1))
    lines = ["| figure | values |", "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{v:.4g}' if isinstance(v, float) else str(v) for v in vs)} |" for k, vs in figures.items()]
    (args.out / "gpu-transformers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
