"""Int4Linear on PyTorch's int4 weight-only kernels: equal to the dequantized weight's matmul within bfloat16
tolerance, on CPU here and on CUDA on a GPU machine; shapes the kernels refuse are reported, not mis-run."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine.int4 import Int4Linear, factory_for, supported


def quantized(out_features: int, in_features: int, group: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (out_features, in_features), generator=g, dtype=torch.int32)
    zeros = torch.randint(0, 16, (out_features, in_features // group), generator=g, dtype=torch.int32)
    scales = (torch.rand(out_features, in_features // group, generator=g) * 0.02 + 0.001).half()
    weight = (q - zeros.repeat_interleave(group, 1)).float() * scales.float().repeat_interleave(group, 1)
    return q, zeros, scales, weight


def check_against_dequantized(device: str, out_features=256, in_features=512, group=128, batch=(3,)):
    q, zeros, scales, weight = quantized(out_features, in_features, group)
    bias = torch.nn.Parameter(torch.randn(out_features).to(device, torch.bfloat16), requires_grad=False)
    layer = Int4Linear.from_quantized(q, zeros, scales, group_size=group, device=device, bias=bias)
    x = torch.randn(*batch, in_features, device=device, dtype=torch.bfloat16)
    expected = x.float() @ weight.to(device).T + bias.float()
    got = layer(x)
    assert got.shape == (*batch, out_features) and got.dtype == torch.bfloat16
    # bfloat16 activations, bfloat16 scales and float zeros: a few bf16 ulps of the output's magnitude
    torch.testing.assert_close(got.float(), expected, rtol=0.02, atol=0.02 * expected.abs().max().item())
    assert (got.float() - expected).abs().mean() < 0.005 * expected.abs().mean()


@pytest.mark.parametrize("group", [32, 64, 128, 256])
def test_cpu_kernel_equals_the_dequantized_matmul(group):
    check_against_dequantized("cpu", group=group)


def test_batched_and_single_token_inputs():
    check_against_dequantized("cpu", batch=(2, 5))
    check_against_dequantized("cpu", batch=(1,))


def test_int4_is_a_quarter_of_the_bf16_bytes():
    q, zeros, scales, _ = quantized(512, 1024, 128)
    layer = Int4Linear.from_quantized(q, zeros, scales, group_size=128, device="cpu")
    held = sum(b.numel() * b.element_size() for b in layer.buffers())
    assert held <= 512 * 1024 * 2 / 4 * 1.1  # packed nibbles + bf16 scale/zero per 128 weights


def test_shapes_the_kernels_refuse():
    assert not supported(256, 512, 100, "cpu")  # group size
    assert not supported(250, 512, 128, "cpu")  # out_features % 8
    with pytest.raises(ValueError, match="int4 kernels do not take"):
        Int4Linear.from_quantized(*quantized(256, 512, 128)[:3], group_size=48, device="cpu")
    make = factory_for(torch.bfloat16)
    assert make(*quantized(252, 512, 128)[:3], group_size=128, device="cpu") is None  # caller dequantizes
    assert factory_for(torch.float32) is None  # float32 models keep their precision


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("group", [64, 128])
def test_cuda_kernel_equals_the_dequantized_matmul(group):
    check_against_dequantized("cuda", out_features=1024, in_features=2048, group=group)
    check_against_dequantized("cuda", out_features=1024, in_features=2048, group=group, batch=(1,))
