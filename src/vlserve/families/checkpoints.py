"""Reading a safetensors checkpoint into a model built on the meta device, for any family: the checkpoint's files
(sharded or not), its tensors one at a time, their assignment, and the report of what did not fit. A family
renames and splits the tensors between reading and assignment (its own weight tables).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.errors import VlserveError

if TYPE_CHECKING:
    import torch


class CheckpointMismatch(VlserveError):
    """The checkpoint's tensors do not match the model its config describes."""

    status_code = 500
    error_type = "model_load_error"


@dataclass(frozen=True)
class LoadReport:
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()

    def raise_if_bad(self, where: Path) -> None:
        problems = [
            f"{label} ({len(names)}): {', '.join(names[:20])}{' …' if len(names) > 20 else ''}"
            for label, names in (("missing", self.missing), ("unexpected", self.unexpected),
                                 ("shape mismatch", self.mismatched))
            if names
        ]  # fmt: skip
        if problems:
            raise CheckpointMismatch(
                f"checkpoint {where} does not match its config; " + "; ".join(problems)
                + ". Re-download the model or check that the files are not from another size."
            )


def read_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


def checkpoint_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatch(f"no *.safetensors files in {model_dir} (only safetensors checkpoints are loaded)")
    return files


def iter_tensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the checkpoint, one at a time (never the whole state dict in memory)."""
    from safetensors import safe_open

    for path in checkpoint_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def assign(model, name: str, value, device, dtype, report: dict[str, list[str]]) -> None:
    """Put one tensor into the model built on the meta device (a copy, on `device`, floats in `dtype`); a name the
    model lacks or a shape it does not expect goes into `report` ("unexpected", "mismatched") instead."""
    import torch

    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        report["unexpected"].append(name)
        return
    current = module._parameters.get(attr) if attr in module._parameters else module._buffers.get(attr)
    if current is None and attr not in module._parameters and attr not in module._buffers:
        report["unexpected"].append(name)
        return
    if tuple(current.shape) != tuple(value.shape):
        report["mismatched"].append(f"{name} {tuple(value.shape)} vs {tuple(current.shape)}")
        return
    target_dtype = dtype if value.is_floating_point() else value.dtype
    # copy=True: a checkpoint tensor is a view of the safetensors file's memory map; keeping it would keep the whole
    # file mapped, and every page of it that loading read (16-bit weights that quantization replaced included)
    # resident for the life of the model. A copy lets the map go once loading is done.
    value = value.to(device=device, dtype=target_dtype, copy=True)
    if attr in module._parameters:
        module._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[attr] = value
