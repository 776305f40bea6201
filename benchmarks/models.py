"""The models the harness prepares for itself under the work folder: the InternVL2.5-1B twin (shrunk dimensions,
tens of MB) and the full-size 1B architecture with random weights (~1.9 GB), both via vlserve's `write_twin`
(P7 on a GPU machine: the full-size 8B, ~16 GB).

A folder is reused when its stamp matches the twin builder's source (twins are seeded, so the same builder writes
the same bytes); otherwise it is rewritten. Launch parameters and in-process engines resolve the same spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.threads import on_own_thread

ARCHITECTURE = "InternVL2_5-1B"
# The Transformers engine's image and prefix caches make a repeated prompt nearly free; the scenarios repeat their
# prompts to measure spread, so every scenario but P9-P11 (which measure the caches) runs that engine without them.
COLD = {"image_cache_mb": 0, "prefix_cache_mb": 0}


def engine_options(engine: str, options: dict[str, Any], caches: bool = False) -> dict[str, Any]:
    """`options`, with the Transformers engine's caches off unless `caches` (explicit options win)."""
    return {**COLD, **options} if engine == "Transformers" and not caches else dict(options)
_STAMP = ".bench-stamp.json"


@dataclass(frozen=True)
class PreparedModel:
    label: str  # "1B twin" / "1B full-size"
    path: Path
    full_size: bool
    size_in_billions: int = 1
    model_format: str = "pytorch"  # "awq" for an AWQ architecture (quantization Int4)

    @property
    def launch_spec(self) -> dict[str, Any]:
        return {"model_name": "InternVL2.5", "model_size_in_billions": self.size_in_billions,
                "model_format": self.model_format}  # fmt: skip

    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text(encoding="utf-8"))


def twin(work_dir: Path) -> PreparedModel:
    return prepare(work_dir, full_size=False)


def full_size(work_dir: Path) -> PreparedModel:
    return prepare(work_dir, full_size=True)


def prepare(work_dir: Path, *, full_size: bool, architecture: str = ARCHITECTURE) -> PreparedModel:
    """The twin of `architecture` (a pytorch InternVL2.5 checkpoint name, e.g. InternVL2_5-8B) in the work folder."""
    from vlserve.families.internvl2_5.twin import write_twin

    folder = Path(work_dir) / "models" / (f"{architecture}-{'full' if full_size else 'twin'}")
    stamp = {"architecture": architecture, "full_size": full_size, "builder": _builder_hash()}
    stamp_file = folder / _STAMP
    if not (stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp):
        stamp_file.unlink(missing_ok=True)
        on_own_thread(lambda: write_twin(architecture, folder, full_size=full_size))  # see benchmarks/threads.py
        stamp_file.write_text(json.dumps(stamp))
    name = architecture.removeprefix("InternVL2_5-")
    size, awq = int(name.removesuffix("-AWQ").removesuffix("B")), name.endswith("-AWQ")
    label = f"{size}B{' AWQ' if awq else ''} {'full-size' if full_size else 'twin'}"
    return PreparedModel(label, folder, full_size, size, "awq" if awq else "pytorch")


def _builder_hash() -> str:
    """Hash of the modules that decide a twin's bytes."""
    from vlserve.families.internvl2_5 import twin as twin_module
    from vlserve.families.internvl2_5 import twin_layout

    digest = hashlib.sha256()
    for module in (twin_module, twin_layout):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def resolved(model: PreparedModel, quantization: str = "none", engine: str = "Transformers"):
    """The registry spec both sides of a comparison serve (what a launch of `model` resolves to)."""
    from vlserve.registry import Registry, resolve

    return resolve(Registry.default(), model_engine=engine, quantization=quantization, **model.launch_spec)


def launch_body(model: PreparedModel, uid: str, engine: str = "Transformers", quantization: str = "none",
                caches: bool = False, **options: Any) -> dict[str, Any]:  # fmt: skip
    """POST /v1/models body (Xinference's launch) for a prepared model; extra keys are engine options."""
    return {**model.launch_spec, "model_engine": engine, "quantization": quantization, "model_uid": uid,
            "model_path": str(model.path), **engine_options(engine, options, caches)}  # fmt: skip
