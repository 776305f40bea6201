"""The vLLM engine: vLLM's AsyncLLM serving a model family's checkpoints without remote code.

Layout: `options` (launch options, validated), `requests` (engine-neutral request -> vLLM prompt + sampling, vLLM
outputs -> deltas), `engine` (the Engine protocol over AsyncLLM), `torchvision_shim` (why torchvision imports on
the CPU install). Model-family knowledge comes from the family's vLLM adapter
(`vlserve.families.get_family(name).vllm()`).
vllm, torch and transformers are imported only when an engine is created or loaded; this module stays stdlib-only
because the torchvision shim's .pth hook imports the package at every interpreter start.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlserve.engines.base import Engine
    from vlserve.registry import ResolvedSpec

# quantization label -> the checkpoint format vLLM serves it from
SUPPORTED = {"none": ("pytorch",), "Int4": ("awq",)}


class VllmFactory:
    name = "vLLM"

    def supports(self, resolved: ResolvedSpec) -> tuple[bool, str]:
        spec = resolved.spec
        allowed = spec.engines.get(self.name, [])
        if resolved.quantization not in allowed:
            return False, f"vLLM serves this spec only with quantization {', '.join(allowed) or '(none listed)'}"
        formats = SUPPORTED.get(resolved.quantization)
        if formats is None:
            return False, f"vLLM serves quantizations {', '.join(SUPPORTED)}, not {resolved.quantization}"
        if spec.model_format not in formats:
            return False, f"quantization {resolved.quantization} needs a {'/'.join(formats)} checkpoint"
        if importlib.util.find_spec("vllm") is None:
            return False, "vLLM is not installed; run scripts/install-vllm.sh (or use --model-engine Transformers)"
        return True, ""

    def create(self, resolved: ResolvedSpec, model_dir: Path, options: dict[str, Any]) -> Engine:
        from vlserve.engines.vllm_engine.engine import VllmEngine
        from vlserve.engines.vllm_engine.options import LaunchOptions

        return VllmEngine(resolved, Path(model_dir), LaunchOptions.parse(options))


factory = VllmFactory()

__all__ = ["VllmFactory", "factory"]
