"""The CPU linear libraries (bfloat16): oneDNN's packed and ZenDNN's reordered layers and the float32-prefill layer
give F.linear's product (the last one: float32's for products larger than a decode step), a row's result does not
depend on the rows multiplied with it, only plain nn.Linear layers are replaced, a model on any gives the logits of
the plain one, and `cpu_gemm` picks a usable library or says why it cannot."""

from __future__ import annotations

import pytest
import torch

from vlserve.engines.transformers_engine import cpu_linears, float32_prefill, onednn, zendnn
from vlserve.errors import InvalidRequest

BF16 = torch.bfloat16
NEEDS_ONEDNN = pytest.mark.skipif(not onednn.available(BF16), reason="torch without oneDNN bf16")
NEEDS_ZENDNN = pytest.mark.skipif(not zendnn.available(BF16), reason="ZenDNN needs an AMD CPU and zentorch for this torch")
LIBRARIES = [pytest.param(onednn.PackedLinear, marks=NEEDS_ONEDNN, id="onednn"),
             pytest.param(zendnn.ZenLinear, marks=NEEDS_ZENDNN, id="zendnn"),
             pytest.param(float32_prefill.Float32PrefillLinear, id="float32")]  # runs on any CPU  # fmt: skip


@pytest.mark.parametrize("make", LIBRARIES)
@pytest.mark.parametrize("shape", [(1, 96), (8, 96), (2, 5, 96), (1, 1, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_product_equals_f_linear(make, shape, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160, bias=bias, dtype=BF16)
    x = torch.randn(*shape, dtype=BF16)
    with torch.inference_mode():
        got, expected = make(linear)(x), linear(x)
    assert got.shape == expected.shape and got.dtype == BF16
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("make", LIBRARIES)
@pytest.mark.parametrize("features", [(96, 160), (896, 9728), (1024, 4096)])  # the last two: ZenDNN's one-row kernel differs
def test_a_rows_result_does_not_depend_on_the_batch(make, features):
    torch.manual_seed(0)
    layer = make(torch.nn.Linear(*features, dtype=BF16))
    x = torch.randn(9, features[0], dtype=BF16)
    with torch.inference_mode():
        batched = layer(x)
        for rows in (1, 2, 4):
            assert torch.equal(layer(x[:rows]), batched[:rows])
        assert torch.equal(layer(x[None, 3:4]), batched[None, 3:4])


@pytest.mark.parametrize("shape", [(128, 96), (2, 70, 96), (300, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_prefill_sized_products_are_float32s_rounded_to_bfloat16(monkeypatch, shape, bias):
    """Prompt-chunk sizes: the float32 product of the bfloat16 values, made in slices of output features (here 7
    slices of 24 and one of 4), rounded once to bfloat16."""
    monkeypatch.setattr(float32_prefill, "SLICE_BYTES", 24 * 4 * 96)
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 172, bias=bias, dtype=BF16)
    layer = float32_prefill.Float32PrefillLinear(linear)
    assert layer.slice_rows == 24
    x = torch.randn(*shape, dtype=BF16)
    with torch.inference_mode():
        got = layer(x)
        bias32 = None if linear.bias is None else linear.bias.float()
        expected = torch.nn.functional.linear(x.float(), linear.weight.float(), bias32).to(BF16)
    assert got.shape == expected.shape and got.dtype == BF16
    torch.testing.assert_close(got, expected, rtol=0.008, atol=1e-5)  # at most a last-bit rounding difference


@pytest.mark.parametrize("decode_rows", [1, 8, 40])
def test_decode_sized_products_stay_bfloat16s(decode_rows):
    """Every product of up to max_batch_size rows (and of fewer than MIN_ROWS) is torch's bfloat16 product."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160, dtype=BF16)
    layer = float32_prefill.Float32PrefillLinear(linear, decode_rows=decode_rows)
    bf16_rows = max(float32_prefill.MIN_ROWS - 1, decode_rows)
    assert layer.rows_from == bf16_rows + 1
    x = torch.randn(bf16_rows + 1, 96, dtype=BF16)
    with torch.inference_mode():
        assert torch.equal(layer(x[:bf16_rows]), linear(x[:bf16_rows]))
        widened = torch.nn.functional.linear(x.float(), linear.weight.float(), linear.bias.float()).to(BF16)
        torch.testing.assert_close(layer(x), widened, rtol=0.008, atol=1e-5)


@NEEDS_ZENDNN
def test_zendnn_keeps_one_copy_of_the_weights():
    """Given plain weights zentorch would cache a reordered copy of each; handed reordered ones, it adds none."""

    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    layer = zendnn.ZenLinear(torch.nn.Linear(8192, 8192, bias=False, dtype=BF16))  # 128 MiB of weights
    assert layer.packed.shape == (8192, 8192) and layer.packed.dtype == BF16
    before = resident()
    with torch.inference_mode():
        for rows in (1, 2, 8):
            layer(torch.randn(rows, 8192, dtype=BF16))
    assert resident() - before < 32 * 2**20


def test_only_plain_linears_are_replaced():
    class Quantized(torch.nn.Linear):  # stands for bitsandbytes' Linear8bitLt / Linear4bit
        pass

    model = torch.nn.Sequential(torch.nn.Linear(8, 8, dtype=BF16), torch.nn.LayerNorm(8), Quantized(8, 8, dtype=BF16))
    assert cpu_linears.replace_linears(model, lambda linear: torch.nn.Identity()) == 1
    assert type(model[0]) is torch.nn.Identity and type(model[2]) is Quantized


def test_cpu_gemm_picks_a_usable_library_or_says_why_not():
    usable = [name for name, module in (("zendnn", zendnn), ("onednn", onednn), ("float32", float32_prefill))
              if module.available(BF16)]  # fmt: skip
    assert cpu_linears.pick(BF16) == (usable + ["torch"])[0]
    assert cpu_linears.pick(torch.float32) == "torch"  # float32 models keep F.linear
    assert cpu_linears.pick(BF16, "torch") == "torch"
    if float32_prefill.available(BF16):
        assert cpu_linears.pick(BF16, "float32") == "float32"
    else:
        with pytest.raises(InvalidRequest, match="cpu_gemm float32 is not usable here"):
            cpu_linears.pick(BF16, "float32")
    with pytest.raises(InvalidRequest, match="cpu_gemm zendnn is not usable here") as refused:
        cpu_linears.pick(torch.float32, "zendnn")
    assert refused.value.param == "cpu_gemm"


@pytest.mark.parametrize("library", [pytest.param("onednn", marks=NEEDS_ONEDNN), pytest.param("zendnn", marks=NEEDS_ZENDNN),
                                     "float32"])  # fmt: skip
def test_a_prepared_model_gives_the_plain_models_logits(twin_dir, library):
    from vlserve.families.internvl2_5 import loader

    folder = twin_dir("InternVL2_5-1B")
    plain = loader.load_model(folder, dtype=BF16)
    prepared = loader.load_model(folder, dtype=BF16)
    cpu_linears.prepare(prepared, library, decode_rows=8)  # usable here: the marks skip the others
    kinds = {type(m) for m in prepared.modules()}
    layers = {"onednn": onednn.PackedLinear, "zendnn": zendnn.ZenLinear, "float32": float32_prefill.Float32PrefillLinear}
    assert torch.nn.Linear not in kinds and layers[library] in kinds
    ids = torch.tensor([[1, 2, 3] + [plain.config.image_token_id] * 256 + [4, 5]])
    pixels = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(0)).to(BF16)
    with torch.inference_mode():
        expected = plain(input_ids=ids, pixel_values=pixels).logits.float()
        got = prepared(input_ids=ids, pixel_values=pixels).logits.float()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 0.02 * scale
