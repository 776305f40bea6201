"""Micro-benchmarks the B1/B2 bounds divide by: memory read bandwidth and the bf16 matmul rate, both with torch at
its default thread count (what the engine uses), each on a thread that ends (see benchmarks/threads.py: the engine
measured beside them must not share the process with a lingering OpenMP team)."""

from __future__ import annotations

import time

from benchmarks.threads import on_own_thread

GIB = 1024**3
MATMUL_SHAPES = ((2048, 2048, 2048), (1025, 1024, 4096), (4096, 896, 4864))  # square; ViT MLP; LLM MLP prefill


def _read_bandwidth(gib: float = 1.0, calls: int = 5) -> float:
    """Bytes/s of summing a float32 tensor much larger than the caches (best of `calls`: the machine's ability)."""
    return max(_read_bandwidth_samples(gib, calls))


def _read_bandwidth_samples(gib: float = 1.0, calls: int = 5) -> list[float]:
    """Bytes/s of each of `calls` sums of a float32 tensor much larger than the caches."""
    import torch

    data = torch.ones(int(gib * GIB) // 4, dtype=torch.float32)
    data.sum()
    return [data.numel() * 4 / _seconds(lambda: data.sum()) for _ in range(calls)]


def _copy_bandwidth(gib: float = 0.5, calls: int = 5) -> float:
    """Bytes/s moved (read + write) by copying a float32 tensor into another."""
    import torch

    src = torch.ones(int(gib * GIB) // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_seconds(lambda: dst.copy_(src)) for _ in range(calls))
    return 2 * src.numel() * 4 / best


def _matmul_rate(calls: int = 3) -> tuple[float, str]:
    """FLOP/s of the fastest bf16 torch.matmul among MATMUL_SHAPES (best of `calls` each) and that shape."""
    import torch

    best_rate, best_shape = 0.0, ""
    with torch.inference_mode():
        for m, k, n in MATMUL_SHAPES:
            a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
            torch.matmul(a, b)
            seconds = min(_seconds(lambda a=a, b=b: torch.matmul(a, b)) for _ in range(calls))
            rate = 2 * m * k * n / seconds
            if rate > best_rate:
                best_rate, best_shape = rate, f"{m}×{k} @ {k}×{n}"
    return best_rate, best_shape


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_bandwidth(gib: float = 1.0, calls: int = 5) -> float:
    return on_own_thread(_read_bandwidth, gib, calls)


def read_bandwidth_samples(gib: float = 1.0, calls: int = 5) -> list[float]:
    return on_own_thread(_read_bandwidth_samples, gib, calls)


def copy_bandwidth(gib: float = 0.5, calls: int = 5) -> float:
    return on_own_thread(_copy_bandwidth, gib, calls)


def matmul_rate(calls: int = 3) -> tuple[float, str]:
    return on_own_thread(_matmul_rate, calls)
