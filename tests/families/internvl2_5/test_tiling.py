"""Tiling against a plain re-implementation of InternVL's published `dynamic_preprocess` + `build_transform`,
and against transformers' GotOcr2ImageProcessorPil (the PIL backend, usable without torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlserve.families.internvl2_5.tiling import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageInput,
    num_tiles,
    pixel_values,
    tile_grid,
    tile_images,
)

SIZE = 448


# --- the reference, written loop by loop from InternVL's README (`load_image`) --------------------------------
def reference_grid(width: int, height: int, min_num: int = 1, max_num: int = 12) -> tuple[int, int]:
    targets = set()
    for n in range(min_num, max_num + 1):
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                if min_num <= i * j <= max_num:
                    targets.add((i, j))
    targets = sorted(targets, key=lambda r: r[0] * r[1])
    aspect = width / height
    best_diff, best = float("inf"), (1, 1)
    for ratio in targets:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and width * height > 0.5 * SIZE * SIZE * ratio[0] * ratio[1]:
            best = ratio
    return best


def reference_tiles(image: Image.Image, max_num: int = 12, min_num: int = 1) -> list[Image.Image]:
    image = image.convert("RGB")
    cols, rows = reference_grid(image.width, image.height, min_num, max_num)
    resized = image.resize((SIZE * cols, SIZE * rows), Image.Resampling.BICUBIC)
    tiles = []
    for i in range(cols * rows):
        left, top = (i % cols) * SIZE, (i // cols) * SIZE
        tiles.append(resized.crop((left, top, left + SIZE, top + SIZE)))
    if len(tiles) != 1:
        tiles.append(image.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return tiles


def reference_pixels(image: Image.Image, max_num: int = 12) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    out = []
    for tile in reference_tiles(image, max_num):
        tile = tile.resize((SIZE, SIZE), Image.Resampling.BICUBIC)  # build_transform's Resize((448, 448))
        tensor = torch.from_numpy(np.array(tile)).permute(2, 0, 1).to(torch.float32).div(255)  # ToTensor
        out.append(tensor.sub(mean).div(std))  # Normalize
    return torch.stack(out)


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(data[..., 0] if channels == 1 else data, mode)


# --- grids ----------------------------------------------------------------------------------------------------
SIZES = {
    "square-one-tile": ((448, 448), (1, 1)),  # ties with 2x2, 3x3, but too small for them
    "square-tie-2x2": ((800, 800), (2, 2)),  # area > half of 2x2, < half of 3x3
    "square-tie-3x3": ((1000, 1000), (3, 3)),
    "wide-4to1": ((1600, 400), (4, 1)),
    "tall-1to3": ((300, 900), (1, 3)),
    "tiny": ((10, 10), (1, 1)),
    "huge": ((8000, 6000), (4, 3)),
    "ratio-1.5-exact-3x2": ((600, 400), (3, 2)),
    "hd": ((1920, 1080), (4, 2)),  # 2x1 and 4x2 tie; big image -> 4x2
    "small-hd": ((192, 108), (2, 1)),  # same tie, small image keeps 2x1
    "vga": ((640, 480), (4, 3)),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_grid_for_named_sizes(name: str) -> None:
    (width, height), grid = SIZES[name]
    assert tile_grid(width, height) == grid == reference_grid(width, height)
    blocks = grid[0] * grid[1]
    assert num_tiles(width, height) == (blocks + 1 if blocks > 1 else blocks)


def test_grid_matches_reference_over_a_sweep() -> None:
    lengths = [1, 7, 100, 224, 300, 447, 448, 449, 500, 672, 896, 1000, 1344, 1792, 2000, 4000]
    for width in lengths:
        for height in lengths:
            for min_num, max_num in ((1, 12), (1, 6), (1, 1), (2, 12), (4, 9)):
                got = tile_grid(width, height, min_num, max_num)
                assert got == reference_grid(width, height, min_num, max_num), (width, height, min_num, max_num)


def test_one_tile_budget_means_no_thumbnail() -> None:
    assert tile_grid(3000, 200, max_tiles=1) == (1, 1)
    assert num_tiles(3000, 200, max_tiles=1) == 1
    assert num_tiles(3000, 200, use_thumbnail=False) == 12


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError):
        tile_grid(0, 10)
    with pytest.raises(ValueError):
        tile_grid(10, 10, min_tiles=3, max_tiles=2)


# --- pixels ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "mode", "max_tiles"),
    [((10, 10), "RGB", 12), ((300, 900), "RGB", 12), ((1000, 1000), "RGB", 12), ((1600, 400), "RGBA", 12),
     ((640, 480), "L", 6), ((500, 300), "RGB", 1)],
)
def test_pixels_equal_reference(size: tuple[int, int], mode: str, max_tiles: int) -> None:
    image = noise(*size, mode=mode)
    fast = pixel_values(image, max_tiles=max_tiles)
    expected = reference_pixels(image, max_tiles)
    assert fast.dtype == torch.float32 and fast.shape == expected.shape
    assert fast.shape[0] == num_tiles(*size, max_tiles=max_tiles)
    assert (fast - expected).abs().max().item() <= 1e-6


def test_several_images_concatenate_in_order() -> None:
    first, second = noise(900, 450, seed=1), noise(200, 200, seed=2)
    batch = pixel_values([ImageInput(first, 4), (second, 12)])
    expected = torch.cat([reference_pixels(first, 4), reference_pixels(second, 12)])
    assert batch.shape == (3 + 1, 3, SIZE, SIZE)
    assert torch.equal(batch, expected)


def test_tile_images_are_the_reference_tiles() -> None:
    image = noise(700, 300, mode="RGBA", seed=3)
    tiles, expected = tile_images(image), reference_tiles(image)
    assert len(tiles) == len(expected) == num_tiles(700, 300)
    for tile, ref in zip(tiles, expected, strict=True):
        assert tile.mode == "RGB" and tile.size == (SIZE, SIZE)
        assert np.array_equal(np.asarray(tile), np.asarray(ref))


# --- transformers' GotOcr2 image processor (PIL backend) -------------------------------------------------------
@pytest.fixture(scope="module")
def got_ocr2():
    from transformers import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(
        crop_to_patches=True, size={"height": SIZE, "width": SIZE},
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), max_patches=12,
    )


def test_grid_matches_got_ocr2() -> None:
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    lengths = [1, 10, 100, 300, 448, 449, 640, 896, 1000, 1080, 1920, 2160, 3840]
    for width in lengths:
        for height in lengths:
            assert tile_grid(width, height) == get_optimal_tiled_canvas((height, width), (SIZE, SIZE), 1, 12)


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (333, 999)])
def test_pixels_match_got_ocr2(got_ocr2, size: tuple[int, int]) -> None:
    image = noise(*size, seed=4)
    theirs = got_ocr2(image, return_tensors="pt")
    ours = pixel_values(image)
    assert theirs["num_patches"].tolist() == [ours.shape[0]]
    assert (ours - theirs["pixel_values"]).abs().max().item() <= 1e-5
