"""Bytes and FLOPs of an InternVL2.5 checkpoint, from its original-format config.json alone (never from a loaded
model, so the theory does not inherit the engine's choices):

- `footprint`: resident bytes the engine should need — LLM decoder linears at 16 bit; on CPU's default kernels
  (`cpu_quant torch`) int8 (1 byte/param + one bf16 scale per output row) or int4 (0.5 byte/param + one bf16
  scale and one bf16 zero per group of 64 inputs of a row); with `cpu_quant bitsandbytes` (and on GPUs)
  bitsandbytes' 8-bit (1 byte/param + one fp32 scale per row) or NF4 (0.5 byte/param + one fp32 absmax per 64);
  everything else (embeddings, lm_head, norms, biases, vision tower, projector) at 16 bit, as the engine keeps it.
- `decode_bytes_per_token`: what one batch-1 decode step must read — every decoder weight, the final norm, the
  lm_head, one embedding row and the KV cache so far.
- `vit_flops` / `projector_flops` / `prefill_flops`: multiply-adds × 2 of a forward pass (matmuls and attention;
  norms and activations are noise next to them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BF16 = 2
NF4_BLOCK = 64
INT4_GROUP = 64  # the engine's default int4_group_size on CPU


@dataclass(frozen=True)
class LlmDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config: dict[str, Any]) -> LlmDims:
        llm = config["llm_config"]
        heads = llm["num_attention_heads"]
        head_dim = llm.get("head_dim") or llm["hidden_size"] // heads
        return cls(llm["hidden_size"], llm["num_hidden_layers"], heads, llm.get("num_key_value_heads") or heads,
                   head_dim, llm["intermediate_size"], llm["vocab_size"])  # fmt: skip

    @property
    def linear_params_per_layer(self) -> int:
        attention = 2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim
        return attention + 3 * self.hidden * self.intermediate


def _groups(config: dict[str, Any]) -> dict[str, list]:
    """The checkpoint's tensors by what the engine does with them."""
    from vlserve.families.internvl2_5.twin_layout import checkpoint_tensors

    groups: dict[str, list] = {"decoder linears": [], "other 16-bit": []}
    for spec in checkpoint_tensors(config):
        in_decoder = spec.name.startswith("language_model.model.layers.")
        is_matrix = spec.name.endswith(".weight") and len(spec.shape) == 2
        groups["decoder linears" if in_decoder and is_matrix else "other 16-bit"].append(spec)
    return groups


def footprint(config: dict[str, Any], quantization: str, kernels: str = "torch",
              int4_group: int = INT4_GROUP) -> dict[str, int]:  # fmt: skip
    """Bytes by part for quantization none / 8-bit / 4-bit on `kernels` torch or bitsandbytes; 'total' included."""
    groups = _groups(config)
    linears = groups["decoder linears"]
    params, rows = sum(s.numel for s in linears), sum(s.shape[0] for s in linears)
    if quantization == "none":
        quantized = {"decoder linears (bf16)": BF16 * params}
    elif (quantization, kernels) == ("8-bit", "torch"):
        quantized = {"decoder linears (int8)": params, "row scales (bf16)": BF16 * rows}
    elif (quantization, kernels) == ("4-bit", "torch"):
        groups_of = sum(s.shape[0] * math.ceil(s.shape[1] / int4_group) for s in linears)
        quantized = {"decoder linears (int4)": params // 2, f"scale + zero per {int4_group} (bf16)": 2 * BF16 * groups_of}
    elif (quantization, kernels) == ("8-bit", "bitsandbytes"):
        quantized = {"decoder linears (int8)": params, "row scales (fp32)": 4 * rows}
    elif (quantization, kernels) == ("4-bit", "bitsandbytes"):
        blocks = sum(math.ceil(s.numel / NF4_BLOCK) for s in linears)
        quantized = {"decoder linears (nf4)": params // 2, "absmax per 64 (fp32)": 4 * blocks}
    else:
        raise ValueError(f"no footprint model for quantization {quantization!r} on {kernels!r}")
    parts = {**quantized, "other weights (bf16)": BF16 * sum(s.numel for s in groups["other 16-bit"])}
    return {**parts, "total": sum(parts.values())}


def decode_bytes_per_token(config: dict[str, Any], context: int) -> int:
    dims = LlmDims.of(config)
    decoder = sum(s.numel for s in _groups(config)["decoder linears"]) + _decoder_small_params(config)
    lm_head = dims.vocab * dims.hidden
    kv = 2 * dims.layers * dims.kv_heads * dims.head_dim * context
    return BF16 * (decoder + lm_head + dims.hidden + dims.hidden + kv)  # + final norm + one embedding row


def _decoder_small_params(config: dict[str, Any]) -> int:
    """Biases and norms inside the decoder layers."""
    return sum(s.numel for s in _groups(config)["other 16-bit"] if s.name.startswith("language_model.model.layers."))


def vit_flops(config: dict[str, Any], tiles: int) -> float:
    vision = config["vision_config"]
    h, inter, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    tokens = patches + 1  # + class token
    patch_embed = 2 * patches * 3 * vision["patch_size"] ** 2 * h
    per_layer = 2 * tokens * (4 * h * h + 2 * h * inter) + 4 * tokens * tokens * h  # linears + QK^T and PV
    return tiles * (patch_embed + layers * per_layer)


def projector_flops(config: dict[str, Any], tiles: int) -> float:
    vision, llm_hidden = config["vision_config"], config["llm_config"]["hidden_size"]
    ratio = config.get("downsample_ratio", 0.5)
    tokens = int(((vision["image_size"] // vision["patch_size"]) * ratio) ** 2)
    shuffled = int(vision["hidden_size"] / ratio**2)
    return tiles * 2 * tokens * (shuffled * llm_hidden + llm_hidden * llm_hidden)


def prefill_flops(config: dict[str, Any], tokens: int) -> float:
    """The LLM over a prompt of `tokens` (causal attention: half the score matrix), logits for the last token."""
    dims = LlmDims.of(config)
    linears = 2 * tokens * dims.linear_params_per_layer
    attention = 2 * tokens * tokens * dims.heads * dims.head_dim  # (QK^T + PV) over the causal half
    return dims.layers * (linears + attention) + 2 * dims.hidden * dims.vocab


def image_prompt_flops(config: dict[str, Any], tiles: int, prompt_tokens: int) -> dict[str, float]:
    parts = {"ViT": vit_flops(config, tiles), "projector": projector_flops(config, tiles),
             "LLM prefill": prefill_flops(config, prompt_tokens)}  # fmt: skip
    return {**parts, "total": sum(parts.values())}
