"""Which library multiplies a CPU model's 16-bit linear layers, chosen once at load (launch option `cpu_gemm`).

`auto` takes the first that works here: ZenDNN on AMD CPUs (zendnn.py), else oneDNN (onednn.py), else on CPUs that
do not multiply bfloat16 natively `float32` (float32_prefill.py: prompt chunks and image tiles in float32), else
torch's own `F.linear`. Each library gets q/k/v and gate/up fused into one product each first (fused.py) and its
weights reordered once. Only plain `nn.Linear` layers are replaced: bitsandbytes' and int4 layers keep their kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from vlserve.engines.transformers_engine import float32_prefill, fused, onednn, zendnn
from vlserve.errors import InvalidRequest


class _Library(NamedTuple):
    usable: Callable[[torch.dtype], bool]
    layer: Callable[[torch.nn.Linear, int], torch.nn.Module]  # (linear, most rows of a decode step) -> its layer
    needs: str  # what `usable` checks, for the error naming it


_LIBRARIES = {  # in `auto`'s order of preference
    "zendnn": _Library(zendnn.available, lambda linear, _: zendnn.ZenLinear(linear),
                       "an AMD CPU, the zentorch package built for this torch, and bfloat16"),
    "onednn": _Library(onednn.available, lambda linear, _: onednn.PackedLinear(linear),
                       "torch built with oneDNN and bfloat16"),
    "float32": _Library(float32_prefill.available, float32_prefill.Float32PrefillLinear,
                        "bfloat16 on a CPU without a native bfloat16 product"),
}  # fmt: skip


def prepare(model: torch.nn.Module, library: str, decode_rows: int) -> None:
    """Fuse and reorder `model`'s CPU linears for `library` (from `pick`; "torch" leaves them as they are).
    `decode_rows`: the most rows a decode step multiplies (the engine's max_batch_size)."""
    if library != "torch":
        fused.fuse_siblings(model)
        make = _LIBRARIES[library].layer
        replace_linears(model, lambda linear: make(linear, decode_rows))


def pick(dtype: torch.dtype, choice: str = "auto") -> str:
    """The library for a model of `dtype` given the launch option `cpu_gemm` (a named one must be usable here)."""
    if choice == "auto":
        return next((name for name, library in _LIBRARIES.items() if library.usable(dtype)), "torch")
    if choice != "torch" and not _LIBRARIES[choice].usable(dtype):
        raise InvalidRequest(f"cpu_gemm {choice} is not usable here (it needs {_LIBRARIES[choice].needs}); "
                             f"use cpu_gemm auto or torch", param="cpu_gemm")  # fmt: skip
    return choice


def replace_linears(model: torch.nn.Module, make: Callable[[torch.nn.Linear], torch.nn.Module]) -> int:
    """Replace every plain CPU `nn.Linear` under `model` (not quantized subclasses) by `make(linear)`; returns how
    many were replaced."""
    targets = [
        (name, module) for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu"
    ]  # fmt: skip
    for name, module in targets:
        model.set_submodule(name, make(module))
    return len(targets)
