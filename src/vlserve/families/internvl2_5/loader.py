"""What the Transformers engine asks of the InternVL2.5 family: load the model and tokenizer, turn a conversation
into (token ids, pixel values), and say when to stop. The engine imports this module by the family's name and never
looks inside the model beyond transformers' generic VLM layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlserve.families.internvl2_5 import convert

if TYPE_CHECKING:
    import torch

    from vlserve.messages import ChatMessage


@dataclass(frozen=True)
class ImageRecord:
    """One image of a prompt: its identity (pixel key + tile budget), tile count and tiles."""

    key: str
    tiles: int
    pixel_values: torch.Tensor  # float32 [tiles, 3, 448, 448]: a view into EncodedPrompt.pixel_values


@dataclass(frozen=True)
class EncodedPrompt:
    input_ids: list[int]  # image context tokens included: one run of `image_token_id` per image, in order
    pixel_values: torch.Tensor | None  # float32 [tiles, 3, 448, 448], every image's tiles in order
    image_tokens: int
    images: tuple[ImageRecord, ...] = ()


def load_model(model_dir: Path, *, dtype: torch.dtype, device_for: Callable[[str], Any] | None = None,
               device_map: Any = None, int4_linear: Callable[..., Any] | None = None):  # fmt: skip
    """transformers' InternVLForConditionalGeneration with the checkpoint's weights (either format). AWQ layers
    become `int4_linear(q, zeros, scales, group_size=, device=, bias=)` modules where it returns one."""
    return convert.load_model(
        Path(model_dir), dtype=dtype, device_for=device_for, device_map=device_map, int4_linear=int4_linear
    )


def empty_model(model_dir: Path, dtype: torch.dtype):
    """The model on the meta device (for planning a multi-GPU split before loading)."""
    raw = convert.read_config(model_dir)
    if convert.is_original_format(raw):
        return convert.build_empty(convert.translate_config(raw, convert.image_token_id(model_dir)), dtype)
    from accelerate import init_empty_weights
    from transformers import AutoConfig, InternVLForConditionalGeneration

    with init_empty_weights(include_buffers=False):
        return InternVLForConditionalGeneration(AutoConfig.from_pretrained(str(model_dir)))


def load_tokenizer(model_dir: Path):
    from vlserve.families.internvl2_5.tokenizer import load_tokenizer as _load

    return _load(Path(model_dir))


def encode(tokenizer: Any, messages: Sequence[ChatMessage]) -> EncodedPrompt:
    """The internvl2_5 prompt with images expanded to 256 context tokens per tile, tokenized, plus pixels."""
    from vlserve.families.internvl2_5.prompt import NUM_IMAGE_TOKEN, render_conversation
    from vlserve.families.internvl2_5.tiling import pixel_values

    rendered = render_conversation(messages)
    pixels = pixel_values(list(rendered.images)) if rendered.images else None
    counts = rendered.tile_counts()
    if pixels is not None and sum(counts) != pixels.shape[0]:
        raise RuntimeError(f"tiling gave {pixels.shape[0]} tiles, the prompt expects {sum(counts)}")
    text = rendered.expand(counts)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return EncodedPrompt(list(ids), pixels, NUM_IMAGE_TOKEN * sum(counts), _records(rendered.keys, counts, pixels))


def _records(keys: Sequence[str], counts: Sequence[int], pixels: torch.Tensor | None) -> tuple[ImageRecord, ...]:
    records, start = [], 0
    for key, tiles in zip(keys, counts, strict=True):
        records.append(ImageRecord(key, tiles, pixels[start : start + tiles]))
        start += tiles
    return tuple(records)


def image_feature_steps(model: Any, pixel_values: torch.Tensor):
    """A generator over the vision encoder's units of work, returning the image's features (vision.py)."""
    from vlserve.families.internvl2_5.vision import feature_steps

    return feature_steps(model, pixel_values)


def image_token_id(model: Any) -> int:
    """The token id that stands for one image feature row in `input_ids`."""
    return int(model.config.image_token_id)


def stop_token_ids(model_dir: Path, tokenizer: Any) -> frozenset[int]:
    """`<|im_end|>` (as a token) plus the checkpoint's eos ids."""
    from vlserve.families.internvl2_5.prompt import stop_rules

    rules = stop_rules(Path(model_dir))
    ids = set(rules.token_ids)
    for text in rules.strings:
        token = tokenizer.convert_tokens_to_ids(text)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ids.add(token)
    return frozenset(ids)
