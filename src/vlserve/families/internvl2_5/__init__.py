"""Everything InternVL2.5-specific: reference configs, tokenizers, tiling, prompts, video frames, weight
conversion, AWQ packing and architecture twins. `FAMILY` is the family's face (vlserve.families.Family); the
modules behind it are imported when first needed (no heavy imports here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

    from vlserve.families import TransformersAdapter, VllmAdapter

DEFAULT_MAX_TILES = 12  # InternVL's `max_dynamic_patch`: tiles of an image that names no budget


class InternVL25:
    name = "internvl2_5"
    default_max_tiles = DEFAULT_MAX_TILES
    vllm_config_types = ("internvl_chat",)

    def num_tiles(self, width: int, height: int, max_tiles: int | None = None) -> int:
        from vlserve.families.internvl2_5.tiling import num_tiles

        return num_tiles(width, height, max_tiles=max_tiles or self.default_max_tiles)

    def sample_frames(self, source: bytes, num_frames: int | None = None) -> list[Image]:
        from vlserve.families.internvl2_5.video import DEFAULT_NUM_FRAMES, sample_frames

        return sample_frames(source, num_frames or DEFAULT_NUM_FRAMES)

    def transformers(self) -> TransformersAdapter:
        from vlserve.families.internvl2_5 import loader

        return loader

    def vllm(self) -> VllmAdapter:
        from vlserve.families.internvl2_5 import vllm_support

        return vllm_support

    def write_twin(self, architecture: str, outdir: Path, *, full_size: bool = False, seed: int = 0) -> Path:
        from vlserve.families.internvl2_5.twin import write_twin

        return write_twin(architecture, outdir, full_size=full_size, seed=seed)


FAMILY = InternVL25()
