"""The Transformers engine: transformers' native model classes, loaded without remote code, served with continuous
batching (one decode forward for all running sequences).

Layout: `options` (launch options), `placement` (device/dtype/multi-GPU split, bitsandbytes), `kv_cache` (slot KV
cache), `attention` (grouped-query decode attention), `sampler`, `detok` (streaming text, stop strings),
`scheduler` (the batching loop), `engine` (the Engine protocol). Model-family knowledge comes from
`vlserve.families.<family>.loader`. torch/transformers are imported only when a model is created or loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.engines.transformers_engine.options import EngineOptions

if TYPE_CHECKING:
    from vlserve.engines.base import Engine
    from vlserve.registry import ResolvedSpec

SUPPORTED_QUANTIZATIONS = ("none", "8-bit", "4-bit", "Int4")


class TransformersFactory:
    name = "Transformers"

    def supports(self, resolved: ResolvedSpec) -> tuple[bool, str]:
        family = resolved.family.model_family
        if importlib.util.find_spec(f"vlserve.families.{family}.loader") is None:
            return False, f"the Transformers engine has no loader for model family {family}"
        allowed = resolved.spec.engines.get(self.name, [])
        if resolved.quantization not in allowed:
            return False, f"Transformers serves this spec with quantization {', '.join(allowed) or 'none'}"
        if resolved.quantization not in SUPPORTED_QUANTIZATIONS:
            return False, f"quantization {resolved.quantization} is not one of {', '.join(SUPPORTED_QUANTIZATIONS)}"
        if resolved.quantization == "Int4" and resolved.spec.model_format != "awq":
            return False, "Int4 needs an AWQ checkpoint"
        return True, ""

    def create(self, resolved: ResolvedSpec, model_dir: Path, options: dict[str, Any]) -> Engine:
        from vlserve.engines.transformers_engine.engine import TransformersEngine

        return TransformersEngine(resolved, Path(model_dir), EngineOptions.parse(options))


factory = TransformersFactory()

__all__ = ["EngineOptions", "TransformersFactory", "factory"]
