"""Weight-name mapping from ORIGINAL InternVL2.5 checkpoints (`InternVLChatModel`) to transformers' native
`InternVLForConditionalGeneration`, as data: renames (regex -> target) and split rules (one packed tensor -> several).

The loader (convert.py) stays generic: it streams tensors and applies `map_tensor` to each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

_VIT = r"^vision_model\.encoder\.layers\.(\d+)\."
_VIT_T = r"model.vision_tower.encoder.layer.\1."
_LLM = r"^language_model\.model\.layers\.(\d+)\."
_LLM_T = r"model.language_model.layers.\1."

# (pattern, replacement): the first match wins. Covers InternViT-300M/6B, the mlp1 projector, Qwen2 and InternLM2.
RENAMES: tuple[tuple[str, str], ...] = (
    # vision embeddings
    (r"^vision_model\.embeddings\.class_embedding$", "model.vision_tower.embeddings.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "model.vision_tower.embeddings.position_embeddings"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "model.vision_tower.embeddings.patch_embeddings.projection."),
    # vision layers
    (_VIT + r"norm1\.", _VIT_T + "layernorm_before."),
    (_VIT + r"norm2\.", _VIT_T + "layernorm_after."),
    (_VIT + r"ls1$", _VIT_T + "lambda_1"),
    (_VIT + r"ls2$", _VIT_T + "lambda_2"),
    (_VIT + r"attn\.proj\.", _VIT_T + "attention.projection_layer."),
    (_VIT + r"attn\.q_norm\.", _VIT_T + "attention.q_norm."),
    (_VIT + r"attn\.k_norm\.", _VIT_T + "attention.k_norm."),
    (_VIT + r"mlp\.fc(\d)\.", _VIT_T + r"mlp.fc\2."),
    # projector: mlp1 = LayerNorm, Linear, GELU, Linear
    (r"^mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "model.multi_modal_projector.linear_2."),
    # InternLM2 backbone -> Llama names
    (r"^language_model\.model\.tok_embeddings\.", "model.language_model.embed_tokens."),
    (r"^language_model\.output\.", "lm_head."),
    (_LLM + r"attention\.wo\.", _LLM_T + "self_attn.o_proj."),
    (_LLM + r"feed_forward\.w1\.", _LLM_T + "mlp.gate_proj."),
    (_LLM + r"feed_forward\.w3\.", _LLM_T + "mlp.up_proj."),
    (_LLM + r"feed_forward\.w2\.", _LLM_T + "mlp.down_proj."),
    (_LLM + r"attention_norm\.", _LLM_T + "input_layernorm."),
    (_LLM + r"ffn_norm\.", _LLM_T + "post_attention_layernorm."),
    # Qwen2 backbone: same names one level down (also catches the InternLM2 final `norm`)
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model.language_model."),
)


@dataclass(frozen=True)
class SplitRule:
    """One packed tensor whose name matches `pattern` becomes len(targets) tensors (targets use \\N groups)."""

    pattern: str
    targets: tuple[str, ...]
    split: Callable[[torch.Tensor, LayoutInfo], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class LayoutInfo:
    """The dims a split rule may need (from the translated config)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int


def _chunk3(tensor: torch.Tensor, _: LayoutInfo) -> tuple[torch.Tensor, ...]:
    return tuple(t.contiguous() for t in tensor.chunk(3, dim=0))


def split_internlm2_wqkv(wqkv: torch.Tensor, layout: LayoutInfo) -> tuple[torch.Tensor, ...]:
    """InternLM2 packs q/k/v per KV-head group: "(h gs d) z -> h gs d z" with gs = 2 + heads/kv_heads;
    q = [:, :gs-2], k = [:, -2], v = [:, -1]."""
    h, d = layout.num_kv_heads, layout.head_dim
    gs = 2 + layout.num_heads // h
    grouped = wqkv.reshape(h, gs, d, wqkv.shape[-1])
    q = grouped[:, : gs - 2].reshape(-1, wqkv.shape[-1])
    k = grouped[:, -2].reshape(-1, wqkv.shape[-1])
    v = grouped[:, -1].reshape(-1, wqkv.shape[-1])
    return q.contiguous(), k.contiguous(), v.contiguous()


SPLITS: tuple[SplitRule, ...] = (
    SplitRule(
        _VIT + r"attn\.qkv\.(weight|bias)$",
        tuple(_VIT_T + f"attention.{p}_proj." + r"\2" for p in "qkv"),
        _chunk3,
    ),
    SplitRule(
        _LLM + r"attention\.wqkv\.(weight|bias)$",
        tuple(_LLM_T + f"self_attn.{p}_proj." + r"\2" for p in "qkv"),
        split_internlm2_wqkv,
    ),
)

_RENAMES = tuple((re.compile(p), t) for p, t in RENAMES)
_SPLITS = tuple((re.compile(r.pattern), r) for r in SPLITS)


class UnknownWeight(KeyError):
    """A checkpoint tensor that no rule maps (reported, never silently dropped)."""


def map_tensor(name: str, tensor: torch.Tensor, layout: LayoutInfo) -> Iterator[tuple[str, torch.Tensor]]:
    """The native (name, tensor) pairs one original checkpoint tensor becomes."""
    for pattern, rule in _SPLITS:
        match = pattern.match(name)
        if match:
            parts = rule.split(tensor, layout)
            for target, part in zip(rule.targets, parts, strict=True):
                yield match.expand(target), part
            return
    for pattern, target in _RENAMES:
        if pattern.match(name):
            new_name = pattern.sub(target, name, count=1)
            yield new_name, tensor
            return
    raise UnknownWeight(name)

