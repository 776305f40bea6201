"""One decode step (one new token per sequence), and one prefill chunk of a sequence, through a Llama/Qwen2-style
decoder without transformers' per-call plumbing: the same modules and functions, called in the same order, so the
results are bit-for-bit those of the model's own forward (the tests compare them) — minus the wrappers around them.

Why: on the 2-core machine the full-size 1B architecture's decode step spends ~6.6 ms outside its matrix products,
and ~3.7 ms of that is calling machinery (nn.Module `__call__` for ~3,600 module calls, transformers' output/config
decorators, mask preparation, attention-interface lookup, keyword plumbing): 44.6 -> 40.9 ms per step measured
side by side. What is left is the products and the small tensor ops themselves. Prefill chunks pay the same
machinery (mask building included) per chunk and layer: a 13-tile prompt is 27 chunks of 128 tokens on CPU.

Covered: `Qwen2Model` and `LlamaModel` (InternLM2 is translated to Llama) with full attention in every layer, all
weights on the CPU and no accelerate hooks (a model split over devices needs the hooks' transfers). Anything else
gets steps through the model's own forward (`decode_step`, `chunk_step`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from vlserve.engines.transformers_engine.attention import chunk_attention, decode_attention, visible_rows

if TYPE_CHECKING:
    import torch

SUPPORTED = frozenset({"Qwen2Model", "LlamaModel"})
DecodeStep = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", Any], "torch.Tensor"]
ChunkStep = Callable[["torch.Tensor", "torch.Tensor", Any], "torch.Tensor"]  # (inputs_embeds, position_ids, cache)


def decode_step(language_model: Any) -> DecodeStep:
    """The wrapper-free step where the model is covered, else one through the language model's own forward."""
    fast = fast_decode_step(language_model)
    if fast is not None:
        return fast

    def step(inputs_embeds, position_ids, mask, cache):
        return language_model(
            inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
            use_cache=True,
        ).last_hidden_state  # fmt: skip

    return step


def fast_decode_step(language_model: Any) -> DecodeStep | None:
    """step(inputs_embeds [B, 1, H], position_ids [B, 1], mask [B, 1, 1, L], cache) -> last hidden states
    [B, 1, H], or None where this model is not covered."""
    if not _covered(language_model):
        return None
    forward = _forward(language_model)

    def step(inputs_embeds, position_ids, mask, cache):
        rows = visible_rows(mask) if mask.device.type == "cpu" else None  # once per step, not per layer
        return forward(inputs_embeds, position_ids, cache, partial(_decode_attend, mask, rows))

    return step


def chunk_step(language_model: Any) -> ChunkStep:
    """step(inputs_embeds [1, C, H], position_ids [1, C], cache) -> hidden states [1, C, H] of a prefill chunk of one
    sequence (the cache holds its earlier chunks): wrapper-free where the model is covered, else its own forward."""
    if _covered(language_model):
        forward = _forward(language_model)

        def fast(inputs_embeds, position_ids, cache):
            mask = _chunk_mask(inputs_embeds.shape[1], cache.get_seq_length(), inputs_embeds.device)
            return forward(inputs_embeds, position_ids, cache, partial(_chunk_attend, mask))

        return fast

    def step(inputs_embeds, position_ids, cache):
        return language_model(inputs_embeds=inputs_embeds, position_ids=position_ids, past_key_values=cache,
                              use_cache=True).last_hidden_state  # fmt: skip

    return step


def _forward(language_model: Any) -> Callable[..., torch.Tensor]:
    rotary = sys.modules[type(language_model).__module__].apply_rotary_pos_emb
    layers = list(language_model.layers[: language_model.config.num_hidden_layers])
    rotary_embedding, norm = language_model.rotary_emb, language_model.norm

    def forward(inputs_embeds, position_ids, cache, attend):
        hidden = inputs_embeds
        cos, sin = rotary_embedding(hidden, position_ids)
        for layer in layers:
            hidden = _layer(layer, hidden, cos, sin, cache, rotary, attend)
        return norm.forward(hidden)

    return forward


def _decode_attend(mask, rows, query, key, value, scaling):
    return decode_attention(query, key, value, mask, scaling, rows)


def _chunk_mask(queries: int, past: int, device: Any) -> torch.Tensor | None:
    """What transformers' mask builder gives a chunk of one sequence (attention.py): nothing for a first chunk (SDPA
    is causal) or a single token (it sees everything before it), else a boolean [1, 1, C, L] mask aligned to the
    chunk's end."""
    import torch

    if past == 0 or queries == 1:
        return None
    keys = past + queries
    positions = torch.arange(past, keys, device=device)
    return (positions[:, None] >= torch.arange(keys, device=device)[None, :])[None, None]


def _chunk_attend(mask, query, key, value, scaling):
    return chunk_attention(query, key, value, mask, scaling)


def _covered(language_model: Any) -> bool:
    if type(language_model).__name__ not in SUPPORTED:
        return False
    config = language_model.config
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    if any(hasattr(module, "_hf_hook") for module in language_model.modules()):
        return False
    return all(p.device.type == "cpu" for p in language_model.parameters())


def _layer(layer, hidden, cos, sin, cache, rotary, attend):
    """transformers' decoder layer forward (`Qwen2DecoderLayer` / `LlamaDecoderLayer`), attention by
    `attend(query, key, value, scaling)`."""
    attention, mlp = layer.self_attn, layer.mlp
    residual = hidden
    x = layer.input_layernorm.forward(hidden)
    heads = (*x.shape[:-1], -1, attention.head_dim)
    query = attention.q_proj.forward(x).view(heads).transpose(1, 2)
    key = attention.k_proj.forward(x).view(heads).transpose(1, 2)
    value = attention.v_proj.forward(x).view(heads).transpose(1, 2)
    query, key = rotary(query, key, cos, sin)
    key, value = cache.update(key, value, attention.layer_idx)
    out = attend(query, key, value, attention.scaling)
    hidden = residual + attention.o_proj.forward(out.reshape(*x.shape[:-1], -1).contiguous())
    residual = hidden
    x = layer.post_attention_layernorm.forward(hidden)
    return residual + mlp.down_proj.forward(mlp.act_fn.forward(mlp.gate_proj.forward(x)) * mlp.up_proj.forward(x))
