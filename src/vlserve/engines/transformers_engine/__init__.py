"""The Transformers engine: transformers' native model classes, loaded without remote code, served with continuous
batching (one decode forward for all running sequences).

Layout: `options` (launch options), `placement` (device/dtype/multi-GPU split, bitsandbytes), `kv_cache` (slot KV
cache), `attention` (grouped-query decode attention), `sampler`, `detok` (streaming text, stop strings),
`scheduler` (the batching loop), `engine` (the Engine protocol). Model-family knowledge comes from the family's
Transformers adapter (`vlserve.families.get_family(name).transformers()`). torch/transformers are imported only
when a model is created or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.engines.transformers_engine.options import EngineOptions

if TYPE_CHECKING:
    from vlserve.engines.base import Engine
    from vlserve.registry import ResolvedSpec



class TransformersFactory:
    name = "Transformers"

    def supports(self, resolved: ResolvedSpec) -> tuple[bool, str]:
        allowed = resolved.spec.engines.get(self.name, [])
        if resolved.quantization not in allowed:
            return False, f"Transformers serves this spec with quantization {', '.join(allowed) or 'none'}"
        if resolved.quantization == "Int4" and resolved.spec.model_format != "awq":
            return False, "Int4 needs an AWQ checkpoint"
        return True, ""

    def create(self, resolved: ResolvedSpec, model_dir: Path, options: dict[str, Any]) -> Engine:
        from vlserve.engines.transformers_engine.engine import TransformersEngine

        return TransformersEngine(resolved, Path(model_dir), EngineOptions.parse(options))


factory = TransformersFactory()

__all__ = ["EngineOptions", "TransformersFactory", "factory"]
