"""Shared by the vLLM engine tests: skip without vLLM, and a pool that keeps ONE started vLLM engine at a time
(≈3.7 GiB process tree each on CPU), started once per (twin, dtype) per session as long as tests ask for the
same one in a row (session-scoped parametrized fixtures make pytest group them that way).

AsyncLLM's background tasks belong to the event loop that first uses it, so every vLLM test runs on the session
loop (`LOOP`)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import pytest

from vlserve.registry import ResolvedSpec
from vlserve.registry.store import builtin_families

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
SKIP_REASON = "vLLM is not installed (scripts/install-vllm.sh installs it)"
MARKS = [
    pytest.mark.vllm,
    pytest.mark.skipif(not HAVE_VLLM, reason=SKIP_REASON),
    pytest.mark.asyncio(loop_scope="session"),
]
# small and fast for CPU tests: eager (no torch.compile), 1 GiB KV cache
TEST_OPTIONS = {"enforce_eager": True, "cpu_kvcache_space_gib": 1, "max_num_seqs": 8}


def resolved(architecture: str, engine: str = "vLLM") -> ResolvedSpec:
    quantization = "Int4" if architecture.endswith("-AWQ") else "none"
    for family in builtin_families().values():
        for spec in family.model_specs:
            if spec.architecture == architecture:
                return ResolvedSpec(family, spec, engine, quantization)
    raise LookupError(architecture)


def default_dtype(architecture: str) -> str:
    """fp32 where vLLM's CPU kernels allow it (exact comparisons); AWQ on CPU runs bf16 activations only."""
    return "bfloat16" if architecture.endswith("-AWQ") else "float32"


class VllmPool:
    """At most one loaded vLLM engine; asking for another unloads the current one first."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.engine = None
        self.load_seconds: dict[tuple, float] = {}
        os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vlserve-vllm-cache-"))

    async def get(self, architecture: str, model_dir: Path, dtype: str | None = None, **options):
        from vlserve.engines import get_factory

        key = (architecture, dtype or default_dtype(architecture), tuple(sorted(options.items())))
        if key != self.key:
            if architecture.endswith("-AWQ"):
                from vlserve.engines.vllm_engine.engine import awq_unavailable

                if why_not := awq_unavailable():  # the engine refuses it (test_vllm_engine checks how)
                    pytest.skip(f"vLLM AWQ: {why_not}")
            await self.close()
            engine = get_factory("vLLM").create(
                resolved(architecture), model_dir, {**TEST_OPTIONS, "dtype": key[1], **options}
            )
            started = time.monotonic()
            await engine.load()
            self.load_seconds[key] = time.monotonic() - started
            print(f"\nvLLM engine {key} loaded in {self.load_seconds[key]:.1f} s")
            self.key, self.engine = key, engine
        return self.engine

    async def close(self) -> None:
        engine, self.engine, self.key = self.engine, None, None
        if engine is not None:
            await engine.unload()


POOL = VllmPool()


def vllm_test(test):
    """Marks a test that starts vLLM: marked `vllm`, skipped without vLLM, run on the session event loop."""
    for mark in MARKS:
        test = mark(test)
    return test
