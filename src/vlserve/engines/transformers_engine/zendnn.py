"""Linear layers on AMD's ZenDNN (the `zentorch` plugin) with their weights reordered once at load (CPU, bfloat16).

Measured on the 2-core AMD EPYC (AVX512-BF16) machine, the full-size 1B architecture's decode products (decoder +
lm_head, one row) side by side: 32 ms per step against 40 ms on oneDNN's packed kernels (onednn.py), i.e. ~31 GB/s
of weight reads instead of ~25; 8-row steps ~15% faster; prefill-sized products equal or a few % faster. vLLM's CPU
backend takes the same library on Zen CPUs.

Only weights handed over already reordered (`is_weight_prepacked`) are used: given a plain weight, zentorch keeps
a reordered copy in a cache of its own, which would double the weights' memory. The reordered weight is the plain
weight's size, and a test checks that multiplying adds no resident copy.

Batch invariance: ZenDNN multiplies a single row with another kernel than two or more rows, whose results differ in
the last bit; every batch size from two rows up gives each row the same result. A one-row input is therefore run as
two rows (the same row twice, a stride-0 view: no copy, no measurable time), so a request decodes the same tokens
alone or in a batch, as on oneDNN.

Used only on AMD CPUs (ZenDNN's target; elsewhere onednn.py), for bfloat16, and only when zentorch imports (its
binary is built per torch minor version) and its product matches `F.linear` on a probe.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


class ZenLinear(torch.nn.Module):
    """y = x Wᵀ + b with W reordered for ZenDNN (held as `packed`: its values are no longer W's; CPU only)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed", torch.ops.zentorch.zentorch_weight_prepack_for_linear(weight))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 1:  # the multi-row kernel, so a row's result does not depend on the batch size
            out = self._product(rows.expand(2, self.in_features))[:1]
        else:
            out = self._product(rows)
        return out.reshape(*x.shape[:-1], self.out_features)

    def _product(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.zentorch.zentorch_linear_unary(rows, self.packed, self.bias, is_weight_prepacked=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def available(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and _usable()


@functools.cache
def _usable() -> bool:
    """An AMD CPU, zentorch importable for this torch, and its product that of F.linear (checked once)."""
    if not _amd_cpu():
        return False
    try:
        import zentorch  # noqa: F401 - registers torch.ops.zentorch

        probe = torch.nn.Linear(64, 96, dtype=torch.bfloat16)
        with torch.inference_mode():
            zen = ZenLinear(probe)
            return all(
                torch.allclose(zen(x).float(), probe(x).float(), rtol=1e-2, atol=1e-2)
                for x in (torch.randn(1, 64, dtype=torch.bfloat16), torch.randn(3, 64, dtype=torch.bfloat16))
            )  # fmt: skip
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:  # not installed, or built for another torch
        log.info("ZenDNN linears unavailable (%s); using oneDNN", exc)
        return False


def _amd_cpu() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return any(line.startswith("vendor_id") and "AuthenticAMD" in line for line in info)
    except OSError:  # not Linux
        return False
