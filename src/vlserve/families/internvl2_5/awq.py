"""AWQ GEMM weight layout (what LMDeploy's `lite auto_awq` writes for the InternVL2.5 -AWQ checkpoints and what
vLLM's `awq` method and AutoAWQ's `WQLinear_GEMM` read): 4-bit, asymmetric, per-group scales and zero points.

For a linear layer with weight W [out, in] and group size g (128):
* `qweight` int32 [in, out/8]: W transposed, 8 consecutive output columns per int32. Nibble i (bits 4i..4i+3) of
  word k holds column 8k + AWQ_PACK_ORDER[i], i.e. the order (0, 2, 4, 6, 1, 3, 5, 7).
* `qzeros`  int32 [in/g, out/8]: the integer zero point of each (group, column), packed the same way.
* `scales`  fp16  [in/g, out].
Dequantised: W[o, i] = (q[i, o] - z[i // g, o]) * s[i // g, o].
"""

from __future__ import annotations

import torch

BITS = 4
PACK = 32 // BITS  # values per int32
MAX_Q = 2**BITS - 1
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i holds column AWQ_PACK_ORDER[i] of its group of 8
AWQ_UNPACK_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # column j sits in nibble AWQ_UNPACK_ORDER[j]


def pack_awq(weight: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise W [out, in] to 4 bits per `group_size` input features; returns (qweight, qzeros, scales).

    Each group's range is widened to include 0 so its zero point lies in [0, 15]; every value then
    dequantises to within half a quantisation step (plus fp16 rounding of the scale).
    """
    out_features, in_features = weight.shape
    if in_features % group_size or out_features % PACK:
        raise ValueError(
            f"AWQ needs in_features % {group_size} == 0 and out_features % {PACK} == 0, got {tuple(weight.shape)}"
        )
    groups = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
    low = groups.amin(-1).clamp(max=0)
    high = groups.amax(-1).clamp(min=0)
    scales = ((high - low) / MAX_Q).clamp(min=1e-6).half()  # fp16 as stored; quantise with the stored value
    step = scales.float()
    zeros = torch.round(-low / step).clamp(0, MAX_Q)
    q = (torch.round(groups / step[..., None]) + zeros[..., None]).clamp(0, MAX_Q)
    q = q.reshape(out_features, in_features).to(torch.int64)
    return _pack_columns(q.T), _pack_columns(zeros.to(torch.int64).T), scales.T.contiguous()


def unpack_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int = 128
) -> torch.Tensor:
    """Dequantised weight [out, in] (float32) from the AWQ GEMM tensors."""
    return dequantize_rows(*unpack_awq_int(qweight, qzeros, scales, group_size), group_size)


def dequantize_rows(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """W [out, in] float32 = (q - zeros[:, i // g]) * scales[:, i // g] from `unpack_awq_int`'s row layout."""
    zero_per_weight = zeros.repeat_interleave(group_size, dim=1)
    scale_per_weight = scales.float().repeat_interleave(group_size, dim=1)
    return (q - zero_per_weight).float() * scale_per_weight


def unpack_awq_int(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The AWQ tensors unpacked but still 4-bit, rows = output features: q int32 [out, in] in 0..15, zero points
    int32 [out, in/g], scales [out, in/g] (their stored dtype). W = (q - zeros[:, i // g]) * scales[:, i // g]."""
    q = _unpack_columns(qweight)  # [in, out]
    zeros = _unpack_columns(qzeros)  # [in/g, out]
    if q.shape[1] != zeros.shape[1] or zeros.shape != scales.shape or q.shape[0] != zeros.shape[0] * group_size:
        raise ValueError(
            f"AWQ tensors disagree: qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, "
            f"scales {tuple(scales.shape)} with group size {group_size}"
        )
    return q.to(torch.int32).T.contiguous(), zeros.to(torch.int32).T.contiguous(), scales.T.contiguous()


def _pack_columns(values: torch.Tensor) -> torch.Tensor:
    """[rows, cols] ints in 0..15 -> [rows, cols/8] int32 in AWQ nibble order."""
    rows, cols = values.shape
    blocks = values.reshape(rows, cols // PACK, PACK)[..., list(AWQ_PACK_ORDER)]
    shifts = torch.arange(0, 32, BITS, dtype=torch.int64)
    words = (blocks << shifts).sum(-1)  # < 2**32, exact in int64
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _unpack_columns(words: torch.Tensor) -> torch.Tensor:
    """[rows, cols/8] int32 -> [rows, cols] int64 in logical column order."""
    shifts = torch.arange(0, 32, BITS, dtype=torch.int64)
    nibbles = (words.to(torch.int64)[..., None] >> shifts) & MAX_Q  # nibble order
    return nibbles[..., list(AWQ_UNPACK_ORDER)].reshape(words.shape[0], -1)
