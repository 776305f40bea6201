"""4-bit group-quantized linear layers on PyTorch's own int4 weight-only kernels (the "tinygemm" kernels that
torchao builds on): `aten._weight_int4pack_mm` on CUDA (sm80+, bfloat16), `aten._weight_int4pack_mm_for_cpu` on
CPU. Checkpoints quantized with asymmetric per-group zero points (AWQ) run on them without being widened to 16 bit,
so a 4-bit checkpoint stays ~4-bit in memory and decode reads a quarter of the bytes. Model-family neutral: a family
loader hands over (q, zero points, scales) per layer, rows = output features.

tinygemm dequantizes w = (q - 8) * scale + zero with a *float* zero per (group, column); an integer zero point z
(w = (q - z) * scale) is the same weight with zero = (8 - z) * scale.
"""

from __future__ import annotations

import torch

GROUP_SIZES = (32, 64, 128, 256)
INNER_K_TILES = (8, 4, 2)  # the packing's K tiling; the largest that divides K is used


def _inner_k_tiles(in_features: int) -> int | None:
    return next((t for t in INNER_K_TILES if in_features % (t * 16) == 0), None)


def supported(out_features: int, in_features: int, group_size: int, device: torch.device | str) -> bool:
    """Whether the kernels take this shape on this device (else the caller keeps a 16-bit weight)."""
    device = torch.device(device)
    if group_size not in GROUP_SIZES or in_features % group_size or out_features % 8:
        return False
    if _inner_k_tiles(in_features) is None:
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu"


class Int4Linear(torch.nn.Module):
    """y = x Wᵀ + b with W held as 4-bit groups in tinygemm's packed layout; activations run in bfloat16."""

    def __init__(
        self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, *, in_features: int, out_features: int,
        group_size: int, bias: torch.nn.Parameter | None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.bias = bias

    @classmethod
    def from_quantized(
        cls, q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, *, group_size: int,
        device: torch.device | str, bias: torch.nn.Parameter | None = None,
    ) -> Int4Linear:  # fmt: skip
        """q int [out, in] in 0..15; zeros (integer zero points) and scales [out, in/group_size]."""
        out_features, in_features = q.shape
        device = torch.device(device)
        if not supported(out_features, in_features, group_size, device):
            raise ValueError(f"int4 kernels do not take [{out_features}, {in_features}] g{group_size} on {device}")
        step = scales.float()
        float_zero = (8 - zeros.float()) * step
        scales_and_zeros = torch.stack([step, float_zero], dim=-1).transpose(0, 1).contiguous()  # [groups, out, 2]
        tiles = _inner_k_tiles(in_features)
        q = q.to(torch.int32)
        if device.type == "cuda":
            nibbles = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8).to(device)  # [out, in/2]
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), tiles)
        return cls(
            packed, scales_and_zeros.to(device=device, dtype=torch.bfloat16), in_features=in_features,
            out_features=out_features, group_size=group_size, bias=bias,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        if self.packed.device.type == "cuda":
            y = torch.ops.aten._weight_int4pack_mm(flat, self.packed, self.group_size, self.scales_and_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, " \
            f"bias={self.bias is not None}"  # fmt: skip


def factory_for(dtype: torch.dtype):
    """The loader's int4 factory for a model in `dtype`: Int4Linear where the kernels take the layer, else None
    (the layer is then dequantized). Only for bfloat16 models: the kernels compute in bfloat16, and a float32 or
    float16 model asked for that precision (the cross-engine fidelity tests run float32)."""
    if dtype != torch.bfloat16:
        return None

    def make(q, zeros, scales, *, group_size: int, device, bias=None) -> Int4Linear | None:
        out_features, in_features = q.shape
        if not supported(out_features, in_features, group_size, device):
            return None
        return Int4Linear.from_quantized(q, zeros, scales, group_size=group_size, device=device, bias=bias)

    return make
