"""Session-scoped architecture twins and loaded Transformers engines: each twin is written once, each
(architecture, quantization, dtype) engine loaded once per session."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio

from vlserve.registry import ResolvedSpec
from vlserve.registry.store import builtin_families


def resolved_for(architecture: str, quantization: str = "none") -> ResolvedSpec:
    for family in builtin_families().values():
        for spec in family.model_specs:
            if spec.architecture == architecture:
                return ResolvedSpec(family, spec, "Transformers", quantization)
    raise LookupError(architecture)


@pytest.fixture(scope="session")
def resolve_spec():
    return resolved_for


@pytest.fixture(scope="session")
def twin_dir(tmp_path_factory):
    written: dict[str, Path] = {}

    def make(architecture: str) -> Path:
        if architecture not in written:
            from vlserve.families.internvl2_5.twin import write_twin

            out = tmp_path_factory.mktemp(architecture.replace(".", "_"))
            write_twin(architecture, out)
            written[architecture] = out
        return written[architecture]

    return make


@pytest.fixture(scope="session")
def engine_for(twin_dir):
    """A loaded engine per (architecture, quantization, options); unloaded at the end of the session."""
    from vlserve.engines import get_factory

    engines: dict[tuple, object] = {}

    # VLSERVE_TEST_DEVICE=cuda runs these engines on a GPU (benchmarks/gpu_check.sh does, on a GPU machine)
    device = os.environ.get("VLSERVE_TEST_DEVICE", "cpu")

    def make(architecture: str, quantization: str = "none", **options):
        key = (architecture, quantization, tuple(sorted(options.items())))
        if key not in engines:
            engine = get_factory("Transformers").create(
                resolved_for(architecture, quantization), twin_dir(architecture),
                {"dtype": "float32", "device": device, **options},
            )  # fmt: skip
            _run_in_thread(engine.load())
            engines[key] = engine
        return engines[key]

    yield make
    for engine in engines.values():
        _run_in_thread(engine.unload())


def _run_in_thread(coroutine):
    """Run a coroutine to completion from sync code, even while the test's event loop is running."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_pool():
    """The one started vLLM engine at a time (conftest_vllm.POOL), closed at the end of the session."""
    from conftest_vllm import POOL

    yield POOL
    await POOL.close()
