"""8-bit linear layers for CPU: int8 weights with one scale per output channel (symmetric, absmax / 127), as
bitsandbytes' LLM.int8 holds them, on one of three kernels chosen at load:

* `vnni` (CPUs with AVX512-VNNI or AVX2, bfloat16): our int8 x int8 kernel (vnni.py), which quantizes each
  activation row to int8 per group of 32 values (as llama.cpp's q8_0; finer than ZenDNN's one scale per row, so
  less error) and sums integer products in int32; at every row count (no 16-bit widening for prefills). Where a
  layer's shape does not fit it (output features not a multiple of 16, inputs not of 32: the 151,655-row lm_head
  of `quantize_lm_head`), that layer takes the next kernel.
* `zendnn` (AMD CPUs with zentorch, bfloat16): `zentorch_dynamic_qlinear`, which quantizes each activation row to
  int8 at run time (its own scale per row, so a row's result does not depend on the others) and multiplies on the
  CPU's int8 dot-product units (VNNI). Like LLM.int8 without its outlier columns.
* `torch` (anywhere): `aten._weight_int8pack_mm`, weight-only (activations stay 16-bit); a prefill-sized input
  (PREFILL_ROWS rows or more) is multiplied by the int8 values widened to 16 bit (exact) and the scales applied to
  the product, which costs one pass over the weight (~70 ms for the 1B's decoder) and is much faster than the
  kernel there.

Measured on the 2-core AMD EPYC machine with AVX512 (before the `vnni` kernel), the 1B architecture's 24 decoder
layers (q/k/v and gate/up fused), weights streamed from memory (each layer different, as in a decode step):

| rows | bf16 (ZenDNN) | int8 `zendnn` | int8 `torch` | int4 (int4.py) |
|---|---|---|---|---|
| 1 | 31.8 ms | 11.5 ms | 27.7 ms | 11.9 ms |
| 8 | 32.3 ms | 14.1 ms | 66.2 ms | 37.8 ms |
| 512 | 856 ms | 449 ms | 2,529 ms (kernel) | 2,188 ms (kernel) |

On the 2-core AMD EPYC machine with AVX2 only (no AVX512, so no ZenDNN int8 and no native bfloat16 product), the
same 24 layers: bf16 (torch) 38 ms at 1 row, 280 ms at 8, 4.4 s at 128; `vnni` (AVX2) 12.6-13.5 ms, 40 ms,
0.51 s; `torch` 28-35 ms at 1 row, 87 ms at 8.

A single layer timed alone stays in cache and misleads (the `torch` kernel looks 2x faster than bfloat16 there).

zentorch (5.x as installed) multiplies a *prepacked* weight wrongly when it has more than 2,048 input features
(checked: 2,048 right, 2,432 and up wrong), and given a plain weight it keeps a reordered copy of its own (the
weight's memory twice). So a wider weight is held as column pieces of at most ZEN_MAX_IN inputs, each prepacked,
and their products are summed: each piece's activations get their own row scale (no less accurate), and rows stay
independent of each other. The probe in `_dynamic_usable` covers a split weight.
Model-family neutral.
"""

from __future__ import annotations

from typing import Literal

import torch

from vlserve.engines.transformers_engine import vnni, zendnn

DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # activation dtypes the `torch` kernel takes
PREFILL_ROWS = 128  # from here on a product is prefill-sized: the 16-bit libraries multiply faster than the kernels
ZEN_MAX_IN = 2048  # input features per prepacked piece (see above)
Kernel = Literal["vnni", "zendnn", "torch"]


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (q int8 [out, in], scales float32 [out]) with weight ≈ q * scales."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def kernel_for(dtype: torch.dtype, dynamic: bool = True, shape: tuple[int, int] | None = None) -> Kernel:
    """Where activations may be quantized (`dynamic`) and the model is bfloat16: `vnni` where it is available here
    (and takes `shape`, [out, in], when given), else `zendnn` where usable; else `torch`."""
    ours = vnni.unavailable() is None and (shape is None or vnni.usable_int8(*shape))
    if dynamic and dtype == torch.bfloat16 and ours:
        return "vnni"
    return "zendnn" if dynamic and zendnn.available(dtype) and _dynamic_usable() else "torch"


class Int8Linear(torch.nn.Module):
    """y = x (q * scales)ᵀ + b on `kernel`, in the layer's activation dtype (see the module doc)."""

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 kernel: Kernel = "torch") -> None:  # fmt: skip
        super().__init__()
        if dtype not in DTYPES or (kernel != "torch" and dtype != torch.bfloat16):
            raise ValueError(f"the int8 {kernel} kernel does not compute in {dtype}")
        self.out_features, self.in_features = q.shape
        self.dtype, self.kernel = dtype, kernel
        self.pieces: list[tuple[int, int]] = [(0, self.in_features)]
        if kernel == "zendnn":  # reordered once, as ZenDNN wants it, in pieces; scales in float32, as it wants them
            import zentorch  # noqa: F401 - registers torch.ops.zentorch

            self.pieces = _pieces(self.in_features)
            for index, (a, b) in enumerate(self.pieces):  # each its own tensor: a copy of one loses its packing
                packed = torch.ops.zentorch.zentorch_weight_prepack_for_dynamic_qlinear(q[:, a:b].contiguous())
                self.register_buffer(f"weight_int8_{index}", packed)
            q = None
            scales = scales.float()
        elif kernel == "vnni":  # its own layout; scales in float32
            self.register_buffer("packed", vnni.pack_int8(q))
            q = None
            scales = scales.float().contiguous()
        else:
            scales = scales.to(dtype)
        self.register_buffer("weight_int8", None if q is None else q.contiguous())
        self.register_buffer("scales", scales)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, kernel: Kernel | None = None, dynamic: bool = True) -> Int8Linear:
        q, scales = quantize(linear.weight)
        dtype = linear.weight.dtype
        return cls(q, scales, linear.bias, dtype, kernel or kernel_for(dtype, dynamic, tuple(q.shape)))

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, float32 [out, in] (an identity's rows quantize exactly)."""
        if self.kernel == "vnni":
            return vnni.unpack_int8(self.packed).float() * self.scales[:, None]
        eye = torch.eye(self.in_features, dtype=self.dtype)
        bias, self.bias = self.bias, None
        try:
            return torch.cat([self._product(rows) for rows in eye.split(PREFILL_ROWS - 1)]).float().t().contiguous()
        finally:
            self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._product(x.reshape(-1, self.in_features).to(self.dtype).contiguous())
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _product(self, rows: torch.Tensor) -> torch.Tensor:
        if self.kernel == "zendnn":
            return self._zen(rows)
        if self.kernel == "vnni":
            y = vnni.mm_int8(rows, self.packed, self.scales)
            return y + self.bias if self.bias is not None else y
        if rows.shape[0] >= PREFILL_ROWS:  # int8 values are exact in 16 bit; the scales apply to the output
            y = torch.nn.functional.linear(rows, self.weight_int8.to(self.dtype)).float() * self.scales.float()
            return (y + self.bias.float() if self.bias is not None else y).to(self.dtype)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, self.scales)
        return y + self.bias if self.bias is not None else y

    def _zen(self, rows: torch.Tensor) -> torch.Tensor:
        out = None
        for index, (a, b) in enumerate(self.pieces):
            weight = getattr(self, f"weight_int8_{index}")
            bias = self.bias if out is None else None
            part = torch.ops.zentorch.zentorch_dynamic_qlinear(rows[:, a:b].contiguous(), weight, self.scales, bias,
                                                               is_weight_prepacked=True)  # fmt: skip
            out = part if out is None else out.add_(part)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
            f"kernel={self.kernel}"  # fmt: skip


def _pieces(in_features: int) -> list[tuple[int, int]]:
    """[start, stop) column ranges of at most ZEN_MAX_IN, as equal as multiples of 64 allow."""
    count = -(-in_features // ZEN_MAX_IN)
    size = -(-in_features // count // 64) * 64 if count > 1 else in_features
    return [(a, min(a + size, in_features)) for a in range(0, in_features, size)]


def _dynamic_usable() -> bool:
    """zentorch's dynamic int8 product agrees with the dequantized weight's on a probe (checked once)."""
    global _DYNAMIC
    if _DYNAMIC is None:
        try:
            probe = torch.nn.Linear(ZEN_MAX_IN + 64, 96, dtype=torch.bfloat16)
            x = torch.randn(3, ZEN_MAX_IN + 64, dtype=torch.bfloat16)
            with torch.inference_mode():
                layer = Int8Linear.from_linear(probe, "zendnn")
                expected = x.float() @ (quantize(probe.weight)[0].float() * quantize(probe.weight)[1][:, None]).t()
                got = layer(x).float() - probe.bias.float()
            _DYNAMIC = bool(((got - expected).norm() / expected.norm()) < 0.05)
        except (RuntimeError, AttributeError):  # an older zentorch without the op
            _DYNAMIC = False
    return _DYNAMIC


_DYNAMIC: bool | None = None
