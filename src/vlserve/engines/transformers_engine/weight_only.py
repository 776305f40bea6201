"""`8-bit` and `4-bit` on CPU: the decoder's linear layers quantized at load from the 16-bit checkpoint onto fast
CPU kernels (`cpu_quant auto`, the default, or `weight_only`):

* `8-bit`: int8 weights, one scale per output channel (int8.py). `cpu_quant auto`: our int8 x int8 kernel on CPUs
  with AVX512-VNNI or AVX2 (vnni.py: activations quantized to int8 per group of 32, as llama.cpp's q8_0), else
  ZenDNN's dynamic int8 product on AMD CPUs with AVX512-VNNI (activations quantized per row, as LLM.int8 does but
  without its 16-bit outlier columns), else PyTorch's weight-only int8 kernel; `cpu_quant weight_only`: the
  weight-only kernel everywhere. Quality on the 1B twin (logits' error against float32, mean of 3 prompts; bf16
  alone 0.0046): bitsandbytes 0.0103, weight-only 0.0113, our kernel 0.0112, ZenDNN dynamic 0.0123
  (tests/engines/test_weight_only.py holds these).
* `4-bit`: asymmetric int4 groups of `int4_group_size` input features (int4.py). `cpu_quant auto`: our int4 x int8
  kernel on the same CPUs (activations quantized to int8 per group), else PyTorch's int4 kernel
  (`aten._weight_int4pack_mm_for_cpu`), which `cpu_quant weight_only` uses everywhere; where the CPU multiplies
  bfloat16 natively, prompt chunks multiply a 16-bit copy held while prefills run (`int4.PrefillWidening`, launch
  option `int4_prefill_16bit`).

Why these: measured on the 2-core AMD EPYC machines, the 1B's 24 decoder layers, weights streamed from memory
(tables in int8.py and vnni.py). With AVX512, at one row bfloat16 takes 31.8 ms, int8 on ZenDNN 11.5 ms, int4 on
PyTorch's kernel 10.5-11.9 ms and on ours 6.8-7.6 ms. With AVX2 only (no native bfloat16, no ZenDNN int8),
bfloat16 takes 38 ms, our int8 13 ms and int4 10 ms, PyTorch's int8 / int4 28-35 ms. bitsandbytes' LLM.int8 /
NF4 CPU paths are ~8x / ~3x slower than bfloat16 (the issue's figures). Every kernel used is batch-invariant below
int8.PREFILL_ROWS rows (ours at every size: a row's result does not depend on the other rows; tests check 1/2/4/9
rows), as the bfloat16 path is.

q/k/v and gate/up are fused first (fused.py), then quantized as one weight each, as in the bfloat16 path. The
lm_head can be quantized to int8 too (`quantize_lm_head`, off by default: the logits then carry int8 error); the
embedding stays 16-bit (decode reads one row of it). bitsandbytes stays selectable on CPU (`cpu_quant
bitsandbytes`) and remains the GPU path. Model-family neutral.
"""

from __future__ import annotations

import functools
import logging

import torch

from vlserve.engines.transformers_engine import fused, int4
from vlserve.engines.transformers_engine.cpu_linears import replace_linears
from vlserve.engines.transformers_engine.int8 import Int8Linear

log = logging.getLogger(__name__)

DEFAULT_GROUP_SIZE = 64  # int4: logits error below NF4's on the same weights (tests), ~5% slower than g128
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8)  # int4 groups: the range shrink with the least squared error, per group


def quantize_decoder(layers: torch.nn.Module, quantization: str, *, group_size: int = DEFAULT_GROUP_SIZE,
                     dynamic: bool = True) -> int:  # fmt: skip
    """Fuse the siblings under `layers` and replace every plain CPU nn.Linear there by an int8 (`8-bit`) or int4
    (`4-bit`) layer; `dynamic`: int8 may quantize activations (ZenDNN). Returns how many were replaced."""
    fused.fuse_siblings(layers)
    make = functools.partial(Int8Linear.from_linear, dynamic=dynamic) if quantization == "8-bit" else \
        _int4_maker(group_size, dynamic)  # fmt: skip
    return replace_linears(layers, make)


def quantize_head(lm_head: torch.nn.Module, dynamic: bool = True) -> torch.nn.Module:
    """The lm_head as int8 per output channel (a plain CPU nn.Linear only; anything else is returned as is)."""
    if type(lm_head) is torch.nn.Linear and lm_head.weight.device.type == "cpu":
        return Int8Linear.from_linear(lm_head, dynamic=dynamic)
    return lm_head


def _int4_maker(group_size: int, dynamic: bool):
    def make(linear: torch.nn.Linear) -> torch.nn.Module:
        out_features, in_features = linear.weight.shape
        size = next((g for g in (group_size, 32) if int4.supported(out_features, in_features, g, "cpu")), None)
        if size is None:  # no int4 layout for this shape: int8 keeps it quantized and exact to int8's error
            log.info("int4 kernels do not take a [%d, %d] layer; it is int8", out_features, in_features)
            return Int8Linear.from_linear(linear, dynamic=dynamic)
        return int4.Int4Linear.quantize(linear.weight.data, group_size=size, bias=linear.bias,
                                        clip_ratios=CLIP_RATIOS, dynamic=dynamic)  # fmt: skip

    return make
