"""P3: InternVL tiling + normalisation (`vlserve.families.internvl2_5.tiling.pixel_values`, max 12 tiles) against
transformers' `GotOcr2ImageProcessorPil` set up as InternVL (crop_to_patches, 448, ImageNet mean/std, 1-12
patches), on the same decoded PIL image, same output tensor [tiles, 3, 448, 448] float32.

Per size: max |ours - reference| (target ≤ 1e-5), speed-up = reference time / ours (target > 1: faster on every
size), and ours / floor, the floor being the PIL bicubic resizes alone (image → grid canvas, image → thumbnail,
one after the other): what any implementation must spend; ours can dip under 1 because it overlaps the two.
"""

from __future__ import annotations

from benchmarks.results import ScenarioResult
from benchmarks.scenarios import Context
from benchmarks.stats import Figure, Target, at_most, paired, ratios, timed
from benchmarks.threads import on_own_thread
from benchmarks.workload import synthetic_image

ID, TITLE = "P3", "InternVL tiling + normalisation"
BASELINE = "transformers GotOcr2ImageProcessorPil (crop_to_patches, 448, ImageNet mean/std)"
FASTER = Target("> 1× (faster)", low=1.0 + 1e-9)


def run(ctx: Context) -> ScenarioResult:
    return on_own_thread(_run, ctx)  # its torch work must leave no OpenMP team behind (benchmarks/threads.py)


def _run(ctx: Context) -> ScenarioResult:
    from vlserve.families.internvl2_5 import tiling

    result = ScenarioResult(ID, TITLE, BASELINE)
    reference = _reference_processor()
    for width, height in ctx.config.p3_sizes:
        image = synthetic_image(width, height)
        image.load()
        label = f"{width}×{height} ({tiling.num_tiles(width, height)} tiles)"
        ours = tiling.pixel_values(image)
        theirs = reference(image, return_tensors="pt")["pixel_values"]
        if ours.shape != theirs.shape:
            raise AssertionError(f"{label}: shapes differ, ours {tuple(ours.shape)} vs reference {tuple(theirs.shape)}")
        result.check(Figure.of(f"{label}: max abs diff", "", [float((ours - theirs).abs().max())]), at_most(1e-5))
        times = paired(ctx.config.p3_repeats, {
            "ours": lambda image=image: timed(lambda: tiling.pixel_values(image))[0],
            "reference": lambda image=image: timed(lambda: reference(image, return_tensors="pt"))[0],
            "floor": lambda image=image: timed(lambda: _resizes_alone(image))[0],
        })  # fmt: skip
        result.check(Figure.of(f"{label}: speed-up vs reference", "×", ratios(times["reference"], times["ours"])), FASTER)
        result.check(Figure.of(f"{label}: ours / resize floor", "×", ratios(times["ours"], times["floor"])))
        result.add(*(Figure.of(f"{label}: {side} time", "ms", [t * 1e3 for t in samples])
                     for side, samples in times.items()))  # fmt: skip
        ctx.log(f"P3 {label}: ours {_ms(times['ours'])}, reference {_ms(times['reference'])}, floor {_ms(times['floor'])}")
    result.notes.append("inputs: seeded synthetic photo-like RGB images, decoded before timing (decoding is not tiling)")
    return result


def _reference_processor():
    from transformers import GotOcr2ImageProcessorPil

    from vlserve.families.internvl2_5.tiling import (
        DEFAULT_MAX_TILES,
        IMAGENET_MEAN,
        IMAGENET_STD,
        TILE,
    )

    return GotOcr2ImageProcessorPil(
        crop_to_patches=True, size={"height": TILE, "width": TILE}, min_patches=1, max_patches=DEFAULT_MAX_TILES,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
    )  # fmt: skip


def _resizes_alone(image) -> None:
    from PIL import Image

    from vlserve.families.internvl2_5.tiling import TILE, tile_grid

    cols, rows = tile_grid(image.width, image.height)
    image.resize((cols * TILE, rows * TILE), Image.Resampling.BICUBIC)
    if cols * rows > 1:
        image.resize((TILE, TILE), Image.Resampling.BICUBIC)


def _ms(samples: list[float]) -> str:
    return f"{sorted(samples)[len(samples) // 2] * 1e3:.1f} ms"
