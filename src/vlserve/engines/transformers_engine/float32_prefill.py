"""bfloat16 linear layers whose prefill-sized products run in float32, on CPUs that do not multiply bfloat16
natively (no AVX512-BF16, no AMX: e.g. AVX2-only CPUs): launch option `cpu_gemm float32` (cpu_linears.py), and
`cpu_gemm auto`'s choice there where neither ZenDNN nor oneDNN runs. It became so once decode attention gave a
sequence the same bits alone and in any batch (attention.py): before, the suite's 8-bit check that a greedy answer is
the same alone and in a batch of three (tests/engines/test_weight_only.py) diverged at the third token with this
layer on, its changed image features meeting a near-tie that the batch-dependent attention tipped.

Why: without native bfloat16, torch's bfloat16 matrix product is emulated element by element. Measured on a 2-core
AVX2-only AMD EPYC, the full-size 1B's 24 decoder layers at 128 rows (one prompt chunk) take 4.4 s in bfloat16;
the same products with the weights widened to float32 on the fly take 1.06 s on MKL's float32 kernels, and the
vision encoder's 24 layers on one 1,025-row tile 3.8 s instead of 29.9 s; a 1-tile image's first token on the
full-size 1B comes after 9.9 s instead of 43.5 s. Widening costs one pass over the weight per call, small against a
product of that many rows.

Small products stay on torch's bfloat16 product: there the weight's bytes bound the time and widening reads three
times as many (on that host at 8 rows: 0.29 s bf16, 0.60 s widened; equal at 16 rows; 1.1 s against 0.67 s at 32
rows). A product widens from `rows_from` rows on: MIN_ROWS, or more when the engine decodes larger batches (one
row past max_batch_size), so every decode step stays on the bfloat16 product and a row's result does not depend on
the batch it decodes in. Prompt chunks (and their remainders from MIN_ROWS rows) and image tiles widen. The output
is rounded back to bfloat16, like the bfloat16 product's (which also sums in float32).

Memory: the widened weight is made in slices of at most `SLICE_BYTES`, so a call holds at most that much more (the
78B's fused gate/up weight would take 1.9 GB whole). Model-family neutral: every plain `nn.Linear` qualifies.
"""

from __future__ import annotations

import torch

MIN_ROWS = 16  # widened from here on at the least (the measured break-even above)
SLICE_BYTES = 64 * 1024**2  # float32 weight made at once per call, at most (one slice of output features)


class Float32PrefillLinear(torch.nn.Module):
    """y = x Wᵀ + b with W in bfloat16; in float32 from `rows_from` rows on, output rounded to x's dtype.
    `decode_rows`: the most rows a decode step multiplies (those stay bfloat16)."""

    def __init__(self, linear: torch.nn.Linear, decode_rows: int = 1) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.rows_from = max(MIN_ROWS, decode_rows + 1)
        self.slice_rows = max(1, SLICE_BYTES // (4 * self.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < self.rows_from * self.in_features:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        wide = x.reshape(-1, self.in_features).float()
        out = torch.empty(wide.shape[0], self.out_features, dtype=x.dtype)
        for start in range(0, self.out_features, self.slice_rows):
            end = min(start + self.slice_rows, self.out_features)
            bias = None if self.bias is None else self.bias[start:end].float()
            out[:, start:end] = torch.nn.functional.linear(wide, self.weight[start:end].float(), bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
            f"float32_from={self.rows_from}"  # fmt: skip


def available(dtype: torch.dtype) -> bool:
    """Whether this helps here: a bfloat16 model on a CPU without a native bfloat16 product."""
    from vlserve.engines.transformers_engine import vnni

    return dtype == torch.bfloat16 and not vnni.native_bf16()
