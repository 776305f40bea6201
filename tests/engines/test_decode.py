"""The decode fast path (decode.py): from the same slot-cache state it gives bit-for-bit the logits and cache writes
of the language model's own forward, for Qwen2 (1B) and Llama (2B, translated InternLM2) decoders, one sequence or a
batch of different lengths, plain float32 or fused + reordered bfloat16 (ZenDNN or oneDNN); models it does not
cover get None. The prefill-chunk step likewise gives the forward's hidden states and K/V chunk by chunk."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine import cpu_linears
from vlserve.engines.transformers_engine.decode import chunk_step, fast_decode_step
from vlserve.engines.transformers_engine.kv_cache import SlotKVCache


def _load(twin_dir, architecture, dtype):
    from vlserve.families.internvl2_5 import loader

    model = loader.load_model(twin_dir(architecture), dtype=dtype)
    cpu_linears.prepare(model, cpu_linears.pick(dtype), decode_rows=8)  # fused + reordered, as the engine does on a CPU
    from vlserve.engines.transformers_engine.attention import register

    model.config.get_text_config()._attn_implementation = register()
    return model


def _prefilled_cache(model, prompts):
    from transformers import DynamicCache

    text = model.config.get_text_config()
    lm = model.model.language_model
    head_dim = lm.layers[0].self_attn.head_dim
    cache = SlotKVCache([torch.device("cpu")] * text.num_hidden_layers, text.num_key_value_heads, head_dim,
                        model.dtype, slots=4, max_len=512)  # fmt: skip
    for ids in prompts:
        kv = DynamicCache(config=text)
        lm(input_ids=torch.tensor([ids]), past_key_values=kv, use_cache=True)
        cache.add([(layer.keys, layer.values) for layer in kv.layers])
    return cache


def _step(model, cache, tokens, fast):
    lm = model.model.language_model
    positions, mask = cache.begin_step(torch.device("cpu"))
    embeds = model.get_input_embeddings()(torch.tensor([[t] for t in tokens]))
    if fast is None:
        hidden = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True).last_hidden_state  # fmt: skip
    else:
        hidden = fast(embeds, positions, mask, cache)
    cache.end_step()
    return model.lm_head(hidden[:, -1])


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prompts", [[[5, 9, 14]], [[5, 9, 14], list(range(3, 40)), [7] * 11]])
def test_fast_step_equals_the_model_forward(twin_dir, architecture, dtype, prompts):
    model = _load(twin_dir, architecture, dtype)
    fast = fast_decode_step(model.model.language_model)
    assert fast is not None
    tokens = [11, 12, 13][: len(prompts)]
    with torch.inference_mode():
        ours, theirs = _prefilled_cache(model, prompts), _prefilled_cache(model, prompts)
        for _ in range(3):  # a few steps: each reads the K/V the previous one wrote
            got, expected = _step(model, ours, tokens, fast), _step(model, theirs, tokens, None)
            assert torch.equal(got, expected)
            tokens = expected.argmax(-1).tolist()
    for k_ours, k_theirs in zip(ours.keys + ours.values, theirs.keys + theirs.values, strict=True):
        assert torch.equal(k_ours, k_theirs)


def test_models_it_does_not_cover_keep_their_forward(twin_dir):
    model = _load(twin_dir, "InternVL2_5-1B", torch.float32)
    lm = model.model.language_model
    assert fast_decode_step(model.model.vision_tower) is None  # not a Llama/Qwen2 decoder
    lm.layers[3 % len(lm.layers)].mlp._hf_hook = object()  # accelerate's device-moving hook (a split model)
    assert fast_decode_step(lm) is None
    del lm.layers[3 % len(lm.layers)].mlp._hf_hook
    lm.config.layer_types = ["sliding_attention"] * lm.config.num_hidden_layers
    assert fast_decode_step(lm) is None
    lm.config.layer_types = ["full_attention"] * lm.config.num_hidden_layers
    lm.to("meta")
    assert fast_decode_step(lm) is None  # weights not on the CPU


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-2B"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_step_equals_the_model_forward(twin_dir, architecture, dtype):
    """A prompt prefilled chunk by chunk (a first chunk, chunks after a cached prefix, a last single token) gives the
    hidden states and K/V of the language model's own forward over the same chunks, bit for bit."""
    from transformers import DynamicCache

    model = _load(twin_dir, architecture, dtype)
    lm = model.model.language_model
    fast = chunk_step(lm)
    ids = torch.arange(3, 3 + 64 + 64 + 21 + 1)[None]
    ours, theirs = DynamicCache(config=lm.config), DynamicCache(config=lm.config)
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(ids)
        for begin, end in [(0, 64), (64, 128), (128, 149), (149, 150)]:
            positions = torch.arange(begin, end)[None]
            got = fast(embeds[:, begin:end], positions, ours)
            expected = lm(inputs_embeds=embeds[:, begin:end], position_ids=positions, past_key_values=theirs,
                          use_cache=True).last_hidden_state  # fmt: skip
            assert torch.equal(got, expected), (begin, end)
    for mine, other in zip(ours.layers, theirs.layers, strict=True):
        assert torch.equal(mine.keys, other.keys) and torch.equal(mine.values, other.values)


def test_models_it_does_not_cover_chunk_through_their_forward(twin_dir):
    model = _load(twin_dir, "InternVL2_5-1B", torch.float32)
    lm = model.model.language_model
    lm.layers[0].mlp._hf_hook = object()
    step = chunk_step(lm)
    del lm.layers[0].mlp._hf_hook
    called = []
    lm.register_forward_hook(lambda *_: called.append(True))
    from transformers import DynamicCache

    with torch.inference_mode():
        embeds = model.get_input_embeddings()(torch.tensor([[5, 6, 7]]))
        step(embeds, torch.arange(3)[None], DynamicCache(config=lm.config))
    assert called == [True]
