"""What both config translations (transformers' native classes in convert.py, vLLM's in vllm_support.py) read
from an original InternVL2.5 config.json: the whitelisted keys of each section and the rope parameters. Stated
once here; each translation adds the keys only its engine reads."""

from __future__ import annotations

from typing import Any

from vlserve.families.checkpoints import CheckpointMismatch

LLM_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
    "eos_token_id", "pad_token_id",
)  # fmt: skip
QWEN2_KEYS = LLM_KEYS + ("use_sliding_window", "sliding_window", "max_window_layers")
INTERNLM2_KEYS = LLM_KEYS
VISION_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "layer_norm_eps", "image_size", "patch_size", "num_channels", "norm_type",
)  # fmt: skip
ROPE_SCALINGS = ("dynamic", "linear")


def rope_parameters(llm: dict[str, Any]) -> dict[str, Any]:
    """transformers-5 style rope parameters from an original llm_config's `rope_theta` + `rope_scaling`."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(llm.get("rope_theta", 10000.0))}
    scaling = llm.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind not in ROPE_SCALINGS:
            raise CheckpointMismatch(f"unsupported rope_scaling {scaling!r} in llm_config")
        rope.update(rope_type=kind, factor=float(scaling["factor"]))
    return rope
