"""Load InternVL2.5 checkpoints into transformers' native `InternVLForConditionalGeneration` without remote code.

Two formats:
- ORIGINAL (`InternVLChatModel`, what OpenGVLab publishes): the config is translated from a whitelist of keys and the
  tensors are streamed from safetensors (sharded or not), renamed/split by the tables in `weights.py`, and assigned
  into a model built on the meta device. AWQ checkpoints (GEMM-packed LLM linears) are dequantized as they stream.
- already-converted `-hf` checkpoints (`model_type: internvl`): `from_pretrained`, checking its loading report.

Either way a missing, unexpected or mis-shaped weight raises `CheckpointMismatch` naming them: a model never runs
with silently random weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.errors import VlserveError

if TYPE_CHECKING:
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"
TOKENS_PER_TILE = 256

_QWEN2_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_sliding_window", "sliding_window", "max_window_layers",
)  # fmt: skip
_INTERNLM2_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
    "eos_token_id", "pad_token_id",
)  # fmt: skip
_VISION_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "layer_norm_eps", "image_size", "patch_size", "num_channels", "norm_type",
)  # fmt: skip


class CheckpointMismatch(VlserveError):
    """The checkpoint's tensors do not match the model its config describes."""

    status_code = 500
    error_type = "model_load_error"


@dataclass(frozen=True)
class LoadReport:
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()

    def raise_if_bad(self, where: Path) -> None:
        problems = [
            f"{label} ({len(names)}): {', '.join(names[:20])}{' …' if len(names) > 20 else ''}"
            for label, names in (("missing", self.missing), ("unexpected", self.unexpected),
                                 ("shape mismatch", self.mismatched))
            if names
        ]  # fmt: skip
        if problems:
            raise CheckpointMismatch(
                f"checkpoint {where} does not match its config; " + "; ".join(problems)
                + ". Re-download the model or check that the files are not from another size."
            )


# ---------------------------------------------------------------- config


def read_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


def is_original_format(config: dict[str, Any]) -> bool:
    return "llm_config" in config and config.get("model_type", "internvl_chat") != "internvl"


def llm_arch(config: dict[str, Any]) -> str:
    return (config["llm_config"].get("architectures") or ["?"])[0]


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


def _rope(llm: dict[str, Any]) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(llm.get("rope_theta", 10000.0))}
    scaling = llm.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind not in ("dynamic", "linear"):
            raise CheckpointMismatch(f"unsupported rope_scaling {scaling!r} in llm_config")
        rope.update(rope_type=kind, factor=float(scaling["factor"]))
    return rope


def _text_config(llm: dict[str, Any]):
    from transformers import LlamaConfig, Qwen2Config

    arch = (llm.get("architectures") or ["?"])[0]
    common = {"tie_word_embeddings": bool(llm.get("tie_word_embeddings", False)), "rope_parameters": _rope(llm)}
    if arch == "Qwen2ForCausalLM":
        kwargs = {k: llm[k] for k in _QWEN2_KEYS if llm.get(k) is not None}
        return Qwen2Config(**kwargs, **common)
    if arch == "InternLM2ForCausalLM":
        kwargs = {k: llm[k] for k in _INTERNLM2_KEYS if llm.get(k) is not None}
        bias = bool(llm.get("bias", False))
        return LlamaConfig(**kwargs, **common, attention_bias=bias, mlp_bias=False)
    raise CheckpointMismatch(f"unsupported LLM architecture {arch!r}; InternVL2.5 uses Qwen2 or InternLM2")


def _vision_config(vision: dict[str, Any]):
    from transformers import InternVLVisionConfig

    kwargs = {k: vision[k] for k in _VISION_KEYS if k in vision}
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


def checkpoint_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatch(f"no *.safetensors files in {model_dir} (only safetensors checkpoints are loaded)")
    return files


def iter_tensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the checkpoint, one at a time (never the whole state dict in memory)."""
    from safetensors import safe_open

    for path in checkpoint_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


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


def _assign(model, name: str, value, device, dtype, report: dict[str, list[str]]) -> None:
    import torch

    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        report["unexpected"].append(name)
        return
    current = module._parameters.get(attr) if attr in module._parameters else module._buffers.get(attr)
    if current is None and attr not in module._parameters and attr not in module._buffers:
        report["unexpected"].append(name)
        return
    if tuple(current.shape) != tuple(value.shape):
        report["mismatched"].append(f"{name} {tuple(value.shape)} vs {tuple(current.shape)}")
        return
    target_dtype = dtype if value.is_floating_point() else value.dtype
    # copy=True: a checkpoint tensor is a view of the safetensors file's memory map; keeping it would keep the whole
    # file mapped, and every page of it that loading read (16-bit weights that quantization replaced included)
    # resident for the life of the model. A copy lets the map go once loading is done.
    value = value.to(device=device, dtype=target_dtype, copy=True)
    if attr in module._parameters:
        module._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[attr] = value


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
            _assign(model, new_name, value, device_for(new_name), dtype, report)
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
