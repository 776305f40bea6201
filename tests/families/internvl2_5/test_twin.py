"""Twins of all 12 InternVL2.5 architectures: original tensor names, kept structure, loadable tokenizers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tests.families.internvl2_5.twins_cache import tiny_twin
from vlserve.families.internvl2_5 import reference, twin
from vlserve.families.internvl2_5.tokenizer import load_tokenizer

ARCHITECTURES = reference.architectures()
IMG_CONTEXT = {"qwen2": 151667, "internlm2": 92546}
SHRUNK_LLM = {"hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "num_hidden_layers"}
SHRUNK_VISION = {"hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers"}


def expected_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Original InternVLChatModel state-dict names and shapes, written from the upstream modeling files."""
    v, llm = config["vision_config"], config["llm_config"]
    h, vi = v["hidden_size"], v["intermediate_size"]
    grid = v["image_size"] // v["patch_size"]
    names = {
        "vision_model.embeddings.class_embedding": (1, 1, h),
        "vision_model.embeddings.patch_embedding.weight": (h, 3, v["patch_size"], v["patch_size"]),
        "vision_model.embeddings.patch_embedding.bias": (h,),
        "vision_model.embeddings.position_embedding": (1, grid * grid + 1, h),
    }
    for n in range(v["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{n}."
        names |= {p + "attn.qkv.weight": (3 * h, h), p + "attn.proj.weight": (h, h), p + "attn.proj.bias": (h,)}
        names |= {p + "mlp.fc1.weight": (vi, h), p + "mlp.fc1.bias": (vi,), p + "mlp.fc2.weight": (h, vi)}
        names |= {p + "mlp.fc2.bias": (h,), p + "norm1.weight": (h,), p + "norm2.weight": (h,)}
        names |= {p + "ls1": (h,), p + "ls2": (h,)}
        if v["qkv_bias"]:
            names[p + "attn.qkv.bias"] = (3 * h,)
        if v["norm_type"] == "layer_norm":
            names |= {p + "norm1.bias": (h,), p + "norm2.bias": (h,)}
        if v["qk_normalization"]:
            names |= {p + "attn.q_norm.weight": (h,), p + "attn.k_norm.weight": (h,)}
    d = llm["hidden_size"]
    names |= {"mlp1.0.weight": (4 * h,), "mlp1.0.bias": (4 * h,), "mlp1.1.weight": (d, 4 * h)}
    names |= {"mlp1.1.bias": (d,), "mlp1.3.weight": (d, d), "mlp1.3.bias": (d,)}
    names |= _llm_tensors(llm)
    return names


def _llm_tensors(llm: dict) -> dict[str, tuple[int, ...]]:
    d, inter, vocab = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"]
    hd = d // llm["num_attention_heads"]
    q, kv = llm["num_attention_heads"] * hd, llm["num_key_value_heads"] * hd
    internlm = llm["model_type"] == "internlm2"
    names, linears = {}, {}
    for n in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}."
        if internlm:
            linears |= {p + "attention.wqkv": (q + 2 * kv, d), p + "attention.wo": (d, q)}
            linears |= {p + "feed_forward.w1": (inter, d), p + "feed_forward.w3": (inter, d)}
            linears |= {p + "feed_forward.w2": (d, inter)}
            names |= {p + "attention_norm.weight": (d,), p + "ffn_norm.weight": (d,)}
        else:
            linears |= {p + "self_attn.q_proj": (q, d), p + "self_attn.k_proj": (kv, d)}
            linears |= {p + "self_attn.v_proj": (kv, d), p + "self_attn.o_proj": (d, q)}
            linears |= {p + "mlp.gate_proj": (inter, d), p + "mlp.up_proj": (inter, d), p + "mlp.down_proj": (d, inter)}
            names |= {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,)}
            names |= {p + "self_attn.v_proj.bias": (kv,)}
            names |= {p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)}
    awq = llm.get("quantization_config")
    for base, (out, inp) in linears.items():
        if awq:
            g = awq["group_size"]
            names |= {base + ".qweight": (inp, out // 8), base + ".qzeros": (inp // g, out // 8)}
            names[base + ".scales"] = (inp // g, out)
        else:
            names[base + ".weight"] = (out, inp)
    embed, head = ("tok_embeddings", "output") if internlm else ("embed_tokens", "lm_head")
    names |= {f"language_model.model.{embed}.weight": (vocab, d), f"language_model.{head}.weight": (vocab, d)}
    names["language_model.model.norm.weight"] = (d,)
    return names


def stored_tensors(folder) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            shapes |= {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return shapes


def without(section: dict, keys: set[str]) -> dict:
    return {k: v for k, v in section.items() if k not in keys}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_twin(request, tmp_path_factory):
    return request.param, tiny_twin(request.param, tmp_path_factory)


def test_tensor_names_and_shapes_are_the_original_layout(arch_twin):
    architecture, folder = arch_twin
    config = json.loads((folder / "config.json").read_text())
    stored, expected = stored_tensors(folder), expected_tensors(config)
    assert sorted(set(expected) - set(stored)) == [] and sorted(set(stored) - set(expected)) == []
    assert stored == expected


def test_config_is_the_reference_except_shrunk_sizes(arch_twin):
    architecture, folder = arch_twin
    config, ref = json.loads((folder / "config.json").read_text()), reference.load_reference_config(architecture)
    assert config.pop(twin.TWIN_KEY) == {"architecture": architecture, "seed": 0, "full_size": False}
    llm, ref_llm = config.pop("llm_config"), ref.pop("llm_config")
    vision, ref_vision = config.pop("vision_config"), ref.pop("vision_config")
    assert config == ref
    assert without(llm, SHRUNK_LLM) == without(ref_llm, SHRUNK_LLM)
    assert without(vision, SHRUNK_VISION) == without(ref_vision, SHRUNK_VISION)
    assert set(llm) == set(ref_llm) and set(vision) == set(ref_vision)
    head_dim = llm["hidden_size"] // llm["num_attention_heads"]
    assert head_dim >= 32 and llm["num_attention_heads"] // llm["num_key_value_heads"] > 1
    assert llm["num_key_value_heads"] >= 2  # InternLM2's per-KV-group wqkv packing is exercised
    tokens_per_tile = (vision["image_size"] // vision["patch_size"]) ** 2 * config["downsample_ratio"] ** 2
    assert tokens_per_tile == 256
    assert llm["tie_word_embeddings"] is False and config["architectures"] == ["InternVLChatModel"]


def test_files_are_the_checkpoint_files(arch_twin):
    architecture, folder = arch_twin
    for name, source in reference.reference_files(architecture).items():
        if name != "config.json":
            assert (folder / name).read_bytes() == source.read_bytes(), name
    tokenizer_files = {"qwen2": {"vocab.json", "merges.txt"}, "internlm2": {"tokenizer.model"}}
    assert tokenizer_files[reference.backbone_kind(architecture)] <= {p.name for p in folder.iterdir()}


def test_tokenizer_loads_and_knows_img_context(arch_twin):
    architecture, folder = arch_twin
    tokenizer = load_tokenizer(folder)
    expected = IMG_CONTEXT[reference.backbone_kind(architecture)]
    assert tokenizer("<IMG_CONTEXT>", add_special_tokens=False).input_ids == [expected]
    assert tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>") == expected


def test_weights_are_seeded_and_deterministic(tmp_path):
    a = twin.write_twin("InternVL2_5-2B", tmp_path / "a", seed=3)
    b = twin.write_twin("InternVL2_5-2B", tmp_path / "b", seed=3)
    c = twin.write_twin("InternVL2_5-2B", tmp_path / "c", seed=4)
    name = "language_model.model.layers.0.attention.wqkv.weight"
    read = lambda d: safe_open(str(d / "model.safetensors"), "pt").get_tensor(name)  # noqa: E731
    assert read(a).equal(read(b)) and not read(a).equal(read(c))
    assert read(a).dtype.is_floating_point and 0.015 < read(a).float().std() < 0.025


def test_norms_and_layer_scales_follow_the_original_init(tmp_path_factory):
    folder = tiny_twin("InternVL2_5-26B", tmp_path_factory)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        ls1 = f.get_tensor("vision_model.encoder.layers.0.ls1")
        assert ls1.eq(torch.tensor(0.1, dtype=ls1.dtype)).all()  # InternViT-6B initializer_factor
        assert f.get_tensor("vision_model.encoder.layers.0.norm1.weight").float().eq(1).all()
        assert f.get_tensor("mlp1.0.bias").float().eq(0).all()


def test_sharded_twin_has_an_index(tmp_path, monkeypatch):
    monkeypatch.setattr(twin, "MAX_SHARD_BYTES", 20 * 1000**2)
    folder = twin.write_twin("InternVL2_5-8B-AWQ", tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    files = sorted({*index["weight_map"].values()})
    assert len(files) > 1 and files == sorted(p.name for p in folder.glob("*.safetensors"))
    for name, file in index["weight_map"].items():
        with safe_open(str(folder / file), "pt") as f:
            assert name in f.keys()
    config = json.loads((folder / "config.json").read_text())
    assert set(index["weight_map"]) == set(expected_tensors(config))


def test_the_twin_verb_uses_the_registry_spec(tmp_path):
    from typer.testing import CliRunner

    from vlserve.cli import app

    result = CliRunner().invoke(app, ["twin", "-s", "8", "-f", "AWQ", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t" / "config.json").read_text())[twin.TWIN_KEY]["architecture"] == "InternVL2_5-8B-AWQ"
    refused = CliRunner().invoke(app, ["twin", "-s", "3", "-f", "pytorch", str(tmp_path / "u")])
    assert refused.exit_code == 1 and "sizes are 1, 2, 4, 8, 26, 38, 78" in refused.output


def test_reference_accessors():
    assert len(ARCHITECTURES) == 24  # InternVL2.5's 12 and InternVL3's 12
    assert sum(a.startswith("InternVL3-") for a in ARCHITECTURES) == 12
    assert [reference.backbone_kind(a) for a in ("InternVL2_5-1B", "InternVL2_5-2B")] == ["qwen2", "internlm2"]
    assert [reference.vision_kind(a) for a in ("InternVL2_5-8B", "InternVL2_5-26B-AWQ")] == ["300m", "6b"]


@pytest.mark.slow
def test_full_size_twin(tmp_path):
    folder = twin.write_twin("InternVL2_5-1B", tmp_path, full_size=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["llm_config"]["hidden_size"] == 896
    assert stored_tensors(folder) == expected_tensors(config)
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert 1.8e9 < total < 2.0e9  # HF lists 1.88 GB for InternVL2_5-1B
