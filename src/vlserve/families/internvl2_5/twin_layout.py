"""The tensors of an ORIGINAL-format InternVL2.5 checkpoint (InternVLChatModel's state dict), derived from
its config.json: names exactly as the released checkpoints spell them, shapes, and how a twin initialises them.

Names follow InternVL's `modeling_intern_vit.py` / `modeling_internvl_chat.py`, InternLM2's
`modeling_internlm2.py` and transformers' `Qwen2ForCausalLM` (the `language_model.` prefix is the chat model's
attribute). AWQ checkpoints replace each decoder-layer linear's `weight` by `qweight`/`qzeros`/`scales`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Init = Literal["normal", "ones", "zeros", "layer_scale", "awq_qweight", "awq_qzeros", "awq_scales"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    init: Init
    source: str = ""  # AWQ parts: the float weight they quantise (seeds the twin's random values) …
    source_shape: tuple[int, ...] = ()  # … and its shape [out, in]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _linear(name: str, out: int, inp: int, bias: bool) -> list[TensorSpec]:
    specs = [TensorSpec(f"{name}.weight", (out, inp), "normal")]
    return specs + ([TensorSpec(f"{name}.bias", (out,), "normal")] if bias else [])


def _norm(name: str, size: int, with_bias: bool) -> list[TensorSpec]:
    specs = [TensorSpec(f"{name}.weight", (size,), "ones")]
    return specs + ([TensorSpec(f"{name}.bias", (size,), "zeros")] if with_bias else [])


def vision_tensors(vision: dict) -> list[TensorSpec]:
    h, inter = vision["hidden_size"], vision["intermediate_size"]
    patch, positions = vision["patch_size"], (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    layer_norm = vision["norm_type"] == "layer_norm"
    specs = [
        TensorSpec("vision_model.embeddings.class_embedding", (1, 1, h), "normal"),
        TensorSpec(
            "vision_model.embeddings.patch_embedding.weight", (h, vision["num_channels"], patch, patch), "normal"
        ),
        TensorSpec("vision_model.embeddings.patch_embedding.bias", (h,), "normal"),
        TensorSpec("vision_model.embeddings.position_embedding", (1, positions, h), "normal"),
    ]
    for n in range(vision["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{n}"
        specs += _linear(f"{p}.attn.qkv", 3 * h, h, vision["qkv_bias"])
        if vision["qk_normalization"]:  # InternRMSNorm over the full hidden size
            specs += _norm(f"{p}.attn.q_norm", h, False) + _norm(f"{p}.attn.k_norm", h, False)
        specs += _linear(f"{p}.attn.proj", h, h, True)
        specs += _linear(f"{p}.mlp.fc1", inter, h, True) + _linear(f"{p}.mlp.fc2", h, inter, True)
        specs += _norm(f"{p}.norm1", h, layer_norm) + _norm(f"{p}.norm2", h, layer_norm)
        specs += [TensorSpec(f"{p}.ls1", (h,), "layer_scale"), TensorSpec(f"{p}.ls2", (h,), "layer_scale")]
    return specs


def projector_tensors(config: dict) -> list[TensorSpec]:
    vit = config["vision_config"]["hidden_size"] * int(1 / config["downsample_ratio"]) ** 2
    llm = config["llm_config"]["hidden_size"]
    return _norm("mlp1.0", vit, True) + _linear("mlp1.1", llm, vit, True) + _linear("mlp1.3", llm, llm, True)


def _attention_dims(llm: dict) -> tuple[int, int, int]:
    heads, kv = llm["num_attention_heads"], llm["num_key_value_heads"]
    head_dim = llm.get("head_dim") or llm["hidden_size"] // heads
    return heads * head_dim, kv * head_dim, head_dim


def qwen2_tensors(llm: dict) -> list[TensorSpec]:
    d, inter, vocab = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"]
    q, kv, _ = _attention_dims(llm)
    specs = [TensorSpec("language_model.model.embed_tokens.weight", (vocab, d), "normal")]
    for n in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}"
        specs += _linear(f"{p}.self_attn.q_proj", q, d, True) + _linear(f"{p}.self_attn.k_proj", kv, d, True)
        specs += _linear(f"{p}.self_attn.v_proj", kv, d, True) + _linear(f"{p}.self_attn.o_proj", d, q, False)
        specs += _linear(f"{p}.mlp.gate_proj", inter, d, False) + _linear(f"{p}.mlp.up_proj", inter, d, False)
        specs += _linear(f"{p}.mlp.down_proj", d, inter, False)
        specs += _norm(f"{p}.input_layernorm", d, False) + _norm(f"{p}.post_attention_layernorm", d, False)
    specs += _norm("language_model.model.norm", d, False)
    return specs + [TensorSpec("language_model.lm_head.weight", (vocab, d), "normal")]


def internlm2_tensors(llm: dict) -> list[TensorSpec]:
    d, inter, vocab, bias = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"], llm["bias"]
    q, kv, _ = _attention_dims(llm)
    specs = [TensorSpec("language_model.model.tok_embeddings.weight", (vocab, d), "normal")]
    for n in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}"
        # wqkv rows are grouped per KV head: [q × heads/kv, k, v] × kv heads (random here, so only the size matters)
        specs += _linear(f"{p}.attention.wqkv", q + 2 * kv, d, bias) + _linear(f"{p}.attention.wo", d, q, bias)
        specs += _linear(f"{p}.feed_forward.w1", inter, d, False) + _linear(f"{p}.feed_forward.w3", inter, d, False)
        specs += _linear(f"{p}.feed_forward.w2", d, inter, False)
        specs += _norm(f"{p}.attention_norm", d, False) + _norm(f"{p}.ffn_norm", d, False)
    specs += _norm("language_model.model.norm", d, False)
    return specs + [TensorSpec("language_model.output.weight", (vocab, d), "normal")]


def _is_quantized_linear(spec: TensorSpec) -> bool:
    in_decoder = spec.name.startswith("language_model.model.layers.")
    return in_decoder and spec.name.endswith(".weight") and len(spec.shape) == 2


def awq_tensors(specs: list[TensorSpec], group_size: int) -> list[TensorSpec]:
    """Replace each decoder-layer linear weight [out, in] by its AWQ GEMM parts (see awq.py)."""
    result = []
    for spec in specs:
        if not _is_quantized_linear(spec):
            result.append(spec)
            continue
        out, inp = spec.shape
        base = spec.name.removesuffix(".weight")
        result += [
            TensorSpec(f"{base}.qweight", (inp, out // 8), "awq_qweight", spec.name, spec.shape),
            TensorSpec(f"{base}.qzeros", (inp // group_size, out // 8), "awq_qzeros", spec.name, spec.shape),
            TensorSpec(f"{base}.scales", (inp // group_size, out), "awq_scales", spec.name, spec.shape),
        ]
    return result


def checkpoint_tensors(config: dict) -> list[TensorSpec]:
    """Every tensor of the checkpoint `config` describes, in a stable order (vision, projector, LLM)."""
    llm = config["llm_config"]
    backbone = internlm2_tensors if llm["architectures"][0].startswith("InternLM2") else qwen2_tensors
    specs = vision_tensors(config["vision_config"]) + projector_tensors(config) + backbone(llm)
    quant = llm.get("quantization_config")
    return awq_tensors(specs, quant["group_size"]) if quant else specs
