"""The vision tower + projector of transformers' InternVL, run as small units of work so an engine can interleave
an image's encoding with other requests' decode steps.

`feature_steps` is a generator: it yields after each unit (the patch embedding, then one encoder layer over a
group of tiles) and returns the image's features [tiles * 256, text hidden]. InternViT attends within a tile only,
so running the tiles in groups gives the same values as the whole batch; groups are fixed (one tile on CPU, the whole
image on a GPU; never chosen by timing), so an image's features are the same bits however its encoding was sliced. The rest is `get_image_features`' own
steps: final layernorm, dropping the CLS token, pixel shuffle, projector.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TILES_PER_UNIT = 1  # on CPU, one 448x448 tile through one encoder layer: ~0.1 s for InternViT-300M on 2 cores


def feature_steps(model: Any, pixel_values: torch.Tensor) -> Generator[None, None, torch.Tensor]:
    """Yield after each unit of the vision encoder; return the projected features of `pixel_values`' tiles."""
    import torch

    inner = model.model
    if inner.config.vision_feature_layer != -1:  # features from an inner layer: the tower in one go
        yield
        return _features(model, pixel_values)
    tower = inner.vision_tower
    device = next(tower.parameters()).device
    pixels = pixel_values.to(device=device, dtype=inner.dtype)
    group = TILES_PER_UNIT if device.type == "cpu" else len(pixels)  # a GPU wants the whole image per kernel
    hidden = [tower.embeddings(pixels[i : i + group]) for i in range(0, len(pixels), group)]
    yield
    for layer in tower.encoder.layer:
        for index, states in enumerate(hidden):
            hidden[index] = layer(states)
            yield
    return torch.cat([_project(inner, tower.layernorm(states)) for states in hidden])


def _features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    inner = model.model
    out = inner.get_image_features(
        pixel_values=pixel_values.to(next(inner.vision_tower.parameters()).device),
        vision_feature_layer=inner.config.vision_feature_layer,
        vision_feature_select_strategy=inner.config.vision_feature_select_strategy,
    )  # fmt: skip
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return features.reshape(-1, features.shape[-1])


def _project(inner: Any, states: torch.Tensor) -> torch.Tensor:
    """`get_image_features` after the tower: drop CLS, pixel-shuffle, project; [tiles * 256, text hidden]."""
    if inner.config.vision_feature_select_strategy == "default":
        states = states[:, 1:, :]
    batch, tokens = states.shape[0], states.shape[1]
    side = int(tokens**0.5)
    states = inner.pixel_shuffle(states.reshape(batch, side, side, -1), scale_factor=inner.config.downsample_ratio)
    states = inner.multi_modal_projector(states.reshape(batch, -1, states.shape[-1]))
    return states.reshape(-1, states.shape[-1])
