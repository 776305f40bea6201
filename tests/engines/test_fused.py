"""Sibling projections fused into one product (fused.py): each member still returns its own product, whatever order
or inputs it is called with; the shared result is let go once every member has read it; only plain linears with the
same input size, dtype and bias presence are fused; a fused model gives the logits of the plain one."""

from __future__ import annotations

import copy

import pytest
import torch

from vlserve.engines.transformers_engine import fused


class Attention(torch.nn.Module):
    def __init__(self, bias: bool = True, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.q_proj = torch.nn.Linear(32, 48, bias=bias, dtype=dtype)
        self.k_proj = torch.nn.Linear(32, 16, bias=bias, dtype=dtype)
        self.v_proj = torch.nn.Linear(32, 16, bias=bias, dtype=dtype)


def _pair(bias: bool = True) -> tuple[Attention, Attention]:
    torch.manual_seed(0)
    plain = Attention(bias)
    return plain, copy.deepcopy(plain)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 32), (3, 1, 32), (2, 7, 32)])
def test_members_return_their_own_products(bias, shape):
    plain, model = _pair(bias)
    assert fused.fuse_siblings(model) == 1
    x = torch.randn(*shape)
    for name in ("q_proj", "k_proj", "v_proj"):  # the order the attention layers call them in
        got, expected = getattr(model, name)(x), getattr(plain, name)(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)


def test_any_order_and_other_inputs_stay_correct():
    plain, model = _pair()
    fused.fuse_siblings(model)
    x, other = torch.randn(2, 32), torch.randn(2, 32)
    calls = [("k_proj", x), ("q_proj", other), ("v_proj", x), ("q_proj", x), ("k_proj", other), ("v_proj", other)]
    for name, inp in calls:
        torch.testing.assert_close(getattr(model, name)(inp), getattr(plain, name)(inp))


def test_the_shared_result_is_let_go_after_the_last_member():
    _, model = _pair()
    fused.fuse_siblings(model)
    x = torch.randn(4, 32)
    model.q_proj(x)
    model.k_proj(x)
    shared = model.q_proj.shared
    assert shared.latest.input is x and shared.latest.output is not None
    model.v_proj(x)
    assert shared.latest.input is None and shared.latest.output is None  # no activations held between forwards


def test_output_views_reshape_like_the_model_code_does():
    _, model = _pair()
    fused.fuse_siblings(model)
    x = torch.randn(2, 5, 32)
    q = model.q_proj(x).view(2, 5, -1, 16).transpose(1, 2)  # what transformers' attention does with it
    assert q.shape == (2, 3, 5, 16)


def test_only_matching_plain_linears_are_fused():
    class Quantized(torch.nn.Linear):  # stands for bitsandbytes' Linear8bitLt / Linear4bit
        pass

    mixed_bias = Attention()
    mixed_bias.v_proj = torch.nn.Linear(32, 16, bias=False)
    quantized = Attention()
    quantized.k_proj = Quantized(32, 16)
    other_input = Attention()
    other_input.v_proj = torch.nn.Linear(24, 16)
    mlp = torch.nn.Module()
    mlp.gate_proj, mlp.up_proj = torch.nn.Linear(32, 64, bias=False), torch.nn.Linear(32, 64, bias=False)
    parent = torch.nn.ModuleList([mixed_bias, quantized, other_input, mlp])
    assert fused.fuse_siblings(parent) == 1
    assert isinstance(mlp.gate_proj, fused.Slice) and isinstance(mlp.up_proj, fused.Slice)
    for module in (mixed_bias, quantized, other_input):
        assert not any(isinstance(m, fused.Slice) for m in module.children())


@pytest.mark.parametrize(("architecture", "dtype"), [
    ("InternVL2_5-1B", torch.float32), ("InternVL2_5-1B", torch.bfloat16), ("InternVL2_5-2B", torch.float32),
    ("InternVL2_5-26B", torch.bfloat16),  # the 6B-style vision (q/k norms after the projections)
])  # fmt: skip
def test_fused_model_gives_the_same_logits(twin_dir, architecture, dtype):
    from vlserve.families.internvl2_5 import loader

    folder = twin_dir(architecture)
    plain = loader.load_model(folder, dtype=dtype)
    model = loader.load_model(folder, dtype=dtype)
    layers = plain.config.get_text_config().num_hidden_layers
    assert fused.fuse_siblings(model) >= 2 * layers  # q/k/v and gate/up of every decoder layer (+ the vision's q/k/v)
    ids = torch.tensor([[1, 2, 3] + [plain.config.image_token_id] * 256 + [4, 5]])
    pixels = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.inference_mode():
        expected = plain(input_ids=ids, pixel_values=pixels).logits.float()
        got = model(input_ids=ids, pixel_values=pixels).logits.float()
    tolerance = 1e-4 if dtype == torch.float32 else 0.02
    assert (got - expected).abs().max().item() <= tolerance * expected.abs().max().item()
