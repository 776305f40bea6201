"""Launch options of the Transformers engine: validated once, unknown keys named with the valid ones."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator

from vlserve.engines.options import LaunchOptionsBase, dtype_name

Dtype = Literal["bfloat16", "float16", "float32"]
CpuGemm = Literal["auto", "zendnn", "onednn", "float32", "torch"]  # see cpu_linears.py
CpuQuant = Literal["auto", "weight_only", "bitsandbytes"]  # see weight_only.py
OnOff = Literal["auto", "on", "off"]


def _whole(minimum: int) -> BeforeValidator:
    """An integer option >= minimum, written as a number or as its digits (the CLI passes text)."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not text.lstrip("-").isdigit() or int(text) < minimum:
            raise ValueError(f"must be an integer >= {minimum} (got {value!r})")
        return int(text)

    return BeforeValidator(check)


def _one_of(value: Any, choices: Any, fault: str) -> Any:
    if value not in get_args(choices):
        raise ValueError(f"{value!r} {fault}; use one of {', '.join(get_args(choices))}")
    return value


class EngineOptions(LaunchOptionsBase):
    engine: ClassVar[str] = "Transformers"

    dtype: Dtype | None = Field(
        None, description="Weights/activations dtype; unset: bfloat16 (float16 on a GPU without bf16).")
    device: str | None = Field(None, description="cpu, cuda or cuda:N; unset: cuda if n_gpu > 0, else cpu.")
    n_gpu: Annotated[int, _whole(0)] = Field(0, description=">1: split the layers over that many GPUs.")
    max_batch_size: Annotated[int, _whole(1)] = Field(8, description="Sequences decoded together (one forward a step).")
    max_model_len: Annotated[int, _whole(16)] = Field(16384, description="Prompt + output tokens per sequence.")
    num_threads: Annotated[int | None, _whole(1)] = Field(None, description="torch threads on CPU; unset: torch's.")
    cpu_gemm: CpuGemm = Field(
        "auto", description="Library for 16-bit linears on CPU (cpu_linears.py). auto: ZenDNN on AMD CPUs, else "
        "oneDNN, else float32 on a CPU without native bfloat16 (e.g. AVX2 only, where torch emulates the bf16 "
        "product), else torch's F.linear. float32: products of more rows than a decode step and at least 16 "
        "(prompt chunks, image tiles) in float32, decode steps in bfloat16; a 1-tile image's first token ~4x sooner.")
    cpu_quant: CpuQuant = Field(
        "auto", description="Kernels of 8-bit/4-bit on CPU, quantized at load (weight_only.py): auto (vlserve's "
        "int8 x int8 and int4 x int8 kernels, activations quantized to int8 per group, on CPUs with AVX512-VNNI "
        "or AVX2, fastest; else for 8-bit ZenDNN's int8 product with activations quantized per row where usable; "
        "else weight-only), weight_only (torch's int8/int4 kernels, activations stay 16-bit), bitsandbytes (slow "
        "on CPU; 8-bit/4-bit only). GPUs always use bitsandbytes.")
    int4_group_size: Literal[32, 64, 128, 256] = Field(
        64, description="4-bit on CPU: input features per int4 group (smaller: more accurate and more memory; the "
        "kernel's speed is the same for all four). 64 is more accurate than bitsandbytes' NF4.")
    int4_prefill_16bit: OnOff = Field(
        "auto", description="4-bit and AWQ Int4 on CPU: while prompts are prefilled, hold a 16-bit copy of the int4 "
        "weights, so full prompt chunks multiply ~2.5x faster than on the int4 kernel (a 13-tile image's first "
        "token ~10 s sooner on the 1B); memory then peaks at the 16-bit size until the prefills are done. auto: on "
        "when that copy takes at most a quarter of the memory available at load. Only on CPUs that multiply "
        "bfloat16 natively (AVX512-BF16 or AMX); elsewhere the int4 kernel is the faster one at every size.")
    image_cache_mb: Annotated[int, _whole(0)] = Field(
        512, description="Encoder-output cache: MiB of vision features kept per model, so an image seen again (a "
        "follow-up turn, another user) skips the vision encoder; 0 disables. A 13-tile image takes 3,328 rows x "
        "the LLM's hidden size x 2 bytes (6 MiB on the 1B, 54 MiB on the 78B).")
    prefix_cache_mb: Annotated[int, _whole(0)] = Field(
        2048, description="Prefix cache: MiB of prompt K/V kept per model, so a prompt that starts like a recent "
        "one (the next turn of a chat, the same image and question) computes only its new tokens; 0 disables. Per "
        "token: layers x 2 x kv_heads x head_dim x 2 bytes (12 KiB on the 1B, 320 KiB on the 78B).")
    prefill_chunk: Annotated[int | None, _whole(16)] = Field(
        None, description="Prompt tokens per prefill step (also the prefix cache's reuse granularity); unset: 128 "
        "on CPU, 512 on a GPU. Smaller: decoding streams pause less while a long prompt is prefilled; larger: a "
        "long prompt's first token comes sooner (README: 'Images paid once').")
    prefill_slice_ms: Annotated[int, _whole(1)] = Field(
        200, description="While other sequences decode, a long prefill (vision tiles, prompt chunks) runs this "
        "many ms between two decode steps; smaller: smoother streams, slower first token for the new prompt.")
    quantize_lm_head: bool = Field(
        False, description="8-bit/4-bit on CPU: the lm_head too, as int8 (less memory read per step, int8 error in "
        "the logits; benchmarks B3 reports its speed).")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> Any:
        return None if value in (None, "", "auto") else _one_of(dtype_name(value), Dtype, "is not supported")

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> str | None:
        if value in (None, "", "auto"):
            return None
        text = str(value).lower()
        if text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
            return text
        if text.isdigit():
            return f"cuda:{text}"
        raise ValueError(f"{value!r} is not valid; use cpu, cuda or cuda:<index>")

    @field_validator("cpu_quant", mode="before")
    @classmethod
    def _cpu_quant(cls, value: Any) -> Any:
        return "auto" if value in (None, "") else _one_of(str(value).lower(), CpuQuant, "is not valid")

    @field_validator("int4_group_size", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        text = str(value).strip()
        if not text.isdigit() or int(text) not in (32, 64, 128, 256):
            raise ValueError(f"must be one of 32, 64, 128, 256 (got {value!r})")
        return int(text)

    @field_validator("int4_prefill_16bit", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        if value in (None, ""):
            return "auto"
        if isinstance(value, bool):
            return "on" if value else "off"
        return _one_of({"true": "on", "false": "off"}.get(str(value).lower(), str(value).lower()), OnOff,
                       "is not valid")  # fmt: skip

    @field_validator("cpu_gemm", mode="before")
    @classmethod
    def _cpu_gemm(cls, value: Any) -> Any:
        return "auto" if value in (None, "") else _one_of(str(value).lower(), CpuGemm, "is not valid")
