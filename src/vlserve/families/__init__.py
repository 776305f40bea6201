"""Model families: one package per family implementation under vlserve.families (the registry's `model_family`
value names it), each exposing `FAMILY`, an object with the face below. Callers (engines, the serving layer, the
CLI) use only this face; `get_family` is the one place that imports a family package by name.

Adding a family: a registry JSON naming `model_family: <package>` and a package here whose `__init__` defines
`FAMILY` (README, "Adding a family").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image

    from vlserve.messages import ChatMessage


class TransformersAdapter(Protocol):
    """What the Transformers engine asks of a family (a module or object)."""

    def load_model(self, model_dir: Path, *, dtype: Any, device_for: Any = None, device_map: Any = None,
                   int4_linear: Any = None) -> Any: ...  # fmt: skip

    def empty_model(self, model_dir: Path, dtype: Any) -> Any: ...

    def load_tokenizer(self, model_dir: Path) -> Any: ...

    def encode(self, tokenizer: Any, messages: Sequence[ChatMessage]) -> Any:
        """(input_ids, pixel_values, image_tokens, images): `images` has one record per image (key: pixel key +
        tile budget, tiles, pixel_values), in the order of the image-token runs in input_ids."""
        ...

    def image_feature_steps(self, model: Any, pixel_values: Any) -> Any:
        """A generator that yields after each small unit of vision work and returns the image's features, one row
        per image token; the same values however the caller slices it."""
        ...

    def image_token_id(self, model: Any) -> int: ...

    def stop_token_ids(self, model_dir: Path, tokenizer: Any) -> frozenset[int]: ...


class VllmAdapter(Protocol):
    """What the vLLM engine asks of a family (a module or object)."""

    DEFAULT_IMAGE_LIMIT: int

    def register_vllm_model(self) -> None: ...

    def model_view(self, model_dir: Path, outdir: Path) -> Path: ...

    def load_tokenizer(self, model_dir: Path) -> Any: ...

    def stop_token_ids(self, model_dir: Path, tokenizer: Any) -> tuple[int, ...]: ...

    def encode(self, tokenizer: Any, messages: Sequence[ChatMessage]) -> Any: ...


class Family(Protocol):
    """One family's face. Heavy modules are imported by the methods that need them, not by the package."""

    name: str  # the package name, the registry's `model_family`
    default_max_tiles: int  # tile budget of an image that names none
    vllm_config_types: tuple[str, ...]  # config `model_type`s its vLLM adapter registers with transformers

    def num_tiles(self, width: int, height: int, max_tiles: int | None = None) -> int:
        """How many tiles an image of this size costs (prompt tokens and the request's tile limit)."""
        ...

    def sample_frames(self, source: bytes, num_frames: int | None = None) -> list[Image]:
        """A video's frames as the family's models were trained to see them."""
        ...

    def transformers(self) -> TransformersAdapter: ...

    def vllm(self) -> VllmAdapter: ...

    def write_twin(self, architecture: str, outdir: Path, *, full_size: bool = False, seed: int = 0) -> Path:
        """An architecture twin of a registry spec's reference checkpoint (`architecture`): its real config and
        tokenizer, random weights, dimensions shrunk unless `full_size`."""
        ...


@cache
def family_names() -> tuple[str, ...]:
    """The family packages present."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def get_family(name: str) -> Family:
    if name not in family_names():
        raise LookupError(f"no model family {name!r} (there are: {', '.join(family_names())})")
    return importlib.import_module(f"{__name__}.{name}").FAMILY


__all__ = ["Family", "TransformersAdapter", "VllmAdapter", "family_names", "get_family"]
