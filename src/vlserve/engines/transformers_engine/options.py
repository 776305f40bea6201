"""Launch options of the Transformers engine: validated once, unknown keys named with the valid ones."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from vlserve.errors import InvalidRequest

DTYPES = ("bfloat16", "float16", "float32")
CPU_GEMMS = ("auto", "zendnn", "onednn", "torch")  # see cpu_linears.py
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class EngineOptions:
    dtype: str | None = None  # None: bfloat16 (float16 on a GPU without bf16)
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: cuda if n_gpu > 0 else cpu
    n_gpu: int = 0  # >1: split the layers over that many GPUs (device_map)
    max_batch_size: int = 8  # sequences decoded together (one forward per step)
    max_model_len: int = 16384  # prompt + output tokens per sequence
    num_threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    cpu_gemm: str = "auto"  # library for 16-bit linears on CPU (cpu_linears.py): auto, zendnn, onednn, torch

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> EngineOptions:
        options = dict(options or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise InvalidRequest(
                f"unknown Transformers engine option(s) {', '.join(unknown)}; valid options are {', '.join(valid)}",
                param=unknown[0],
            )
        parsed = cls(
            dtype=_dtype(options.get("dtype")),
            device=_device(options.get("device")),
            n_gpu=_int(options, "n_gpu", 0, minimum=0),
            max_batch_size=_int(options, "max_batch_size", 8, minimum=1),
            max_model_len=_int(options, "max_model_len", 16384, minimum=16),
            num_threads=_int(options, "num_threads", None, minimum=1),
            cpu_gemm=_cpu_gemm(options.get("cpu_gemm")),
        )
        return parsed


def _dtype(value: Any) -> str | None:
    if value in (None, "", "auto"):
        return None
    name = _DTYPE_ALIASES.get(str(value).lower(), str(value).lower())
    if name not in DTYPES:
        raise InvalidRequest(f"dtype {value!r} is not supported; use one of {', '.join(DTYPES)}", param="dtype")
    return name


def _cpu_gemm(value: Any) -> str:
    if value in (None, ""):
        return "auto"
    name = str(value).lower()
    if name not in CPU_GEMMS:
        raise InvalidRequest(f"cpu_gemm {value!r} is not valid; use one of {', '.join(CPU_GEMMS)}", param="cpu_gemm")
    return name


def _device(value: Any) -> str | None:
    if value in (None, "", "auto"):
        return None
    text = str(value).lower()
    if text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    if text.isdigit():
        return f"cuda:{text}"
    raise InvalidRequest(f"device {value!r} is not valid; use cpu, cuda or cuda:<index>", param="device")


def _int(options: dict[str, Any], key: str, default: int | None, *, minimum: int) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{key} must be an integer (got {value!r})", param=key) from None
    if number < minimum or str(number) != str(value).strip():
        raise InvalidRequest(f"{key} must be an integer >= {minimum} (got {value!r})", param=key)
    return number
