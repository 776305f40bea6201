"""The scenarios, one module each. A module declares `ID`, `TITLE`, `BASELINE` and `run(ctx) -> ScenarioResult`;
`bounds` holds the micro-benchmarks B1/B2 share. A scenario skips itself (status "skipped" with the reason) when a piece it needs is missing, and fails loudly otherwise.

| id | module | compares |
|---|---|---|
| P1 | p1_http | vlserve over HTTP vs the same engine in-process |
| P2 | p2_batching | the Transformers engine's continuous batching vs HF generate per request in threads |
| P3 | p3_tiling | vlserve's tiling vs transformers' GotOcr2 image processor (and the bare resizes) |
| P4 | p4_vllm | vLLM through vlserve vs vLLM's own OpenAI server |
| P5 | p5_memory | resident memory after load vs the theoretical footprint |
| P6 | p6_launch | launch-to-ready through the API vs the bare engine load |
| B1 | b1_decode | batch-1 decode vs the memory-bandwidth bound |
| B2 | b2_ttft | TTFT of an image prompt vs the compute bound |
| B3 | b3_quantized | 8-bit / 4-bit vs bf16 on CPU (B3 batch 1, B4 batch 8, 13-tile TTFT) and vs llama.cpp (B5) |
| P9 | p9_images_once | images paid once: second turn (P9), no stall (P10), one image for many users (P11) |
| P12 | p12_structured | JSON-schema output tok/s vs unconstrained, and the grammar mask's time per token |
| P7 | gpu_p7.sh | GPU only; not run here |
| P8 | p8_ray | the Ray host (cluster mode) vs the embedded host, over HTTP |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import ModuleType

from rich.console import Console

from benchmarks.config import RunConfig

ORDER = ("P3", "P6", "P5", "P1", "P2", "B1", "B2", "B3", "P9", "P12", "P4", "P8", "P7")  # cheap and independent first
_MODULES = {"P1": "p1_http", "P2": "p2_batching", "P3": "p3_tiling", "P4": "p4_vllm", "P5": "p5_memory",
            "P6": "p6_launch", "B1": "b1_decode", "B2": "b2_ttft", "B3": "b3_quantized", "P9": "p9_images_once",
            "P12": "p12_structured", "P7": "p7_gpu", "P8": "p8_ray"}  # fmt: skip


@dataclass
class Context:
    config: RunConfig
    console: Console = field(default_factory=Console)
    chart_dir: Path | None = None  # where PNGs go (next to RESULTS.md); None: no charts

    @property
    def work_dir(self) -> Path:
        return self.config.work_dir

    def log(self, message: str) -> None:
        self.console.log(message)


def module_for(scenario_id: str) -> ModuleType:
    return import_module(f"benchmarks.scenarios.{_MODULES[scenario_id]}")

