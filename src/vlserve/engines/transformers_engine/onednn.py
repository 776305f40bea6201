"""Linear layers on oneDNN with their weights packed once at load (CPU, bfloat16): what PyTorch's own compiler
(inductor, with weight freezing) does for CPU linears, without compiling the model.

Measured on the 2-core AVX512-BF16 machine with the 1B architecture's decoder + head shapes: one decode step's
linears take 41-47 ms packed against 57-71 ms through `F.linear` (which re-lays the weight out per call for small
batches), i.e. 21-24 GB/s of weight reads instead of 14-17; prefill-sized products gain 5-10%. Results are those of
the same bf16 product (the tests compare them), and a row's result does not depend on how many rows are multiplied
with it. Model-family neutral: every plain `nn.Linear` qualifies. Chosen where ZenDNN is not (cpu_linears.py).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class PackedLinear(torch.nn.Module):
    """y = x Wᵀ + b with W held in oneDNN's blocked layout (an opaque mkldnn tensor; CPU only)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def available(dtype: torch.dtype) -> bool:
    """oneDNN is built in and packs/multiplies this dtype on this CPU with the plain product's result."""
    if dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.nn.Linear(64, 32, dtype=dtype)
        x = torch.randn(3, 64, dtype=dtype)
        with torch.inference_mode():
            return torch.allclose(PackedLinear(probe)(x).float(), probe(x).float(), rtol=1e-2, atol=1e-2)
    except (RuntimeError, AttributeError) as exc:  # no oneDNN op for this build / CPU
        log.info("oneDNN packed linears unavailable (%s); using F.linear", exc)
        return False

