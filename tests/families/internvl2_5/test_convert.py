"""Loading ORIGINAL InternVL2.5 checkpoints into transformers' native InternVL: config translation, weight mapping
checked against computations written directly from the original tensors, loud failures, AWQ and -hf formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from vlserve.families.checkpoints import CheckpointMismatch, checkpoint_files, iter_tensors
from vlserve.families.internvl2_5 import convert
from vlserve.families.internvl2_5.reference import architectures, load_reference_config

# parameter counts implied by the configs (reference FACTS.md), in billions, 3 decimals
PARAMS = {"1B": 0.938, "2B": 2.206, "4B": 3.713, "8B": 8.075, "26B": 25.514, "38B": 38.388, "78B": 78.408}


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    written: dict[str, Path] = {}

    def make(architecture: str) -> Path:
        if architecture not in written:
            from vlserve.families.internvl2_5.twin import write_twin

            written[architecture] = write_twin(architecture, tmp_path_factory.mktemp(architecture))
        return written[architecture]

    return make


def original_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    return {name: tensor.float() for name, tensor in iter_tensors(model_dir)}


def load(model_dir: Path):
    return convert.load_model(model_dir, dtype=torch.float32)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("architecture", architectures())
def test_config_translation_matches_the_architecture(architecture):
    raw = load_reference_config(architecture)
    config = convert.translate_config(raw, 151667)
    text, vision, llm = config.text_config, config.vision_config, raw["llm_config"]
    internlm2 = llm["architectures"][0] == "InternLM2ForCausalLM"
    assert type(text).__name__ == ("LlamaConfig" if internlm2 else "Qwen2Config")
    assert text.tie_word_embeddings is False and config.tie_word_embeddings is False
    assert text.rope_parameters["rope_theta"] == float(llm["rope_theta"])
    dynamic = internlm2 or architecture.startswith("InternVL3-")  # InternVL3's Qwen2.5: dynamic, factor 2
    assert text.rope_parameters["rope_type"] == ("dynamic" if dynamic else "default")
    assert text.rms_norm_eps == llm["rms_norm_eps"] and text.vocab_size == llm["vocab_size"]
    assert not hasattr(text, "auto_map") and not hasattr(text, "quantization_config")  # whitelist: no junk keys
    six_b = raw["vision_config"]["norm_type"] == "rms_norm"
    assert (vision.norm_type, vision.use_qk_norm, vision.attention_bias) == (
        ("rms_norm", True, False) if six_b else ("layer_norm", False, True)
    )
    assert (config.downsample_ratio, config.vision_feature_layer, config.image_seq_length) == (0.5, -1, 256)
    model = convert.build_empty(config, torch.bfloat16)  # meta device: no memory
    size = architecture.split("-")[1]
    if architecture.startswith("InternVL2_5-"):  # the model card's counts (InternVL3's configs are partly rebuilt)
        assert round(sum(p.numel() for p in model.parameters()) / 1e9, 3) == PARAMS[size]


# ---------------------------------------------------------------- mapping, checked against the original math


def test_internlm2_wqkv_split_matches_the_packed_projection(twin):
    """InternLM2 computes qkv = x @ wqkv.T, viewed as "b q (h gs d) -> b q h gs d"; q = [:gs-2], k = -2, v = -1."""
    model_dir = twin("InternVL2_5-2B")
    model, packed = load(model_dir), original_tensors(model_dir)
    text = model.config.text_config
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim, gs = text.hidden_size // heads, 2 + heads // kv_heads
    x = torch.randn(2, 5, text.hidden_size)
    for index, layer in enumerate(model.model.language_model.layers):
        qkv = x @ packed[f"language_model.model.layers.{index}.attention.wqkv.weight"].T
        qkv = qkv.view(2, 5, kv_heads, gs, head_dim)
        attn = layer.self_attn
        torch.testing.assert_close(attn.q_proj(x).view(2, 5, kv_heads, gs - 2, head_dim), qkv[..., : gs - 2, :])
        torch.testing.assert_close(attn.k_proj(x).view(2, 5, kv_heads, head_dim), qkv[..., -2, :])
        torch.testing.assert_close(attn.v_proj(x).view(2, 5, kv_heads, head_dim), qkv[..., -1, :])
        w = packed[f"language_model.model.layers.{index}.attention.wo.weight"]
        torch.testing.assert_close(attn.o_proj.weight, w)


def _internvit_attention(x, tensors, prefix, heads, qk_norm, eps):
    """InternViT's Attention._naive_attn, written from the original tensors."""
    b, n, c = x.shape
    qkv = F.linear(x, tensors[f"{prefix}.qkv.weight"], tensors.get(f"{prefix}.qkv.bias"))
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    if qk_norm:
        def rms(t, weight):
            flat = t.transpose(1, 2).flatten(-2, -1)
            flat = flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + eps) * weight
            return flat.view(b, n, heads, c // heads).transpose(1, 2)

        q, k = rms(q, tensors[f"{prefix}.q_norm.weight"]), rms(k, tensors[f"{prefix}.k_norm.weight"])
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, c)
    return F.linear(out, tensors[f"{prefix}.proj.weight"], tensors[f"{prefix}.proj.bias"])


@pytest.mark.parametrize("architecture", ["InternVL2_5-1B", "InternVL2_5-26B"])
def test_vision_attention_matches_internvit(twin, architecture):
    """300M (qkv bias, LayerNorm) and 6B style (no qkv bias, q/k RMS norm over the full width)."""
    model_dir = twin(architecture)
    model, tensors = load(model_dir), original_tensors(model_dir)
    vision = model.config.vision_config
    x = torch.randn(2, 7, vision.hidden_size)
    for index, layer in enumerate(model.model.vision_tower.encoder.layer):
        expected = _internvit_attention(x, tensors, f"vision_model.encoder.layers.{index}.attn",
                                        vision.num_attention_heads, vision.use_qk_norm, vision.layer_norm_eps)  # fmt: skip
        torch.testing.assert_close(layer.attention(x)[0], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.lambda_1, tensors[f"vision_model.encoder.layers.{index}.ls1"])


def test_image_features_match_internvl_pixel_shuffle_and_mlp1(twin):
    """InternVL's extract_feature: drop CLS, pixel_shuffle (v2, ratio 0.5), then mlp1 = LN, Linear, GELU, Linear."""
    model_dir = twin("InternVL2_5-1B")
    model, t = load(model_dir), original_tensors(model_dir)
    pixels = torch.randn(2, 3, 448, 448)
    with torch.inference_mode():
        vit = model.model.vision_tower(pixel_values=pixels).last_hidden_state[:, 1:, :]
        features = model.model.get_image_features(pixel_values=pixels, vision_feature_layer=-1,
                                                  vision_feature_select_strategy="default").pooler_output  # fmt: skip
    n, tokens, c = vit.shape
    side = int(tokens**0.5)
    x = vit.reshape(n, side, side, c)
    x = x.view(n, side, side // 2, c * 2).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, side // 2, side // 2, c * 4).permute(0, 2, 1, 3).contiguous().reshape(n, -1, c * 4)
    x = F.layer_norm(x, (c * 4,), t["mlp1.0.weight"], t["mlp1.0.bias"])
    x = F.linear(F.gelu(F.linear(x, t["mlp1.1.weight"], t["mlp1.1.bias"])), t["mlp1.3.weight"], t["mlp1.3.bias"])
    assert features.shape == (2, 256, model.config.text_config.hidden_size)
    torch.testing.assert_close(features, x, rtol=1e-4, atol=1e-5)


def test_language_model_names_land_where_they_belong(twin):
    for architecture, embed, head in (
        ("InternVL2_5-1B", "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"),
        ("InternVL2_5-2B", "language_model.model.tok_embeddings.weight", "language_model.output.weight"),
    ):
        model_dir = twin(architecture)
        model, t = load(model_dir), original_tensors(model_dir)
        torch.testing.assert_close(model.get_input_embeddings().weight, t[embed])
        torch.testing.assert_close(model.lm_head.weight, t[head])
        assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)  # untied


# ---------------------------------------------------------------- loud failures


def _rewrite(model_dir: Path, out: Path, edit) -> Path:
    shutil.copytree(model_dir, out)
    for path in checkpoint_files(out):
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        edit(tensors)
        save_file(tensors, str(path))
    return out


def test_missing_weight_fails_loudly(twin, tmp_path):
    gone = "vision_model.encoder.layers.0.attn.qkv.weight"
    broken = _rewrite(twin("InternVL2_5-1B"), tmp_path / "m", lambda t: t.pop(gone, None))
    with pytest.raises(CheckpointMismatch, match=r"missing \(3\).*attention\.q_proj\.weight"):
        load(broken)


def test_unexpected_and_misshaped_weights_fail_loudly(twin, tmp_path):
    def edit(tensors):
        tensors["language_model.model.layers.0.attention.rotary.inv_freq"] = torch.zeros(4)
        tensors["mlp1.1.bias"] = torch.zeros(3)

    broken = _rewrite(twin("InternVL2_5-2B"), tmp_path / "u", edit)
    with pytest.raises(CheckpointMismatch) as info:
        load(broken)
    assert "unexpected (1): language_model.model.layers.0.attention.rotary.inv_freq" in str(info.value)
    assert "shape mismatch (1): model.multi_modal_projector.linear_1.bias" in str(info.value)


# ---------------------------------------------------------------- AWQ and -hf formats


def test_awq_twin_equals_the_model_with_unpacked_weights(twin, tmp_path):
    from vlserve.families.internvl2_5.awq import unpack_awq

    awq_dir = twin("InternVL2_5-8B-AWQ")
    config = json.loads((awq_dir / "config.json").read_text())
    group = config["llm_config"].pop("quantization_config")["group_size"]

    def unpack(tensors):
        for base in [n[: -len(".qweight")] for n in list(tensors) if n.endswith(".qweight")]:
            parts = [tensors.pop(f"{base}.{leaf}") for leaf in ("qweight", "qzeros", "scales")]
            tensors[f"{base}.weight"] = unpack_awq(*parts, group_size=group).contiguous()

    plain_dir = _rewrite(awq_dir, tmp_path / "plain", unpack)
    (plain_dir / "config.json").write_text(json.dumps(config))
    ids = torch.tensor([[1, 92543, 333, 92544] + [92546] * 256 + [92545, 1000, 2000]])
    pixels = torch.randn(1, 3, 448, 448)
    with torch.inference_mode():
        awq_logits = load(awq_dir)(input_ids=ids, pixel_values=pixels).logits
        plain_logits = load(plain_dir)(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(awq_logits, plain_logits, rtol=1e-5, atol=1e-5)
    assert awq_logits.abs().max() > 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])])  # fmt: skip
def test_awq_layers_on_int4_kernels_match_the_dequantized_model(twin, device):
    """With the engine's int4 factory every AWQ layer stays 4-bit (Int4Linear) and the logits match the model whose
    AWQ layers were dequantized at load, within bfloat16 tolerance."""
    from vlserve.engines.transformers_engine.int4 import Int4Linear, factory_for

    awq_dir = twin("InternVL2_5-8B-AWQ")
    place = lambda _name: device
    int4 = convert.load_model(awq_dir, dtype=torch.bfloat16, device_for=place, int4_linear=factory_for(torch.bfloat16))
    plain = convert.load_model(awq_dir, dtype=torch.bfloat16, device_for=place)
    layers = int4.model.language_model.layers
    quantized = [m for m in layers.modules() if isinstance(m, Int4Linear)]
    assert len(quantized) == 7 * len(layers)  # q, k, v, o, gate, up, down of every decoder layer
    assert not any(isinstance(m, Int4Linear) for m in plain.modules())
    ids = torch.tensor([[1, 92543, 333, 92544] + [92546] * 256 + [92545, 1000, 2000]], device=device)
    pixels = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(0)).to(device, torch.bfloat16)
    with torch.inference_mode():
        got = int4(input_ids=ids, pixel_values=pixels).logits.float()
        expected = plain(input_ids=ids, pixel_values=pixels).logits.float()
    scale = expected.abs().max().item()
    assert scale > 0 and (got - expected).abs().max().item() <= 0.05 * scale
    assert (got - expected).abs().mean().item() <= 0.01 * expected.abs().mean().item()


def test_hf_format_loads_with_its_report_checked(twin, tmp_path):
    model_dir = twin("InternVL2_5-1B")
    model = load(model_dir)
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir)
    assert not convert.is_original_format(convert.read_config(hf_dir))
    ids = torch.tensor([[1, 2, 3] + [model.config.image_token_id] * 256 + [4]])
    pixels = torch.randn(1, 3, 448, 448)
    with torch.inference_mode():
        expected = model(input_ids=ids, pixel_values=pixels).logits
        torch.testing.assert_close(load(hf_dir)(input_ids=ids, pixel_values=pixels).logits, expected)
    broken = _rewrite(hf_dir, tmp_path / "hf-broken", lambda t: t.pop(next(n for n in t if "vision_tower" in n)))
    with pytest.raises(CheckpointMismatch, match="missing"):
        load(broken)
