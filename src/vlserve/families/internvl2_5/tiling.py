"""InternVL2.5 dynamic tiling: an image becomes 1-12 tiles of 448x448 (+ a thumbnail), normalised for the ViT.

Pixel-equal to InternVL's published `load_image` (`dynamic_preprocess` + `build_transform`):
- grids (cols, rows) with min_tiles <= cols*rows <= max_tiles, in InternVL's order (its set of grids sorted by
  area; the set's iteration order is deterministic for small-int tuples and decides equal-area ties);
- the grid whose cols/rows is closest to width/height wins; on an exactly equal difference a later grid replaces
  the best one if the image area > 0.5 * 448² * cols * rows (a bigger grid only for images big enough to fill it);
- the RGB image is resized once to (448*cols, 448*rows) with PIL bicubic and cut into tiles row-major; when there
  is more than one tile a 448x448 bicubic resize of the whole image is appended as the thumbnail;
- ToTensor (/255) then ImageNet mean/std, in float32. InternVL's extra `Resize((448, 448))` in `build_transform`
  is a no-op: every tile and the thumbnail are already 448x448 (PIL returns a copy for a same-size resize).

Fast path: one resize per grid plus one for the thumbnail (overlapped in a worker thread), tiles as numpy views,
normalisation as a 256-entry float32 lookup table per channel computed with the reference's own float32
operations, so values are bit-equal.

transformers' `GotOcr2ImageProcessorPil(crop_to_patches=True)` implements the same rule; it orders equal-area
grids by width instead of by InternVL's set order, which only matters when two equal-area grids tie for the
closest ratio; with min_tiles=1 a square grid is always strictly closer, so the two pick the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from vlserve.families.internvl2_5 import DEFAULT_MAX_TILES

if TYPE_CHECKING:
    import torch

TILE = 448
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageInput(NamedTuple):
    """One image to tile, with its own tile budget (video frames and OpenAI detail "low" use 1)."""

    image: Image.Image
    max_tiles: int = DEFAULT_MAX_TILES


@lru_cache(maxsize=64)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """The (cols, rows) grids InternVL considers, in the order it scans them."""
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    }
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def tile_grid(
    width: int, height: int, min_tiles: int = 1, max_tiles: int = DEFAULT_MAX_TILES, tile: int = TILE
) -> tuple[int, int]:
    """The (cols, rows) grid InternVL picks for an image of this size."""
    if width <= 0 or height <= 0 or not 1 <= min_tiles <= max_tiles:
        raise ValueError(f"need a positive image size and 1 <= min_tiles <= max_tiles, got "
                         f"{width}x{height}, min_tiles={min_tiles}, max_tiles={max_tiles}")
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def num_tiles(
    width: int,
    height: int,
    max_tiles: int = DEFAULT_MAX_TILES,
    min_tiles: int = 1,
    use_thumbnail: bool = True,
    tile: int = TILE,
) -> int:
    """How many 448x448 tiles (thumbnail included) an image of this size becomes, without touching pixels."""
    cols, rows = tile_grid(width, height, min_tiles, max_tiles, tile)
    blocks = cols * rows
    return blocks + 1 if use_thumbnail and blocks > 1 else blocks


def _resized(
    image: Image.Image, max_tiles: int, min_tiles: int, use_thumbnail: bool, tile: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """The whole image resized to its grid (HWC uint8), the thumbnail (or None) and the grid."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    image.load()  # decode once here, not concurrently from two resizes
    cols, rows = tile_grid(image.width, image.height, min_tiles, max_tiles, tile)
    thumb = None
    if use_thumbnail and cols * rows > 1:  # PIL releases the GIL while resampling: overlap the two resizes
        thumb = _resizer().submit(_bicubic, image, (tile, tile))
    canvas = _bicubic(image, (cols * tile, rows * tile))
    return canvas, thumb.result() if thumb is not None else None, (cols, rows)


def _bicubic(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


@lru_cache(maxsize=1)
def _resizer() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="vlserve-tiling")


def _tile_views(canvas: np.ndarray, grid: tuple[int, int], tile: int) -> np.ndarray:
    """Tiles of a (rows*tile, cols*tile, 3) canvas as a (rows, cols, 3, tile, tile) view (no copy)."""
    cols, rows = grid
    return canvas.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 4, 1, 3)


def tile_images(
    image: Image.Image,
    max_tiles: int = DEFAULT_MAX_TILES,
    min_tiles: int = 1,
    use_thumbnail: bool = True,
    tile: int = TILE,
) -> list[Image.Image]:
    """The RGB tiles (row-major, thumbnail last) InternVL feeds to its ViT for this image."""
    canvas, thumb, (cols, rows) = _resized(image, max_tiles, min_tiles, use_thumbnail, tile)
    tiles = [
        Image.fromarray(canvas[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])
        for r in range(rows)
        for c in range(cols)
    ]
    return tiles + ([Image.fromarray(thumb)] if thumb is not None else [])


@lru_cache(maxsize=1)
def _normalise_table() -> np.ndarray:
    """float32 [3, 256]: value v of channel c -> (v/255 - mean[c]) / std[c], with the reference's float32 ops."""
    import torch

    values = torch.arange(256, dtype=torch.uint8).to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None]
    return values[None, :].sub(mean).div(std).numpy()


def _normalise_into(out: np.ndarray, tiles: np.ndarray) -> None:
    """Write normalised float32 pixels of uint8 `tiles` (.., 3, H, W) into `out` (n, 3, H, W)."""
    table = _normalise_table()
    target = out.reshape(tiles.shape)
    for channel in range(3):
        np.take(table[channel], tiles[..., channel, :, :], out=target[..., channel, :, :], mode="clip")


def pixel_values(
    images: Image.Image | Sequence[ImageInput | tuple[Image.Image, int]],
    max_tiles: int = DEFAULT_MAX_TILES,
    min_tiles: int = 1,
    use_thumbnail: bool = True,
    tile: int = TILE,
) -> torch.Tensor:
    """float32 [n_tiles, 3, 448, 448] for one image, or for (image, max_tiles) pairs concatenated in order."""
    import torch

    inputs = [(images, max_tiles)] if isinstance(images, Image.Image) else list(images)
    resized = [_resized(image, budget, min_tiles, use_thumbnail, tile) for image, budget in inputs]
    total = sum(g[0] * g[1] + (thumb is not None) for _, thumb, g in resized)
    out = np.empty((total, 3, tile, tile), dtype=np.float32)
    start = 0
    for canvas, thumb, (cols, rows) in resized:
        blocks = cols * rows
        _normalise_into(out[start : start + blocks], _tile_views(canvas, (cols, rows), tile))
        if thumb is not None:
            _normalise_into(out[start + blocks : start + blocks + 1], thumb.transpose(2, 0, 1)[None])
        start += blocks + (thumb is not None)
    return torch.from_numpy(out)
