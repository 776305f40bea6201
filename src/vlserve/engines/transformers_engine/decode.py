"""One decode step (one new token per sequence) through a Llama/Qwen2-style decoder without transformers' per-call
plumbing: the same modules and functions, called in the same order, so the logits are bit-for-bit those of the
model's own forward (the tests compare them) — minus the wrappers around them.

Why: on the 2-core machine the full-size 1B architecture's decode step spends ~6.6 ms outside its matrix products,
and ~3.7 ms of that is calling machinery (nn.Module `__call__` for ~3,600 module calls, transformers' output/config
decorators, mask preparation, attention-interface lookup, keyword plumbing): 44.6 -> 40.9 ms per step measured
side by side. What is left is the products and the small tensor ops themselves.

Covered: `Qwen2Model` and `LlamaModel` (InternLM2 is translated to Llama) with full attention in every layer, all
weights on the CPU and no accelerate hooks (a model split over devices needs the hooks' transfers). Anything else
gets a step through the model's own forward (`decode_step`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlserve.engines.transformers_engine.attention import decode_attention

if TYPE_CHECKING:
    import torch

SUPPORTED = frozenset({"Qwen2Model", "LlamaModel"})
DecodeStep = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", Any], "torch.Tensor"]


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
    rotary = sys.modules[type(language_model).__module__].apply_rotary_pos_emb
    layers = list(language_model.layers[: language_model.config.num_hidden_layers])
    rotary_embedding, norm = language_model.rotary_emb, language_model.norm

    def step(inputs_embeds, position_ids, mask, cache):
        hidden = inputs_embeds
        cos, sin = rotary_embedding(hidden, position_ids)
        for layer in layers:
            hidden = _layer(layer, hidden, cos, sin, mask, cache, rotary)
        return norm.forward(hidden)

    return step


def _covered(language_model: Any) -> bool:
    if type(language_model).__name__ not in SUPPORTED:
        return False
    config = language_model.config
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    if any(hasattr(module, "_hf_hook") for module in language_model.modules()):
        return False
    return all(p.device.type == "cpu" for p in language_model.parameters())


def _layer(layer, hidden, cos, sin, mask, cache, rotary):
    """transformers' decoder layer forward for a one-token step (`Qwen2DecoderLayer` / `LlamaDecoderLayer`)."""
    attention, mlp = layer.self_attn, layer.mlp
    residual = hidden
    x = layer.input_layernorm.forward(hidden)
    heads = (*x.shape[:-1], -1, attention.head_dim)
    query = attention.q_proj.forward(x).view(heads).transpose(1, 2)
    key = attention.k_proj.forward(x).view(heads).transpose(1, 2)
    value = attention.v_proj.forward(x).view(heads).transpose(1, 2)
    query, key = rotary(query, key, cos, sin)
    key, value = cache.update(key, value, attention.layer_idx)
    out = decode_attention(query, key, value, mask, attention.scaling)
    hidden = residual + attention.o_proj.forward(out.reshape(*x.shape[:-1], -1).contiguous())
    residual = hidden
    x = layer.post_attention_layernorm.forward(hidden)
    return residual + mlp.down_proj.forward(mlp.act_fn.forward(mlp.gate_proj.forward(x)) * mlp.up_proj.forward(x))
