"""Fidelity across engines: the same image + prompt to the Transformers engine and the vLLM engine must give the same
greedy tokens. This is the project's proof that checkpoint conversion (Transformers loads converted weights, vLLM
the original names), image preprocessing (our tiling vs vLLM's InternVL processor), the prompt template and the
tokenizers agree, for both LLM backbones (Qwen2, InternLM2), both vision styles (InternViT-300M, -6B) and AWQ.

Twins have random weights, so their next-token distributions are nearly flat (top logprobs ≈ -10.5, a few
thousandths apart): only fp32 on both sides is exact enough for token equality over 16+ tokens, and the fp32 twins
must agree on all of them. vLLM's CPU AWQ kernel takes bf16/fp16 activations only; in bf16 the two top tokens of the
AWQ twin are 0.004 nats apart in fp32 and tie in bf16, so greedy tokens may legitimately differ. The AWQ twin is
compared by its first-step distribution instead: vLLM's top-8 logprobs against the converted model's (the model the
Transformers engine loads), within bf16 noise, with a control showing that a mirrored image moves them further.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest_vllm import MARKS
from PIL import Image

from vlserve.engines.base import GenerateRequest, SamplingParams
from vlserve.messages import ChatMessage, ImagePart, TextPart

pytestmark = MARKS

TOKENS = 24
# Ordered so the session ends on 1B, which test_vllm_engine.py starts with (one engine start fewer).
AWQ = "InternVL2_5-8B-AWQ"
FP32_TWINS = ["InternVL2_5-26B", "InternVL2_5-2B", "InternVL2_5-1B", "InternVL3-1B"]  # InternLM2 + 6B-style ViT,
# InternLM2, Qwen2, Qwen2.5 with dynamic rope (InternVL3)
GREEDY = SamplingParams(max_tokens=TOKENS, temperature=0.0, ignore_eos=True)


def image(seed: int, size: tuple[int, int]) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def conversations() -> dict[str, tuple[ChatMessage, ...]]:
    """One image with the default tile budget (a 3x2 grid + thumbnail), and two images + system message + history."""
    return {
        "one image, 7 tiles": (ChatMessage("user", (ImagePart(image(0, (500, 300))), TextPart("Describe the image."))),),
        "two images, history": (
            ChatMessage.text("system", "You are a careful assistant."),
            ChatMessage("user", (ImagePart(image(1, (640, 480)), 2), ImagePart(image(2, (300, 600)), 2),
                                 TextPart("What differs?"))),  # fmt: skip
            ChatMessage.text("assistant", "The colours."),
            ChatMessage.text("user", "Anything else? 中文也可以。"),
        ),
    }


async def tokens(engine, messages, request_id: str) -> tuple[list[int], int]:
    ids, prompt_tokens = [], 0
    async for delta in engine.generate(GenerateRequest(request_id, messages, GREEDY)):
        ids += delta.token_ids
        prompt_tokens = delta.prompt_tokens or prompt_tokens
    return ids, prompt_tokens


def first_step_logprobs(model_dir, messages, dtype):
    """log-softmax of the next-token logits of the converted model (what the Transformers engine loads)."""
    import torch

    from vlserve.families.internvl2_5 import loader

    model = loader.load_model(model_dir, dtype=dtype)
    encoded = loader.encode(loader.load_tokenizer(model_dir), messages)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([encoded.input_ids]), pixel_values=encoded.pixel_values.to(dtype))
    return torch.log_softmax(out.logits[0, -1].float(), dim=-1)


async def vllm_first_step(engine, messages) -> dict[int, float]:
    from vllm import SamplingParams as VllmSampling

    prompt = engine.family.encode(engine.tokenizer, messages)
    params = VllmSampling(max_tokens=1, temperature=0.0, logprobs=8)
    async for output in engine.llm.generate(prompt.as_vllm_prompt(), params, "first-step"):
        last = output
    return {token: entry.logprob for token, entry in last.outputs[0].logprobs[0].items()}


async def test_awq_twin_first_step_distribution_matches_in_bf16(vllm_pool, twin_dir):
    import torch

    messages = conversations()["one image, 7 tiles"]
    got = await vllm_first_step(await vllm_pool.get(AWQ, twin_dir(AWQ), "bfloat16"), messages)
    reference = first_step_logprobs(twin_dir(AWQ), messages, torch.bfloat16)
    mirrored = (ChatMessage("user", (ImagePart(messages[0].content[0].image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                                     messages[0].content[1])),)  # fmt: skip
    control = first_step_logprobs(twin_dir(AWQ), mirrored, torch.bfloat16)
    tokens = list(got)
    assert set(tokens) <= set(reference.topk(12).indices.tolist())
    diff = max(abs(got[t] - reference[t].item()) for t in tokens)
    moved = max(abs(control[t].item() - reference[t].item()) for t in tokens)
    print(f"\n{AWQ} bf16 first step: max |Δ logprob| vLLM vs converted {diff:.4f}, mirrored image {moved:.4f}")
    assert diff <= 0.005 < moved


@pytest.mark.parametrize("architecture", FP32_TWINS)
async def test_transformers_and_vllm_give_the_same_greedy_tokens(vllm_pool, engine_for, twin_dir, architecture):
    reference = engine_for(architecture, "none", dtype="float32")
    vllm = await vllm_pool.get(architecture, twin_dir(architecture), "float32")
    for name, messages in conversations().items():
        expected, hf_prompt = await tokens(reference, messages, f"hf-{name}")
        got, vllm_prompt = await tokens(vllm, messages, f"vllm-{name}")
        assert vllm_prompt == hf_prompt, f"{name}: prompt lengths differ"
        assert len(got) == len(expected) == TOKENS
        agree = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), TOKENS)
        print(f"\n{architecture} float32 {name}: {agree}/{TOKENS} tokens agree")
        assert agree == TOKENS, f"{name}: tokens differ from position {agree}: {expected} vs {got}"


async def test_raw_prompts_give_the_same_greedy_tokens(vllm_pool, engine_for, twin_dir):
    """/v1/completions' raw text (no template, no images) through both engines: the same tokens in, the same
    greedy tokens out (1B, which the test above ends on: no engine restart)."""
    architecture = "InternVL2_5-1B"
    reference = engine_for(architecture, "none", dtype="float32")
    vllm = await vllm_pool.get(architecture, twin_dir(architecture), "float32")
    for i, text in enumerate(["The capital of France is", "def add(a, b):\n    return 中文"]):
        results = []
        for name, engine in (("hf", reference), ("vllm", vllm)):
            ids, prompt_tokens = [], 0
            async for delta in engine.generate(GenerateRequest(f"raw-{name}-{i}", (), GREEDY, prompt=text)):
                ids += delta.token_ids
                prompt_tokens = delta.prompt_tokens or prompt_tokens
            results.append((ids, prompt_tokens))
        assert results[0] == results[1] and len(results[0][0]) == TOKENS


async def test_vllm_logprobs_match_the_transformers_engine(vllm_pool, engine_for, twin_dir):
    """The same greedy tokens carry the same logprobs and top-3 alternatives on both engines (float32 1B twin)."""
    architecture = "InternVL2_5-1B"
    messages = conversations()["one image, 7 tiles"]
    sampling = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=3)
    entries = []
    for engine in (engine_for(architecture, "none", dtype="float32"),
                   await vllm_pool.get(architecture, twin_dir(architecture), "float32")):  # fmt: skip
        got = []
        async for delta in engine.generate(GenerateRequest(f"lp-{engine.name}", messages, sampling)):
            got += delta.logprobs
        entries.append(got)
    hf, vllm = entries
    assert [e.token_id for e in hf] == [e.token_id for e in vllm] and len(hf) == 6
    for a, b in zip(hf, vllm, strict=True):
        assert abs(a.logprob - b.logprob) < 1e-3 and a.token == b.token
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        assert max(abs(x - y) for (_, _, x), (_, _, y) in zip(a.top, b.top, strict=True)) < 1e-3
