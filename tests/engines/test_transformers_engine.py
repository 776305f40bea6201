"""The Transformers engine on architecture twins (tiny dims, real configs/tokenizers, random weights), CPU, through
the Engine API: loading all 12 architectures, prompts, sampling, stop rules, streaming, batching, quantization."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from vlserve.engines import get_factory
from vlserve.engines.base import Delta, GenerateRequest, SamplingParams
from vlserve.errors import InvalidRequest
from vlserve.messages import ChatMessage, ImagePart, TextPart, VideoPart

ALL_ARCHITECTURES = [
    "InternVL2_5-1B", "InternVL2_5-2B", "InternVL2_5-4B", "InternVL2_5-4B-AWQ", "InternVL2_5-8B",
    "InternVL2_5-8B-AWQ", "InternVL2_5-26B", "InternVL2_5-26B-AWQ", "InternVL2_5-38B", "InternVL2_5-38B-AWQ",
    "InternVL2_5-78B", "InternVL2_5-78B-AWQ",
]  # fmt: skip
DEEP = ["InternVL2_5-1B", "InternVL2_5-2B", "InternVL2_5-26B", "InternVL2_5-8B-AWQ"]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def ask(text: str, *images: Image.Image, max_tiles: int | None = 1) -> tuple[ChatMessage, ...]:
    parts = tuple(ImagePart(im, max_tiles) for im in images) + (TextPart(text),)
    return (ChatMessage("user", parts),)


async def collect(engine, request: GenerateRequest) -> dict[int, list[Delta]]:
    out: dict[int, list[Delta]] = {}
    async for delta in engine.generate(request):
        out.setdefault(delta.index, []).append(delta)
    return out


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def tokens_of(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


async def answer(engine, messages, sampling=GREEDY, request_id="r") -> list[Delta]:
    return (await collect(engine, GenerateRequest(request_id, messages, sampling)))[0]


# ---------------------------------------------------------------- every architecture


@pytest.mark.parametrize("architecture", ALL_ARCHITECTURES)
async def test_every_architecture_loads_and_answers_an_image(twin_dir, resolve_spec, architecture):
    """Loading checks every weight (none missing/unexpected); the model then answers an image question."""
    quantization = "Int4" if architecture.endswith("AWQ") else "none"
    engine = get_factory("Transformers").create(resolve_spec(architecture, quantization), twin_dir(architecture), {})
    info = await engine.load()
    try:
        assert (info.max_model_len, info.dtype, info.device) == (16384, "bfloat16", "cpu")
        deltas = await answer(engine, ask("What is in the image?", image(0)), SamplingParams(max_tokens=3))
        assert deltas[-1].finish_reason in ("stop", "length")
        assert deltas[-1].prompt_tokens > 256 and 1 <= deltas[-1].completion_tokens <= 3
    finally:
        await engine.unload()


# ---------------------------------------------------------------- prompts


def _expected_prompt_tokens(engine, messages, tiles: list[int]) -> int:
    """Text tokens + the <img></img> markers (prompt with 0 context tokens per image) + 256 per tile."""
    from vlserve.families.internvl2_5.prompt import render_conversation

    rendered = render_conversation(messages)
    assert rendered.tile_counts() == tiles
    bare = engine.tokenizer(rendered.expand([0] * len(tiles)), add_special_tokens=True)["input_ids"]
    return len(bare) + 256 * sum(tiles)


@pytest.mark.parametrize("architecture", DEEP)
async def test_prompt_tokens_count_text_markers_and_256_per_tile(engine_for, architecture):
    engine = engine_for(architecture)
    wide = image(1, (900, 300))  # 3x1 grid + thumbnail with max_tiles 6
    messages = ask("Describe.", wide, max_tiles=6)
    deltas = await answer(engine, messages, SamplingParams(max_tokens=1))
    assert deltas[-1].prompt_tokens == _expected_prompt_tokens(engine, messages, [4])
    encoded = engine.family.encode(engine.tokenizer, messages)
    assert encoded.input_ids.count(engine.model.config.image_token_id) == 4 * 256
    assert encoded.pixel_values.shape == (4, 3, 448, 448)
    if architecture in ("InternVL2_5-2B", "InternVL2_5-26B"):  # InternLM2 tokenizer adds <s>
        assert encoded.input_ids[0] == engine.tokenizer.bos_token_id == 1


async def test_system_message_replaces_the_default(engine_for):
    engine = engine_for("InternVL2_5-2B")
    own = (ChatMessage.text("system", "You are terse."),) + ask("Hi", image(2))
    text = engine.tokenizer.decode(engine.family.encode(engine.tokenizer, own).input_ids)
    assert "<|im_start|>system\nYou are terse.<|im_end|>" in text and "InternVL" not in text
    default = engine.tokenizer.decode(engine.family.encode(engine.tokenizer, ask("Hi", image(2))).input_ids)
    assert "书生·万象" in default
    deltas = await answer(engine, own, SamplingParams(max_tokens=2))
    assert deltas[-1].prompt_tokens == _expected_prompt_tokens(engine, own, [1])


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
async def test_multi_image_and_video_prompts(engine_for, architecture):
    engine = engine_for(architecture)
    two = ask("Compare.", image(3), image(4, (600, 300)), max_tiles=2)  # 1 tile, then 2 + thumbnail
    deltas = await answer(engine, two, SamplingParams(max_tokens=2))
    assert deltas[-1].prompt_tokens == _expected_prompt_tokens(engine, two, [1, 3])
    decoded = engine.tokenizer.decode(engine.family.encode(engine.tokenizer, two).input_ids)
    assert "Image-1: <img>" in decoded and "Image-2: <img>" in decoded
    video = (ChatMessage("user", (VideoPart(tuple(image(10 + i) for i in range(3))), TextPart("What happens?"))),)
    deltas = await answer(engine, video, SamplingParams(max_tokens=2))
    assert deltas[-1].prompt_tokens == _expected_prompt_tokens(engine, video, [1, 1, 1])
    decoded = engine.tokenizer.decode(engine.family.encode(engine.tokenizer, video).input_ids)
    assert all(f"Frame{i}: <img>" in decoded for i in (1, 2, 3))


# ---------------------------------------------------------------- sampling and stop rules


async def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(engine_for):
    engine = engine_for("InternVL2_5-1B")
    messages = ask("Tell a story.", image(5))
    seeded = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=123, ignore_eos=True)
    first = tokens_of(await answer(engine, messages, seeded, "s1"))
    again = tokens_of(await answer(engine, messages, seeded, "s2"))
    batch = await asyncio.gather(
        answer(engine, messages, seeded, "s3"),
        answer(engine, ask("Other", image(6)), SamplingParams(max_tokens=10, temperature=1.0, seed=7), "s4"),
        answer(engine, messages, SamplingParams(max_tokens=10, temperature=1.0, seed=124, ignore_eos=True), "s5"),
    )
    assert first == again == tokens_of(batch[0])
    assert tokens_of(batch[2]) != first


async def test_penalties_and_n_choices(engine_for):
    engine = engine_for("InternVL2_5-1B")
    sampling = SamplingParams(max_tokens=6, temperature=0.8, n=3, seed=1, repetition_penalty=1.3,
                              presence_penalty=0.5, frequency_penalty=0.5, ignore_eos=True)  # fmt: skip
    out = await collect(engine, GenerateRequest("n", ask("Hi", image(7)), sampling))
    assert sorted(out) == [0, 1, 2]
    assert all(ds[-1].finish_reason == "length" and ds[-1].completion_tokens == 6 for ds in out.values())
    greedy = SamplingParams(max_tokens=12, temperature=0.0, repetition_penalty=10.0, ignore_eos=True)
    tokens = tokens_of(await answer(engine, ask("Hi", image(7)), greedy))
    assert len(set(tokens)) == len(tokens)  # a huge repetition penalty never repeats a token


async def test_stop_string_truncates_and_finishes_with_stop(engine_for):
    engine = engine_for("InternVL2_5-1B")
    messages = ask("Say something.", image(8))
    plain = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    full = text_of(await answer(engine, messages, plain))
    stop = next(full[i : i + 3] for i in range(4, len(full) - 3) if full[i : i + 3].strip() and full.find(full[i : i + 3]) == i)
    deltas = await answer(engine, messages, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop=(stop,)))
    assert text_of(deltas) == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop"


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
async def test_streamed_text_equals_the_decoded_output(engine_for, architecture):
    engine = engine_for(architecture)
    deltas = await answer(engine, ask("Write.", image(9)), SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    assert len(deltas) == 30 and deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 30
    decoded = engine.tokenizer.decode(tokens_of(deltas), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert text_of(deltas) == decoded
    assert all(not d.text.endswith("\ufffd") for d in deltas[:-1])


def test_incremental_detokenizer_never_splits_a_utf8_character(engine_for):
    from vlserve.engines.transformers_engine.detok import IncrementalDetokenizer

    tokenizer = engine_for("InternVL2_5-1B").tokenizer
    text = "naïve 书生·万象 🤖 end"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, stop=("end",))
    pieces = [detok.add(t) for t in ids] + [detok.flush()]
    assert "".join(pieces) == "naïve 书生·万象 🤖 " and not any("\ufffd" in p for p in pieces)
    assert detok.stopped


async def test_stop_token_ends_generation_unless_ignore_eos(engine_for):
    engine = engine_for("InternVL2_5-1B")
    scheduler = engine.scheduler
    assert engine.tokenizer.convert_tokens_to_ids("<|im_end|>") in scheduler.stop_ids
    messages = ask("Hi", image(11))
    first = tokens_of(await answer(engine, messages, SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)))
    saved = scheduler.stop_ids
    scheduler.stop_ids = frozenset({first[1]})  # pretend the 2nd greedy token is an eos id
    try:
        stopped = await answer(engine, messages, SamplingParams(max_tokens=3, temperature=0.0))
        ignored = await answer(engine, messages, SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    finally:
        scheduler.stop_ids = saved
    assert stopped[-1].finish_reason == "stop" and stopped[-1].completion_tokens == 2
    assert tokens_of(stopped) == first[:1] and tokens_of(ignored) == first


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
async def test_batched_greedy_equals_unbatched(engine_for, architecture):
    """fp32: sequences of different lengths joining a running batch get exactly their solo tokens."""
    engine = engine_for(architecture)
    requests = [
        ask("Describe.", image(20)),
        ask("A much longer question about the picture, with many more words in it?", image(21, (700, 300)), max_tiles=3),
        (ChatMessage.text("user", "No image at all."),),
        ask("Two.", image(22), image(23)),
    ]
    sampling = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    solo = [tokens_of(await answer(engine, m, sampling, f"solo{i}")) for i, m in enumerate(requests)]
    steps_before = engine.scheduler.steps

    async def staggered(i, messages):
        await asyncio.sleep(0.05 * i)
        return tokens_of(await answer(engine, messages, sampling, f"batch{i}"))

    batched = await asyncio.gather(*(staggered(i, m) for i, m in enumerate(requests)))
    assert batched == solo
    assert engine.scheduler.steps - steps_before < 4 * 15  # decode steps were shared


async def test_abort_stops_decoding_and_frees_the_slot(engine_for):
    engine = engine_for("InternVL2_5-1B")
    request = GenerateRequest("long", ask("Go on.", image(12)), SamplingParams(max_tokens=500, ignore_eos=True))
    deltas = []
    async for delta in engine.generate(request):
        deltas.append(delta)
        if len(deltas) == 3:
            await engine.abort("long")
    assert deltas[-1].finish_reason == "abort" and deltas[-1].completion_tokens < 50
    gen = engine.generate(GenerateRequest("closed", request.messages, request.sampling))
    async for _ in gen:
        break
    await gen.aclose()  # a caller that goes away aborts its request
    for _ in range(100):
        if engine.scheduler.cache.active == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.scheduler.cache.active == 0 and not engine.scheduler.batch


async def test_a_request_failing_after_its_prefill_leaves_no_cache_slot_behind(engine_for, monkeypatch):
    """A failure between a request's prefill and its first token (here: its sampler) fails that request only; its
    K/V take no cache slot, so the next requests decode in a batch of the right size."""
    from vlserve.engines.transformers_engine import sampler as sampler_module
    from vlserve.errors import EngineError

    engine = engine_for("InternVL2_5-1B")
    real_create = sampler_module.SequenceSampler.create.__func__

    def create(cls, params, *args, **kwargs):
        if params.seed == 666:
            raise RuntimeError("sampler set-up failed")
        return real_create(cls, params, *args, **kwargs)

    monkeypatch.setattr(sampler_module.SequenceSampler, "create", classmethod(create))
    with pytest.raises(EngineError, match="sampler set-up failed"):
        await answer(engine, ask("Hi", image(17)), SamplingParams(max_tokens=4, temperature=0.7, seed=666))
    assert engine.scheduler.cache.active == 0
    alone = await answer(engine, ask("Hi", image(18)), GREEDY)
    together = await asyncio.gather(*(answer(engine, ask("Hi", image(18)), GREEDY, f"g{i}") for i in range(2)))
    assert all(tokens_of(d) == tokens_of(alone) for d in together) and len(tokens_of(alone)) == GREEDY.max_tokens


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
async def test_a_raw_prompt_is_its_own_tokens(engine_for, architecture):
    """GenerateRequest.prompt (/v1/completions): the text's tokens with the tokenizer's own BOS (InternLM2 has one,
    Qwen2 none), no template; a prompt of no tokens at all (empty text, no BOS) is refused."""
    from vlserve.engines.base import raw_prompt_ids

    engine = engine_for(architecture)
    deltas = (await collect(engine, GenerateRequest("raw", (), GREEDY, prompt="Hello there")))[0]
    expected = raw_prompt_ids(engine.tokenizer, "Hello there")
    assert deltas[-1].prompt_tokens == len(expected) and len(tokens_of(deltas)) >= 1
    has_bos = engine.tokenizer.bos_token_id is not None and architecture.endswith("2B")
    assert (expected[0] == engine.tokenizer.bos_token_id) == has_bos
    if not has_bos:
        with pytest.raises(InvalidRequest, match="empty"):
            await collect(engine, GenerateRequest("raw-empty", (), GREEDY, prompt=""))


async def test_logprobs_are_the_models_log_softmax(engine_for):
    """Each output token's logprob and its top alternatives equal log-softmax of the model's own logits at that
    step (teacher-forced forward over prompt + output, float32), greedy and sampled, batched with a request that
    asks for none."""
    import torch
    from transformers import DynamicCache

    engine = engine_for("InternVL2_5-1B")
    messages = ask("Describe.", image(25))
    asked = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=3)
    sampled = SamplingParams(max_tokens=6, temperature=1.0, seed=3, ignore_eos=True, logprobs=0)
    runs = await asyncio.gather(answer(engine, messages, asked, "lp-greedy"), answer(engine, messages, sampled, "lp-s"),
                                answer(engine, messages, GREEDY, "lp-none"))  # fmt: skip
    encoded = engine.family.encode(engine.tokenizer, messages)
    for deltas, top_k in ((runs[0], 3), (runs[1], 0)):
        output = tokens_of(deltas)
        entries = [e for d in deltas for e in d.logprobs]
        assert [e.token_id for e in entries] == output and all(len(e.top) == top_k for e in entries)
        ids = torch.tensor([encoded.input_ids + output[:-1]])
        with torch.inference_mode():
            logits = engine.model(input_ids=ids, pixel_values=encoded.pixel_values.to(engine.model.dtype),
                                  past_key_values=DynamicCache(config=engine.model.config.get_text_config())).logits
        expected = torch.log_softmax(logits[0, len(encoded.input_ids) - 1 :].float(), dim=-1)
        for step, entry in enumerate(entries):
            assert abs(entry.logprob - expected[step, entry.token_id].item()) < 1e-4
            assert entry.token == engine.tokenizer.decode([entry.token_id])
            if top_k:
                top = torch.topk(expected[step], top_k)
                assert [i for i, _, _ in entry.top] == top.indices.tolist()
                assert max(abs(a - b) for (_, _, a), b in zip(entry.top, top.values.tolist(), strict=True)) < 1e-4
                assert entry.top[0][0] == entry.token_id  # greedy
    assert all(not d.logprobs for d in runs[2])


# ---------------------------------------------------------------- quantization and options


@pytest.mark.parametrize("quantization", ["8-bit", "4-bit"])
async def test_bitsandbytes_quantization_loads_and_answers(engine_for, quantization):
    """bitsandbytes stays selectable on CPU (cpu_quant bitsandbytes; the GPU path); test_weight_only.py covers the
    CPU default."""
    import bitsandbytes as bnb

    engine = engine_for("InternVL2_5-1B", quantization, dtype="bfloat16", cpu_quant="bitsandbytes")
    layer = engine.model.model.language_model.layers[0]
    expected = bnb.nn.Linear8bitLt if quantization == "8-bit" else bnb.nn.Linear4bit
    assert isinstance(layer.self_attn.q_proj, expected) and isinstance(layer.mlp.down_proj, expected)
    from vlserve.engines.transformers_engine import cpu_linears
    from vlserve.engines.transformers_engine.float32_prefill import Float32PrefillLinear
    from vlserve.engines.transformers_engine.onednn import PackedLinear
    from vlserve.engines.transformers_engine.zendnn import ZenLinear

    sixteen_bit = (torch.nn.Linear, PackedLinear, ZenLinear, Float32PrefillLinear)
    assert type(engine.model.lm_head) in sixteen_bit  # head and vision stay 16-bit
    assert engine.info.extra["cpu_gemm"] == cpu_linears.pick(torch.bfloat16)
    deltas = await answer(engine, ask("Hi", image(13)), SamplingParams(max_tokens=4, ignore_eos=True))
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 4


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
async def test_awq_runs_on_int4_kernels_in_bfloat16(engine_for, dtype):
    """bfloat16 (the default): AWQ layers stay 4-bit on PyTorch's int4 kernels; float32: dequantized at load."""
    from vlserve.engines.transformers_engine.int4 import Int4Linear

    engine = engine_for("InternVL2_5-8B-AWQ", "Int4", dtype=dtype)
    layer = engine.model.model.language_model.layers[0]
    assert isinstance(layer.mlp.down_proj, Int4Linear) == (dtype == "bfloat16")
    deltas = await answer(engine, ask("Hi", image(16)), SamplingParams(max_tokens=4, ignore_eos=True))
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 4


def test_unknown_option_names_the_valid_ones(twin_dir, resolve_spec):
    with pytest.raises(InvalidRequest, match="valid options are dtype, device, n_gpu, max_batch_size"):
        get_factory("Transformers").create(resolve_spec("InternVL2_5-1B"), twin_dir("InternVL2_5-1B"), {"bogus": 1})
    with pytest.raises(InvalidRequest, match="dtype"):
        get_factory("Transformers").create(resolve_spec("InternVL2_5-1B"), twin_dir("InternVL2_5-1B"), {"dtype": "int3"})
    with pytest.raises(InvalidRequest, match="use one of auto, zendnn, onednn, float32, torch"):
        get_factory("Transformers").create(resolve_spec("InternVL2_5-1B"), twin_dir("InternVL2_5-1B"), {"cpu_gemm": "mkl"})


async def test_prompt_longer_than_max_model_len_is_rejected(engine_for):
    engine = engine_for("InternVL2_5-1B", max_model_len=300)
    with pytest.raises(InvalidRequest, match="at most 300"):
        await answer(engine, ask("Hi", image(14)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
async def test_gpu_load_and_answer(twin_dir, resolve_spec):
    engine = get_factory("Transformers").create(resolve_spec("InternVL2_5-1B"), twin_dir("InternVL2_5-1B"), {"device": "cuda"})
    info = await engine.load()
    try:
        assert info.device == "cuda:0"
        deltas = await answer(engine, ask("Hi", image(15)), SamplingParams(max_tokens=4, ignore_eos=True))
        assert deltas[-1].completion_tokens == 4
    finally:
        await engine.unload()
