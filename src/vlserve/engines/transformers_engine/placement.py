"""Where a model's weights go (one device, or layers split over several GPUs), in which dtype, and bitsandbytes
8-bit / 4-bit quantization of the language model's linear layers after loading. Model-family neutral."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlserve.engines.transformers_engine.options import EngineOptions
from vlserve.errors import EngineUnavailable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Placement:
    device: str  # where inputs go ("cpu", "cuda:0")
    dtype: torch.dtype
    n_gpu: int  # >1: layers split with a device_map

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def resolve_placement(options: EngineOptions) -> Placement:
    import torch

    device = options.device or ("cuda" if options.n_gpu > 0 else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailable(f"device {device} requested but no CUDA GPU is visible; use device=cpu", param="device")
    if device == "cuda":
        device = "cuda:0"
    n_gpu = options.n_gpu if device.startswith("cuda") else 0
    if n_gpu > 1 and n_gpu > torch.cuda.device_count():
        raise EngineUnavailable(f"n_gpu={n_gpu} but only {torch.cuda.device_count()} GPU(s) are visible", param="n_gpu")
    if options.dtype:
        dtype = getattr(torch, options.dtype)
    elif device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    else:
        dtype = torch.bfloat16
    return Placement(device, dtype, max(n_gpu, 1 if device.startswith("cuda") else 0))


def split_device_map(model, placement: Placement) -> dict[str, str] | None:
    """Layer-wise split over `n_gpu` GPUs for a model on the meta device; None when one device holds it all."""
    if placement.n_gpu <= 1:
        return None
    import torch
    from accelerate import infer_auto_device_map

    max_memory = {i: int(torch.cuda.mem_get_info(i)[0] * 0.85) for i in range(placement.n_gpu)}
    return infer_auto_device_map(
        model, max_memory=max_memory, no_split_module_classes=list(model._no_split_modules or ()), dtype=placement.dtype
    )


def device_for_names(device_map: dict[str, str] | None, default: str) -> Callable[[str], str]:
    """Parameter name -> device, by the longest module prefix in `device_map`."""
    if not device_map:
        return lambda _name: default
    prefixes = sorted(device_map, key=len, reverse=True)

    def device_for(name: str) -> str:
        for prefix in prefixes:
            if prefix == "" or name == prefix or name.startswith(prefix + "."):
                value = device_map[prefix]
                return f"cuda:{value}" if isinstance(value, int) else str(value)
        return default

    return device_for


def dispatch(model, device_map: dict[str, str] | None):
    """Add accelerate's cross-device hooks when the layers live on several GPUs."""
    if not device_map or len(set(device_map.values())) <= 1:
        return model
    from accelerate import dispatch_model

    return dispatch_model(model, device_map=device_map)


# ---------------------------------------------------------------- bitsandbytes


def quantize_bnb(language_model, quantization: str, compute_dtype: torch.dtype) -> int:
    """Replace every nn.Linear inside the decoder layers by a bitsandbytes 8-bit or NF4 layer, in place.

    Embeddings, lm_head, norms and the vision side stay in 16-bit. Returns the number of layers replaced."""
    from torch import nn

    bnb = _import_bnb()
    replaced = 0
    for parent in list(language_model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            device = child.weight.device
            new = _bnb_linear(bnb, child, quantization, compute_dtype)
            setattr(parent, child_name, new.to(device))  # .to() quantizes
            replaced += 1
    return replaced


def _bnb_linear(bnb, linear, quantization: str, compute_dtype):
    import torch

    has_bias = linear.bias is not None
    weight = linear.weight.data.to("cpu")  # bitsandbytes quantizes when the parameter moves to its device
    if quantization == "8-bit":
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                  has_fp16_weights=False, threshold=6.0, device="meta")  # fmt: skip
        new.weight = bnb.nn.Int8Params(weight.to(compute_dtype), requires_grad=False, has_fp16_weights=False)
    else:
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                compute_dtype=compute_dtype, quant_type="nf4", device="meta")  # fmt: skip
        new.weight = bnb.nn.Params4bit(weight.to(compute_dtype), requires_grad=False, quant_type="nf4")
    if has_bias:
        new.bias = torch.nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
    return new


def _import_bnb():
    try:
        import bitsandbytes
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EngineUnavailable(f"8-bit/4-bit quantization needs bitsandbytes ({exc}); pip install bitsandbytes") from exc
    return bitsandbytes
