"""The packaged reference files of the InternVL checkpoints this family serves (everything but the weights):
InternVL2.5 (the seed page's 12) and InternVL3 (see SOURCES.md for where each file comes from).

Read through importlib.resources so it works from an installed wheel. `architecture` is the reference
checkpoint name the registry specs carry, e.g. "InternVL2_5-8B-AWQ".
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Literal

from vlserve.errors import NotFound

BackboneKind = Literal["qwen2", "internlm2"]
VisionKind = Literal["300m", "6b"]

_TOKENIZER_FILES = {"qwen2": ("vocab.json", "merges.txt"), "internlm2": ("tokenizer.model",)}
_TOKENIZER_FOLDERS = {"qwen2": "qwen2_5", "internlm2": "internlm2"}


def _root() -> Traversable:
    return resources.files("vlserve.families.internvl2_5") / "reference"


def architectures() -> list[str]:
    """Every reference checkpoint name, sorted by size then AWQ last (1B, 2B, 4B, 4B-AWQ, …)."""
    names = [p.name for p in (_root() / "checkpoints").iterdir() if p.is_dir()]
    return sorted(names, key=lambda n: (float(n.split("-")[1].rstrip("B")), n.endswith("-AWQ"), n))


def _checkpoint(architecture: str) -> Traversable:
    folder = _root() / "checkpoints" / architecture
    if not folder.is_dir():
        raise NotFound(f"no InternVL2.5 reference checkpoint {architecture!r}; known: {', '.join(architectures())}")
    return folder


def load_reference_config(architecture: str) -> dict:
    """The checkpoint's config.json as a dict (a fresh copy each call)."""
    return json.loads((_checkpoint(architecture) / "config.json").read_text(encoding="utf-8"))


def backbone_kind(architecture: str) -> BackboneKind:
    llm = load_reference_config(architecture)["llm_config"]["architectures"][0]
    return "internlm2" if llm.startswith("InternLM2") else "qwen2"


def vision_kind(architecture: str) -> VisionKind:
    return "6b" if load_reference_config(architecture)["vision_config"]["qk_normalization"] else "300m"


def reference_files(architecture: str) -> dict[str, Traversable]:
    """File name -> packaged file: the checkpoint's JSON files plus its backbone's tokenizer files."""
    folder = _checkpoint(architecture)
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    kind = backbone_kind(architecture)
    tokenizers = _root() / "tokenizers" / _TOKENIZER_FOLDERS[kind]
    files.update({name: tokenizers / name for name in _TOKENIZER_FILES[kind]})
    return files
