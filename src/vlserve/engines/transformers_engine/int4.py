"""4-bit group-quantized linear layers on PyTorch's own int4 weight-only kernels (the "tinygemm" kernels that torchao
builds on): `aten._weight_int4pack_mm` on CUDA (sm80+, bfloat16), `aten._weight_int4pack_mm_for_cpu` on CPU; or, on CPUs
with AVX512-VNNI or AVX2 and made `dynamic` (`cpu_quant auto`), on our int4 x int8 kernel in its own layout (vnni.py),
which is faster at decode sizes. Checkpoints quantized with asymmetric per-group zero points (AWQ) run on them without
being widened to 16 bit, so a 4-bit checkpoint stays ~4-bit in memory and decode reads a quarter of the bytes.
Model-family neutral: a family loader hands over (q, zero points, scales) per layer, rows = output features.

tinygemm dequantizes w = (q - 8) * scale + zero with a *float* zero per (group, column); an integer zero point z
(w = (q - z) * scale) is the same weight with zero = (8 - z) * scale. `Int4Linear.quantize` makes such a layer from
a 16-bit weight (the `4-bit` quantization on CPU): per group, the 16 levels span exactly [min, max], whose float zero
an integer zero point could only round to.

On CPU the kernels are fast at one row and slow at prefill sizes, so, where the CPU multiplies bfloat16 natively
(vnni.native_bf16: AVX512-BF16 or AMX; elsewhere the kernels are much faster than a 16-bit product at every size), from
WIDEN_ROWS rows on the weight is widened to 16 bit for that call (the kernel's packing is undone with a few tensor ops,
~0.5 s for the 1B's decoder) and multiplied by the 16-bit library: measured over the 1B's decoder, 300 rows 0.95 s
against the kernel's 1.26 s, 1,024 rows 2.2 s against 4.3 s (200 rows is about even). While prefills run, the widened
weights can be held (`PrefillWidening`, launch option `int4_prefill_16bit`): then every prefill-sized product
(PREFILL_ROWS rows and up, i.e. every full prompt chunk) is a 16-bit product, ~2.5x faster than the kernel at 128 rows,
for one widening per run of prefills, at the cost of the 16-bit copy's memory until the prefills are done. Which product
a call uses depends on its row count and the launch options only, never on timing, so a prompt's K/V are the same bits
however its prefill was scheduled. Tried and dropped: ZenDNN's weight-only int4 product (`zentorch_woq_linear`) on a
copy repacked per call gave wrong results from the second call on (zentorch caches reordered weights by address, and a
freed temporary's address comes back); a persistent repacked copy would double the layer's memory.
"""

from __future__ import annotations

from typing import Literal

import torch

from vlserve.engines.transformers_engine import vnni
from vlserve.engines.transformers_engine.int8 import PREFILL_ROWS

Layout = Literal["tinygemm", "vnni"]

WIDEN_ROWS = 256  # CPU: from here on a product widens the weight (see above); the kernel's packing holds 64 rows
_PACK_ROWS = 64

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


def kernel_for(dynamic: bool) -> str:
    """Which kernel CPU int4 layers made with `dynamic` (activations may be quantized) run on here."""
    return "vnni" if dynamic and vnni.unavailable() is None else "torch"


class Int4Linear(torch.nn.Module):
    """y = x Wᵀ + b with W held as 4-bit groups, in tinygemm's packed layout (PyTorch's kernels) or in the VNNI
    kernel's (vnni.py: CPU, bfloat16); activations run in `dtype` (bfloat16 unless made by `quantize`; on CUDA the
    kernel takes bfloat16 only)."""

    def __init__(
        self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, *, in_features: int, out_features: int,
        group_size: int, bias: torch.nn.Parameter | None, dtype: torch.dtype = torch.bfloat16,
        layout: Layout = "tinygemm",
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.dtype, self.layout = dtype, layout
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.bias = bias
        self.hold_widened = False  # PrefillWidening: keep the widened weight, and widen from PREFILL_ROWS rows on
        self._wide: torch.Tensor | None = None

    @classmethod
    def from_quantized(
        cls, q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, *, group_size: int,
        device: torch.device | str, bias: torch.nn.Parameter | None = None, dynamic: bool = False,
    ) -> Int4Linear:  # fmt: skip
        """q int [out, in] in 0..15; zeros (integer zero points) and scales [out, in/group_size]. `dynamic`: the
        VNNI kernel where it takes the layer."""
        out_features, in_features = q.shape
        device = torch.device(device)
        if not supported(out_features, in_features, group_size, device):
            raise ValueError(f"int4 kernels do not take [{out_features}, {in_features}] g{group_size} on {device}")
        step = scales.float()
        return cls._packed(q, step, -zeros.float() * step, group_size=group_size, device=device, bias=bias,
                           dynamic=dynamic)  # fmt: skip

    @classmethod
    def quantize(
        cls, weight: torch.Tensor, *, group_size: int, bias: torch.Tensor | None = None,
        clip_ratios: tuple[float, ...] = (1.0,), dynamic: bool = False,
    ) -> Int4Linear:  # fmt: skip
        """Asymmetric 4-bit groups of `group_size` input features from a 16-bit CPU weight [out, in]; computes in
        the weight's dtype. Per group, the 16 levels span [min, max] shrunk about its middle by whichever of
        `clip_ratios` gives the least squared error. `dynamic`: the VNNI kernel where it takes the layer. The
        caller checks `supported` first."""
        out_features, in_features = weight.shape
        w = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
        low, high = w.amin(dim=-1), w.amax(dim=-1)
        middle, half = (high + low) / 2, (high - low) / 2
        best_low, best_step, best_error = low, ((high - low) / 15).clamp_min(1e-12), None
        for ratio in clip_ratios:
            lo = middle - half * ratio
            step = (2 * half * ratio / 15).clamp_min(1e-12)
            q = torch.round((w - lo[..., None]) / step[..., None]).clamp_(0, 15)
            error = (q * step[..., None] + lo[..., None] - w).square_().sum(dim=-1)
            better = error < best_error if best_error is not None else torch.ones_like(error, dtype=torch.bool)
            best_low, best_step = torch.where(better, lo, best_low), torch.where(better, step, best_step)
            best_error = error if best_error is None else torch.minimum(error, best_error)
        q = torch.round((w - best_low[..., None]) / best_step[..., None]).clamp_(0, 15).reshape(out_features, -1)
        return cls._packed(q, best_step, best_low, group_size=group_size, device=weight.device,
                           bias=None if bias is None else torch.nn.Parameter(bias.detach(), requires_grad=False),
                           dtype=weight.dtype, dynamic=dynamic)  # fmt: skip

    @classmethod
    def _packed(
        cls, q: torch.Tensor, step: torch.Tensor, low: torch.Tensor, *, group_size: int,
        device: torch.device | str, bias: torch.nn.Parameter | None, dtype: torch.dtype = torch.bfloat16,
        dynamic: bool = False,
    ) -> Int4Linear:  # fmt: skip
        """q int [out, in] in 0..15; step and low [out, groups]: w = q * step + low."""
        out_features, in_features = q.shape
        device = torch.device(device)
        if dynamic and device.type == "cpu" and dtype == torch.bfloat16 and \
                vnni.usable(out_features, in_features, group_size):  # fmt: skip
            packed, scales_mins = vnni.pack(q, step, low)
            return cls(packed, scales_mins, in_features=in_features, out_features=out_features,
                       group_size=group_size, bias=bias, dtype=dtype, layout="vnni")  # fmt: skip
        float_zero = low + 8 * step  # tinygemm: w = (q - 8) * step + zero
        scales_and_zeros = torch.stack([step, float_zero], dim=-1).transpose(0, 1).contiguous()  # [groups, out, 2]
        tiles = _inner_k_tiles(in_features)
        q = q.to(torch.int32)
        if device.type == "cuda":
            nibbles = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8).to(device)  # [out, in/2]
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), tiles)
        return cls(
            packed, scales_and_zeros.to(device=device, dtype=dtype), in_features=in_features,
            out_features=out_features, group_size=group_size, bias=bias, dtype=dtype,
        )  # fmt: skip

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, in float32 [out, in] (tests compare against it)."""
        if self.layout == "vnni":
            return vnni.widen(self.packed, self.scales_and_zeros, torch.float32).t().contiguous()
        eye = torch.eye(self.in_features, dtype=self.dtype, device=self.packed.device)
        bias, self.bias = self.bias, None
        try:  # in pieces below PREFILL_ROWS, the decode sizes
            return torch.cat([self.forward(rows) for rows in eye.split(PREFILL_ROWS - 1)]).float().t().contiguous()
        finally:
            self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(self.dtype).contiguous()
        if flat.shape[0] >= self.widen_from and self.widens:
            y = flat @ self._wide_weight()
        elif self.layout == "vnni":
            y = vnni.mm(flat, self.packed, self.scales_and_zeros, self.group_size)
        elif self.packed.device.type == "cuda":
            y = torch.ops.aten._weight_int4pack_mm(flat, self.packed, self.group_size, self.scales_and_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y + self.bias if self.bias is not None else y

    @property
    def widen_from(self) -> int:
        """CPU: rows from which the product is 16 bit."""
        return PREFILL_ROWS if self.hold_widened else WIDEN_ROWS

    @property
    def widens(self) -> bool:
        """Whether large products widen the weight (CPU with a native bfloat16 product, output rows in whole packing
        blocks)."""
        whole = self.layout == "vnni" or self.out_features % _PACK_ROWS == 0
        return self.packed.device.type == "cpu" and whole and vnni.native_bf16()

    def _wide_weight(self) -> torch.Tensor:
        if self._wide is not None:
            return self._wide
        wide = self._widened()
        if self.hold_widened:
            self._wide = wide
        return wide

    def drop_widened(self) -> bool:
        """Let go of a held widened weight; whether there was one."""
        held, self._wide = self._wide is not None, None
        return held

    def _widened(self) -> torch.Tensor:
        """Wᵀ [in, out] in 16 bit from the CPU packing: per block of 64 output rows, [in, 32] bytes whose low
        nibble is row j and high nibble row j + 32 of the block (a test checks it against the kernel); the VNNI
        layout's own unpacking (vnni.widen)."""
        if self.layout == "vnni":
            return vnni.widen(self.packed, self.scales_and_zeros, self.dtype)
        n, k, g = self.out_features, self.in_features, self.group_size
        packed = self.packed.view(n // _PACK_ROWS, k, _PACK_ROWS // 2)
        codes = torch.empty(k, n // _PACK_ROWS, 2, _PACK_ROWS // 2, dtype=self.dtype)  # 0..15 are exact in 16 bit
        codes[:, :, 0].copy_((packed & 15).permute(1, 0, 2))
        codes[:, :, 1].copy_((packed >> 4).permute(1, 0, 2))
        step, zero = self.scales_and_zeros[..., 0], self.scales_and_zeros[..., 1]  # [groups, out]
        return torch.addcmul((zero - 8 * step)[:, None], codes.view(k // g, g, n), step[:, None]).view(k, n)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, " \
            f"bias={self.bias is not None}, layout={self.layout}"  # fmt: skip


class PrefillWidening:
    """Holds the widened (16-bit) weights of a model's CPU int4 layers from a run of prefills' first prompt chunk
    until `release` (the scheduler calls it when no prefill is left), and makes every prefill-sized product of those
    layers 16 bit (see the module docstring). Decode-sized products stay on the kernel."""

    def __init__(self, layers: list[Int4Linear]) -> None:
        self.layers = layers
        for layer in layers:
            layer.hold_widened = True

    @staticmethod
    def layers_of(model: torch.nn.Module) -> list[Int4Linear]:
        return [m for m in model.modules() if isinstance(m, Int4Linear) and m.widens]

    @staticmethod
    def held_bytes(layers: list[Int4Linear]) -> int:
        """Memory of all the widened weights at once."""
        return sum(m.in_features * m.out_features * torch.finfo(m.dtype).bits // 8 for m in layers)

    def release(self) -> int:
        """Drop the held copies; returns how many there were."""
        return sum(layer.drop_widened() for layer in self.layers)


def factory_for(dtype: torch.dtype, dynamic: bool = False):
    """The loader's int4 factory for a model in `dtype`: Int4Linear where the kernels take the layer, else None
    (the layer is then dequantized). Only for bfloat16 models: the kernels compute in bfloat16, and a float32 or
    float16 model asked for that precision (the cross-engine fidelity tests run float32). `dynamic`: the VNNI
    kernel where it takes the layer."""
    if dtype != torch.bfloat16:
        return None

    def make(q, zeros, scales, *, group_size: int, device, bias=None) -> Int4Linear | None:
        out_features, in_features = q.shape
        if not supported(out_features, in_features, group_size, device):
            return None
        return Int4Linear.from_quantized(q, zeros, scales, group_size=group_size, device=device, bias=bias,
                                         dynamic=dynamic)  # fmt: skip

    return make
