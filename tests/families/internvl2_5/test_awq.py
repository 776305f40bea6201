"""AWQ GEMM packing: layout checked against a hand-packed word and a scalar reader, error ≤ half a step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tests.families.internvl2_5.twins_cache import tiny_twin
from vlserve.families.internvl2_5 import reference
from vlserve.families.internvl2_5.awq import pack_awq, unpack_awq
from vlserve.families.internvl2_5.twin import initial_weight

AWQ_ARCHITECTURES = [a for a in reference.architectures() if a.endswith("-AWQ")]


def half_step_bound(scales: torch.Tensor, group_size: int = 128) -> torch.Tensor:
    """Half a quantisation step per weight [out, in], with slack for the fp16 rounding of the scale."""
    return scales.float().repeat_interleave(group_size, dim=0).T * 0.5 * 1.01 + 1e-7


def scalar_dequantize(qweight, qzeros, scales, group_size=128):
    """Reads the format as documented by AutoAWQ's WQLinear_GEMM: nibble i of word k holds column 8k+order[i]."""
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    rows, words = qweight.shape
    out = torch.zeros(words * 8, rows)
    for r in range(rows):
        for k in range(words):
            w, z = int(qweight[r, k]) & 0xFFFFFFFF, int(qzeros[r // group_size, k]) & 0xFFFFFFFF
            for i in range(8):
                col = 8 * k + order[i]
                q, zero = (w >> (4 * i)) & 0xF, (z >> (4 * i)) & 0xF
                out[col, r] = (q - zero) * float(scales[r // group_size, col])
    return out


def test_nibble_order_of_one_word():
    # Columns 0..7 of one group quantised to the values 0..7: the word must read 0x75316420 in AWQ order.
    scale = 0.01
    weight = (torch.arange(8.0) * scale)[:, None].expand(8, 128).contiguous()  # output row o = o steps
    weight[:, 0] = 0.0  # pin each group's minimum at 0 → zero point 0
    weight[:, 1] = 15 * scale  # and its maximum at 15 steps → scale 0.01
    qweight, qzeros, scales = pack_awq(weight)
    assert qweight.dtype == torch.int32 and qweight.shape == (128, 1)
    assert int(qweight[5, 0]) & 0xFFFFFFFF == 0x75316420
    assert int(qzeros[0, 0]) == 0 and torch.allclose(scales.float(), torch.full((1, 8), scale), rtol=1e-3)


def test_vectorised_unpack_matches_the_scalar_reader():
    weight = torch.randn(16, 256) * 0.05
    packed = pack_awq(weight)
    assert torch.allclose(unpack_awq(*packed), scalar_dequantize(*packed), atol=1e-7)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(64, 384) * 0.02,
        lambda: torch.rand(32, 256) + 0.5,  # every group positive: range widened to include 0
        lambda: -torch.rand(32, 256) * 3,  # every group negative
        lambda: torch.zeros(8, 128),
        lambda: torch.randn(24, 128) * torch.logspace(-4, 1, 24)[:, None],
    ],
)
def test_round_trip_error_is_at_most_half_a_step(make):
    weight = make()
    qweight, qzeros, scales = pack_awq(weight)
    out, inp = weight.shape
    assert (qweight.shape, qzeros.shape, scales.shape) == ((inp, out // 8), (inp // 128, out // 8), (inp // 128, out))
    assert scales.dtype == torch.float16 and qzeros.dtype == torch.int32
    error = (unpack_awq(qweight, qzeros, scales) - weight).abs()
    assert (error <= half_step_bound(scales)).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="in_features"):
        pack_awq(torch.zeros(8, 100))
    with pytest.raises(ValueError, match="out_features"):
        pack_awq(torch.zeros(12, 128))


@pytest.mark.parametrize("architecture", AWQ_ARCHITECTURES)
def test_awq_twin_dequantizes_to_its_intended_weights(architecture, tmp_path_factory):
    folder = tiny_twin(architecture, tmp_path_factory)
    config = json.loads((folder / "config.json").read_text())
    quant = config["llm_config"]["quantization_config"]
    assert quant == {"bits": 4, "group_size": 128, "quant_method": "awq", "version": "gemm", "zero_point": True}
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        bases = sorted(k.removesuffix(".qweight") for k in f.keys() if k.endswith(".qweight"))
        assert bases and all(b.startswith("language_model.model.layers.") for b in bases)
        assert not any(k.startswith(("vision_model", "mlp1")) and k.endswith(("qweight", "scales")) for k in f.keys())
        for base in bases:
            qweight, qzeros, scales = (f.get_tensor(f"{base}.{part}") for part in ("qweight", "qzeros", "scales"))
            assert qweight.dtype == torch.int32 and scales.dtype == torch.float16
            intended = initial_weight(f"{base}.weight", (scales.shape[1], qweight.shape[0]), seed=0)
            error = (unpack_awq(qweight, qzeros, scales) - intended).abs()
            assert (error <= half_step_bound(scales)).all(), base
        assert f.get_tensor("language_model.model.norm.weight").dtype == torch.bfloat16


def test_awq_twin_shares_weights_with_its_base_twin(tmp_path_factory):
    base = tiny_twin("InternVL2_5-4B", tmp_path_factory)
    awq = tiny_twin("InternVL2_5-4B-AWQ", tmp_path_factory)
    name = "language_model.model.layers.1.mlp.down_proj"
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        weight = f.get_tensor(f"{name}.weight").float()
        embed = f.get_tensor("language_model.model.embed_tokens.weight")
    with safe_open(str(awq / "model.safetensors"), "pt") as f:
        scales = f.get_tensor(f"{name}.scales")
        dequant = unpack_awq(f.get_tensor(f"{name}.qweight"), f.get_tensor(f"{name}.qzeros"), scales)
        assert f.get_tensor("language_model.model.embed_tokens.weight").equal(embed)
    bf16_slack = weight.abs() * 2**-8
    assert ((dequant - weight).abs() <= half_step_bound(scales) + bf16_slack).all()
