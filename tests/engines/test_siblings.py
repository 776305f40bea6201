"""The sibling families, InternVL2.5-MPO and InternVL3, are registry data served by the internvl2_5 implementation:
every spec names a reference checkpoint, whose twin loads and answers an image request on each engine the registry
allows for that spec (the Transformers engine and vLLM, unquantized or AWQ Int4).

MPO's specs name the InternVL2.5 checkpoints of their size (same architecture, other weights), which
test_transformers_engine already loads one by one on the Transformers engine; here they load on vLLM."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_vllm import vllm_test
from PIL import Image

from vlserve.engines import get_factory
from vlserve.engines.base import GenerateRequest, SamplingParams
from vlserve.messages import ChatMessage, ImagePart, TextPart
from vlserve.registry.store import builtin_families

SIBLINGS = ("InternVL2.5-MPO", "InternVL3")


def served(engine: str) -> list[tuple[str, str]]:
    """(architecture, quantization) of every sibling spec this engine serves, each once."""
    cases = {(spec.architecture, quantization)
             for name in SIBLINGS for spec in builtin_families()[name].model_specs
             for quantization in spec.engines.get(engine, ()) if quantization in ("none", "Int4")}  # fmt: skip
    return sorted(cases)


ASK = (ChatMessage("user", (
    ImagePart(Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)), 2),
    TextPart("What is in the image?"))),)  # fmt: skip


async def answer(engine) -> tuple[int, int]:
    last = None
    async for delta in engine.generate(GenerateRequest("r", ASK, SamplingParams(max_tokens=3, ignore_eos=True))):
        last = delta
    return last.prompt_tokens, last.completion_tokens


def test_every_sibling_spec_names_a_reference_checkpoint():
    from vlserve.families.internvl2_5.reference import architectures

    for name in SIBLINGS:
        family = builtin_families()[name]
        assert family.model_family == "internvl2_5" and family.sources
        assert all(spec.architecture in architectures() for spec in family.model_specs)
    assert len(served("vLLM")) == 24 and all(a.startswith("InternVL2_5-") for a, _ in served("vLLM")[:12])


@pytest.mark.parametrize("case", [c for c in served("Transformers") if not c[0].startswith("InternVL2_5-")], ids=str)
async def test_transformers_loads_and_answers(case, twin_dir, resolve_spec):
    architecture, quantization = case
    engine = get_factory("Transformers").create(resolve_spec(architecture, quantization), twin_dir(architecture), {})
    await engine.load()
    try:
        prompt_tokens, completion_tokens = await answer(engine)
        assert prompt_tokens > 256 and completion_tokens == 3  # a tile of image tokens and the question
    finally:
        await engine.unload()


@pytest.mark.parametrize("case", served("vLLM"), ids=str)
@vllm_test
async def test_vllm_loads_and_answers(case, vllm_pool, twin_dir):
    architecture, _ = case
    engine = await vllm_pool.get(architecture, twin_dir(architecture))
    prompt_tokens, completion_tokens = await answer(engine)
    assert prompt_tokens > 256 and completion_tokens == 3
