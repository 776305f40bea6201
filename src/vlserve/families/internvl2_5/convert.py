"""Load InternVL2.5 checkpoints into transformers' native `InternVLForConditionalGeneration` without remote code.

Two formats:
- ORIGINAL (`InternVLChatModel`, what OpenGVLab publishes): the config is translated from a whitelist of keys and the
  tensors are streamed from safetensors (sharded or not), renamed/split by the tables in `weights.py`, and assigned
  into a model built on the meta device. AWQ checkpoints (GEMM-packed LLM linears) are dequantized as they stream.
- already-converted `-hf` checkpoints (`model_type: internvl`): `from_pretrained`, checking its loading report.

Either way a missing, unexpected or mis-shaped weight raises `CheckpointMismatch` naming them: a model never runs
with silently random weights. The family-neutral parts (file listing, tensor streaming, assignment, the load
report) are in vlserve.families.checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.families.checkpoints import CheckpointMismatch, LoadReport, assign, iter_tensors, read_config
from vlserve.families.internvl2_5.config_keys import INTERNLM2_KEYS, QWEN2_KEYS, VISION_KEYS, rope_parameters

if TYPE_CHECKING:
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"

# ---------------------------------------------------------------- config


def is_original_format(config: dict[str, Any]) -> bool:
    return "llm_config" in config and config.get("model_type", "internvl_chat") != "internvl"


def awq_config(config: dict[str, Any]) -> dict[str, Any] | None:
    quant = config.get("llm_config", {}).get("quantization_config") or config.get("quantization_config")
    return quant if quant and quant.get("quant_method") == "awq" else None


def image_token_id(model_dir: Path) -> int:
    """The `<IMG_CONTEXT>` id, from added_tokens.json or tokenizer.json (no tokenizer needs to be built)."""
    model_dir = Path(model_dir)
    added = model_dir / "added_tokens.json"
    if added.exists():
        ids = json.loads(added.read_text())
        if IMAGE_CONTEXT_TOKEN in ids:
            return int(ids[IMAGE_CONTEXT_TOKEN])
    tok = model_dir / "tokenizer.json"
    if tok.exists():
        for entry in json.loads(tok.read_text()).get("added_tokens", []):
            if entry["content"] == IMAGE_CONTEXT_TOKEN:
                return int(entry["id"])
    raise CheckpointMismatch(f"{model_dir} has no {IMAGE_CONTEXT_TOKEN} token in added_tokens.json or tokenizer.json")


def _text_config(llm: dict[str, Any]):
    from transformers import LlamaConfig, Qwen2Config

    arch = (llm.get("architectures") or ["?"])[0]
    tied = bool(llm.get("tie_word_embeddings", False))
    common = {"tie_word_embeddings": tied, "rope_parameters": rope_parameters(llm)}
    if arch == "Qwen2ForCausalLM":
        kwargs = {k: llm[k] for k in QWEN2_KEYS if llm.get(k) is not None}
        return Qwen2Config(**kwargs, **common)
    if arch == "InternLM2ForCausalLM":
        kwargs = {k: llm[k] for k in INTERNLM2_KEYS if llm.get(k) is not None}
        bias = bool(llm.get("bias", False))
        return LlamaConfig(**kwargs, **common, attention_bias=bias, mlp_bias=False)
    raise CheckpointMismatch(f"unsupported LLM architecture {arch!r}; InternVL2.5 uses Qwen2 or InternLM2")


def _vision_config(vision: dict[str, Any]):
    from transformers import InternVLVisionConfig

    kwargs = {k: vision[k] for k in VISION_KEYS if k in vision}
    return InternVLVisionConfig(
        **kwargs,
        use_qk_norm=bool(vision.get("qk_normalization", False)),
        attention_bias=bool(vision.get("qkv_bias", True)),
        layer_scale_init_value=float(vision.get("initializer_factor", 0.1)),
        use_mean_pooling=True,  # InternViT has no final norm: keep `layernorm` an Identity
        use_mask_token=False,
        use_absolute_position_embeddings=True,
    )


def translate_config(config: dict[str, Any], img_context_id: int) -> InternVLConfig:
    """The native config for an original `InternVLChatModel` config, built from whitelisted keys only."""
    from transformers import InternVLConfig

    if config.get("ps_version", "v2") != "v2":
        raise CheckpointMismatch(f"pixel-shuffle version {config.get('ps_version')!r} is not supported (only v2)")
    text = _text_config(config["llm_config"])
    vision = _vision_config(config["vision_config"])
    downsample = float(config.get("downsample_ratio", 0.5))
    image_size = int(config.get("force_image_size") or config["vision_config"]["image_size"])
    patches = image_size // int(config["vision_config"]["patch_size"])
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=img_context_id,
        image_seq_length=int(patches * patches * downsample * downsample),
        downsample_ratio=downsample,
        projector_hidden_act="gelu",
        vision_feature_layer=int(config.get("select_layer", -1)),
        vision_feature_select_strategy="default",
        tie_word_embeddings=text.tie_word_embeddings,
    )


# ---------------------------------------------------------------- tensors


@dataclass(frozen=True)
class AwqParts:
    """One AWQ layer unpacked but still 4-bit, rows = output features (what `weights.map_tensor` splits)."""

    q: torch.Tensor  # int32 [out, in]
    zeros: torch.Tensor  # int32 [out, in/g]
    scales: torch.Tensor  # [out, in/g]

    def dequantize(self, group_size: int) -> torch.Tensor:
        from vlserve.families.internvl2_5.awq import dequantize_rows

        return dequantize_rows(self.q, self.zeros, self.scales, group_size)


def awq_stream(tensors: Iterator[tuple[str, torch.Tensor]], group_size: int) -> Iterator[tuple[str, Any]]:
    """Replace each module's (qweight, qzeros, scales) triple by one `<module>.weight` entry holding AwqParts."""
    from vlserve.families.internvl2_5.awq import unpack_awq_int

    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors:
        prefix, _, leaf = name.rpartition(".")
        if leaf not in ("qweight", "qzeros", "scales"):
            yield name, tensor
            continue
        parts = pending.setdefault(prefix, {})
        parts[leaf] = tensor
        if len(parts) == 3:
            del pending[prefix]
            q, zeros, scales = unpack_awq_int(parts["qweight"], parts["qzeros"], parts["scales"], group_size)
            yield f"{prefix}.weight", AwqParts(q, zeros, scales)
    if pending:
        raise CheckpointMismatch(f"incomplete AWQ tensors (need qweight, qzeros, scales) for: {sorted(pending)}")


def map_awq(name: str, parts: AwqParts, layout: Any) -> Iterator[tuple[str, AwqParts]]:
    """`map_tensor` for an AWQ layer: its renames and splits are row operations, so each part maps the same way."""
    from vlserve.families.internvl2_5.weights import map_tensor

    mapped = [list(map_tensor(name, t, layout)) for t in (parts.q, parts.zeros, parts.scales)]
    for (new_name, q), (_, zeros), (_, scales) in zip(*mapped, strict=True):
        yield new_name, AwqParts(q.contiguous(), zeros.contiguous(), scales.contiguous())


# Int4Linear-style factory: (q, zeros, scales, group_size=, device=, bias=) -> a module replacing the linear layer,
# or None when its kernels do not take that layer (it is then dequantized to the model's dtype).
Int4Factory = Callable[..., Any]


# ---------------------------------------------------------------- model


DeviceFor = Callable[[str], "str | torch.device"]


def _install_int4(model, name: str, parts: AwqParts, group_size: int, device, factory: Int4Factory | None):
    """Swap the linear layer owning `name` for a 4-bit module from `factory`; returns None when it did, else the
    dequantized weight [out, in] to assign as usual."""
    if factory is not None:
        module_name = name.rpartition(".")[0]
        bias = model.get_submodule(module_name).bias
        module = factory(parts.q, parts.zeros, parts.scales, group_size=group_size, device=device, bias=bias)
        if module is not None:
            model.set_submodule(module_name, module)
            return None
    return parts.dequantize(group_size)


def load_original(
    model_dir: Path, *, dtype: torch.dtype, device_for: DeviceFor | None = None, int4_linear: Int4Factory | None = None
) -> InternVLForConditionalGeneration:
    """Build the native model on the meta device and stream the original checkpoint into it. AWQ layers become
    `int4_linear(...)` modules where it gives one, else 16-bit weights dequantized at load."""
    from vlserve.families.internvl2_5.weights import LayoutInfo, UnknownWeight, map_tensor

    raw = read_config(model_dir)
    config = translate_config(raw, image_token_id(model_dir))
    model = build_empty(config, dtype)
    text = config.text_config
    layout = LayoutInfo(text.num_attention_heads, text.num_key_value_heads,
                        getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)  # fmt: skip
    expected = set(model.state_dict().keys())
    report: dict[str, list[str]] = {"unexpected": [], "mismatched": []}
    seen: set[str] = set()
    tensors = iter_tensors(model_dir)
    quant = awq_config(raw)
    group_size = int(quant.get("group_size", 128)) if quant else 0
    if quant:
        tensors = awq_stream(tensors, group_size)
    device_for = device_for or (lambda _name: "cpu")
    for name, tensor in tensors:
        try:
            mapped = list(map_awq(name, tensor, layout) if isinstance(tensor, AwqParts) else map_tensor(name, tensor, layout))
        except UnknownWeight:
            report["unexpected"].append(name)
            continue
        for new_name, value in mapped:
            if new_name not in expected:
                report["unexpected"].append(f"{name} -> {new_name}")
                continue
            seen.add(new_name)
            if isinstance(value, AwqParts):
                value = _install_int4(model, new_name, value, group_size, device_for(new_name), int4_linear)
                if value is None:
                    continue
            assign(model, new_name, value, device_for(new_name), dtype, report)
    missing = tuple(sorted(expected - seen))
    LoadReport(missing, tuple(report["unexpected"]), tuple(report["mismatched"])).raise_if_bad(Path(model_dir))
    return model.eval()


def build_empty(config: InternVLConfig, dtype: torch.dtype) -> InternVLForConditionalGeneration:
    """The model with parameters on the meta device (buffers such as rotary tables are real, in float32)."""
    from accelerate import init_empty_weights
    from transformers import InternVLForConditionalGeneration

    config.text_config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    config._attn_implementation = "sdpa"
    config.dtype = dtype
    with init_empty_weights(include_buffers=False):
        model = InternVLForConditionalGeneration(config)
    return model


def load_hf(model_dir: Path, *, dtype: torch.dtype, device_map: Any = None) -> InternVLForConditionalGeneration:
    """An already-converted native checkpoint, with its loading report checked."""
    from transformers import InternVLForConditionalGeneration

    model, info = InternVLForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=dtype, device_map=device_map, attn_implementation="sdpa", output_loading_info=True
    )
    report = LoadReport(
        tuple(info.get("missing_keys", ())),
        tuple(info.get("unexpected_keys", ())),
        tuple(str(m) for m in info.get("mismatched_keys", ())),
    )
    report.raise_if_bad(Path(model_dir))
    return model.eval()


def load_model(
    model_dir: Path, *, dtype: torch.dtype, device_for: DeviceFor | None = None, device_map: Any = None,
    int4_linear: Int4Factory | None = None,
) -> InternVLForConditionalGeneration:  # fmt: skip
    """Either format. `device_for(param_name)` places each tensor of an original checkpoint."""
    if is_original_format(read_config(model_dir)):
        return load_original(model_dir, dtype=dtype, device_for=device_for, int4_linear=int4_linear)
    return load_hf(model_dir, dtype=dtype, device_map=device_map)
