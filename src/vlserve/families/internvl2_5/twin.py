"""Architecture twins: ORIGINAL-format InternVL2.5 checkpoints with seeded random weights.

A twin is what the hub serves for a reference checkpoint (config.json with `architectures:
["InternVLChatModel"]`, the real tokenizer, generation and preprocessor configs, safetensors with the original
tensor names) with every structural choice kept — Qwen2 or InternLM2 backbone, InternViT-300M or -6B vision
style, rope settings, special-token ids, untied head, AWQ GEMM layout — and, unless `full_size=True`, the
dimensions shrunk so a twin is tens of MB:

* LLM: hidden 128, 4 heads / 2 KV heads (head_dim 32, the smallest vLLM CPU attention supports; 2 KV groups so
  InternLM2's per-group `wqkv` packing matters), intermediate 256 (AWQ needs in_features % 128 == 0), 2 layers;
  vocabulary untouched (151674 / 92553), so embeddings and head dominate the size.
* Vision: 2 layers; InternViT-300M style hidden 64 / 2 heads / intermediate 256, InternViT-6B style hidden 96 /
  3 heads (odd, like its 25) / intermediate 384; image 448, patch 14, downsample 0.5 → 256 tokens per tile.

config.json carries `"vlserve_twin": {...}` at top level (ignored by every loader); nothing else differs from
the reference apart from the shrunk sizes. Weights: normal(0, 0.02) per tensor from a generator seeded by
(seed, tensor name), norms 1, norm biases 0, ViT layer scales = initializer_factor; a base twin and its AWQ
twin therefore share weights (the AWQ one quantised).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlserve.families.internvl2_5 import reference
from vlserve.families.internvl2_5.twin_layout import TensorSpec, checkpoint_tensors

TWIN_KEY = "vlserve_twin"
INIT_STD = 0.02
MAX_SHARD_BYTES = 4 * 1000**3  # full-size twins are sharded like the hub's (≤ 4-5 GB per file)


@dataclass(frozen=True)
class TwinDims:
    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    intermediate_size: int
    num_key_value_heads: int | None = None  # LLM only


TINY_LLM = TwinDims(
    hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256, num_hidden_layers=2
)
TINY_VISION = {
    "300m": TwinDims(hidden_size=64, num_attention_heads=2, intermediate_size=256, num_hidden_layers=2),
    "6b": TwinDims(hidden_size=96, num_attention_heads=3, intermediate_size=384, num_hidden_layers=2),
}


def _shrink(section: dict, dims: TwinDims) -> None:
    section.update({k: v for k, v in vars(dims).items() if v is not None})


def twin_config(architecture: str, *, full_size: bool = False, seed: int = 0, dtype: str = "bfloat16") -> dict:
    """The twin's config.json: the reference config, dimensions shrunk unless `full_size`, plus the twin marker."""
    config = reference.load_reference_config(architecture)
    if not full_size:
        _shrink(config["llm_config"], TINY_LLM)
        _shrink(config["vision_config"], TINY_VISION[reference.vision_kind(architecture)])
    if dtype != config.get("torch_dtype"):
        for section in (config, config["llm_config"], config["vision_config"]):
            section["torch_dtype"] = dtype
    config[TWIN_KEY] = {"architecture": architecture, "seed": seed, "full_size": full_size}
    return config


def write_twin(
    architecture: str, outdir: Path, *, full_size: bool = False, seed: int = 0, dtype: str = "bfloat16"
) -> Path:
    """Write a twin of `architecture` (a reference checkpoint name) into `outdir`; returns `outdir`."""
    outdir = Path(outdir)
    config = twin_config(architecture, full_size=full_size, seed=seed, dtype=dtype)
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in outdir.glob("model*.safetensors*"):
        stale.unlink()
    for name, source in reference.reference_files(architecture).items():
        if name != "config.json":
            with source.open("rb") as src, open(outdir / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    (outdir / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_weights(config, outdir, seed=seed, dtype=dtype)
    return outdir


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def initial_weight(name: str, shape: tuple[int, ...], seed: int, dtype=None):
    """The seeded random value a twin gives tensor `name` (for AWQ parts: the float weight before packing)."""
    import torch

    generator = torch.Generator().manual_seed(_seed_for(seed, name))
    return torch.empty(shape, dtype=dtype or torch.float32).normal_(0.0, INIT_STD, generator=generator)


def _materialize(spec: TensorSpec, config: dict, seed: int, dtype):
    """Tensors for one spec (AWQ specs come in threes from one quantised weight; see _quantized)."""
    import torch

    if spec.init == "normal":
        return initial_weight(spec.name, spec.shape, seed, dtype)
    if spec.init == "ones":
        return torch.ones(spec.shape, dtype=dtype)
    if spec.init == "zeros":
        return torch.zeros(spec.shape, dtype=dtype)
    if spec.init == "layer_scale":
        return torch.full(spec.shape, config["vision_config"]["initializer_factor"], dtype=dtype)
    raise ValueError(f"unexpected init {spec.init!r} for {spec.name}")


def _quantized(source: str, shape: tuple[int, int], group_size: int, seed: int) -> dict:
    from vlserve.families.internvl2_5.awq import pack_awq

    qweight, qzeros, scales = pack_awq(initial_weight(source, shape, seed), group_size)
    base = source.removesuffix(".weight")
    return {f"{base}.qweight": qweight, f"{base}.qzeros": qzeros, f"{base}.scales": scales}


def _nbytes(spec: TensorSpec, itemsize: int) -> int:
    sizes = {"awq_qweight": 4, "awq_qzeros": 4, "awq_scales": 2}
    return spec.numel * sizes.get(spec.init, itemsize)


def _plan_shards(specs: list[TensorSpec], itemsize: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        nbytes = _nbytes(spec, itemsize)
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    return shards


def _shard_tensors(shard: list[TensorSpec], config: dict, seed: int, dtype) -> dict:
    llm = config["llm_config"]
    group_size = llm.get("quantization_config", {}).get("group_size", 128)
    tensors: dict = {}
    for spec in shard:
        if spec.init.startswith("awq_"):
            if spec.name not in tensors:  # a linear's three parts may straddle shards: recomputed, same values
                tensors.update(_quantized(spec.source, spec.source_shape, group_size, seed))
        else:
            tensors[spec.name] = _materialize(spec, config, seed, dtype)
    return {spec.name: tensors[spec.name].contiguous() for spec in shard}


def _write_weights(config: dict, outdir: Path, *, seed: int, dtype: str) -> None:
    import torch
    from safetensors.torch import save_file

    torch_dtype = getattr(torch, dtype)
    specs = checkpoint_tensors(config)
    shards = _plan_shards(specs, torch.empty((), dtype=torch_dtype).element_size())
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    weight_map, total = {}, 0
    for shard, name in zip(shards, names):
        tensors = _shard_tensors(shard, config, seed, torch_dtype)  # one shard in memory at a time
        save_file(tensors, str(outdir / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (outdir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
