"""oneDNN-packed linears (CPU, bfloat16): the same products as F.linear, only plain nn.Linear layers are packed, and
a packed model gives the logits of the unpacked one."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine import onednn

pytestmark = pytest.mark.skipif(not onednn.available(torch.bfloat16), reason="oneDNN bf16 linears unavailable")


@pytest.mark.parametrize("shape", [(1, 96), (8, 96), (2, 5, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160, bias=bias, dtype=torch.bfloat16)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    with torch.inference_mode():
        got, expected = onednn.PackedLinear(linear)(x), linear(x)
    assert got.shape == expected.shape and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_only_plain_linears_are_packed():
    class Quantized(torch.nn.Linear):  # stands for bitsandbytes' Linear8bitLt / Linear4bit
        pass

    model = torch.nn.Sequential(torch.nn.Linear(8, 8, dtype=torch.bfloat16), torch.nn.LayerNorm(8),
                                Quantized(8, 8, dtype=torch.bfloat16))  # fmt: skip
    assert onednn.pack_linears(model) == 1
    assert isinstance(model[0], onednn.PackedLinear) and type(model[2]) is Quantized
    assert not onednn.available(torch.float32)  # float32 models keep F.linear


def test_packed_model_gives_the_same_logits(twin_dir):
    from vlserve.families.internvl2_5 import loader

    folder = twin_dir("InternVL2_5-1B")
    plain = loader.load_model(folder, dtype=torch.bfloat16)
    packed = loader.load_model(folder, dtype=torch.bfloat16)
    count = onednn.pack_linears(packed)
    assert count == sum(type(m) is torch.nn.Linear for m in plain.modules()) and count > 0
    ids = torch.tensor([[1, 2, 3] + [plain.config.image_token_id] * 256 + [4, 5]])
    pixels = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with torch.inference_mode():
        expected = plain(input_ids=ids, pixel_values=pixels).logits.float()
        got = packed(input_ids=ids, pixel_values=pixels).logits.float()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 0.02 * scale
