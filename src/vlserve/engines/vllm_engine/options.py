"""Launch options of the vLLM engine: a small, documented subset of vLLM's engine arguments, validated before vLLM
sees them (an unknown or bad key is an InvalidRequest that names the valid ones, not a traceback from vLLM)."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from vlserve.engines.options import LaunchOptionsBase, available_gib, dtype_name

KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"


class LaunchOptions(LaunchOptionsBase):
    engine: ClassVar[str] = "vLLM"

    max_model_len: int = Field(16384, ge=16, description="Prompt + output tokens per sequence.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may use (GPU only).")
    n_gpu: int = Field(0, ge=0, description="GPUs to use; >1 splits the model over them (tensor parallel).")
    tensor_parallel_size: int | None = Field(None, ge=1, description="Overrides n_gpu's tensor-parallel size.")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile (faster start, slower decode).")
    limit_mm_per_prompt: dict[str, int] = Field(
        default_factory=dict, description="Most images per prompt, e.g. {'image': 16}; video frames are sent as "
        "images and count here. Default: the model family's (16 for InternVL2.5)."
    )  # fmt: skip
    max_num_seqs: int = Field(16, ge=1, description="Sequences scheduled together.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights/activations dtype; auto: the checkpoint's (AWQ on CPU needs bf16/fp16)."
    )
    cpu_kvcache_space_gib: float | None = Field(
        None, gt=0, description=f"CPU KV-cache size in GiB ({KV_CACHE_ENV}); default: the environment's value, "
        "else a quarter of available memory (1..64 GiB)."
    )  # fmt: skip
    seed: int = Field(0, description="Seed of vLLM's sampler for requests without their own seed.")
    enable_prefix_caching: bool | None = Field(
        None, description="Reuse the KV of a repeated prompt prefix (image tokens are keyed by the image's content "
        "hash, so a follow-up turn about the same picture skips its prefill); unset: vLLM's default for the device."
    )  # fmt: skip
    mm_processor_cache_gb: float | None = Field(
        None, ge=0, description="GiB of vLLM's cache of processed images (a repeated image is not re-processed); 0 "
        "disables it; unset: vLLM's default (4)."
    )  # fmt: skip
    enable_chunked_prefill: bool | None = Field(
        None, description="Split long prefills into chunks scheduled beside running decodes; unset: vLLM's default."
    )  # fmt: skip
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None, description="How tensor-parallel workers run: mp (processes on this machine) or ray (one Ray worker per "
        "GPU bundle of the replica's placement group, possibly on several nodes; the Ray host sets it for n_gpu > 1)."
    )  # fmt: skip

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: Any) -> Any:
        return "auto" if value is None or value == "" else dtype_name(value)

    @field_validator("limit_mm_per_prompt", mode="before")
    @classmethod
    def _image_count(cls, value: Any) -> Any:
        return {"image": value} if isinstance(value, int) else value  # `--limit_mm_per_prompt 8` on the CLI

    @field_validator("limit_mm_per_prompt")
    @classmethod
    def _limits(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if k != "image" or v < 1}
        if bad:
            raise ValueError(f"takes an image count >= 1 (video frames are sent as images), got {bad}")
        return value

    def cache_arguments(self) -> dict[str, Any]:
        """The prefix / image cache and chunked-prefill engine arguments the user set (unset ones: vLLM's own)."""
        names = ("enable_prefix_caching", "mm_processor_cache_gb", "enable_chunked_prefill")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @property
    def parallel_size(self) -> int:
        return self.tensor_parallel_size or max(self.n_gpu, 1)

    def cpu_kv_cache_bytes(self) -> int | None:
        """The CPU KV-cache size to give vLLM; None when VLLM_CPU_KVCACHE_SPACE is set (vLLM then reads that)."""
        if self.cpu_kvcache_space_gib is not None:
            return int(self.cpu_kvcache_space_gib * 1024**3)
        if os.environ.get(KV_CACHE_ENV):
            return None
        return int(min(max(available_gib() / 4, 1), 64) * 1024**3)

