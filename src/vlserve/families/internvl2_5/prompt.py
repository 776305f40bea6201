"""The `internvl2_5` conversation template, image placement, and stop rules: one builder for every engine.

`render_conversation` turns engine-neutral `ChatMessage`s into a `RenderedPrompt`: the prompt text with a bare
`<image>` per image slot (what vLLM's InternVL processor expands itself) and the images in slot order. The
Transformers engine calls `RenderedPrompt.expand(tile_counts)` for the prompt with `<img><IMG_CONTEXT>…</img>`.

Template (InternVL `conversation.py`, MPT style; same for all 12 checkpoints):
    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user}<|im_end|>\\n
    <|im_start|>assistant\\n{assistant}<|im_end|>\\n … <|im_start|>assistant\\n

Rules, following InternVL's `chat()` and its README examples:
- System: InternVL's default message unless the request has system messages; several are joined with "\\n" in
  order (wherever they appear; the template has one system turn).
- Images go before the text of their user message: `<image>\\n` when the conversation has one image;
  `Image-1: <image>\\nImage-2: <image>\\n…` numbered across the whole conversation when it has several (earlier
  turns keep theirs); a video is `Frame1: <image>\\nFrame2: <image>\\n…` (numbered per video), one tile a frame.
- A user text may place its images itself with `<image>` markers (InternVL only prefixes when the question has
  none): one marker per image of that message, no labels added. `<image>` anywhere else is rejected, since vLLM
  would read it as an image slot.
- Several text parts of one message are joined with "\\n". Every history message ends with `<|im_end|>\\n`, an
  empty one too (InternVL's template would drop the separator after an empty message).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlserve.errors import InvalidRequest
from vlserve.families.internvl2_5.tiling import DEFAULT_MAX_TILES, ImageInput, num_tiles
from vlserve.messages import ChatMessage, ImagePart, Part, TextPart, VideoPart

DEFAULT_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
IMAGE_PLACEHOLDER = "<image>"
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
NUM_IMAGE_TOKEN = 256  # per 448x448 tile: (448/14)² patches, pixel-shuffled by 0.5 in each direction
STOP_STRINGS = (IM_END,)


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt as text pieces around image slots: len(pieces) == len(images) + 1."""

    pieces: tuple[str, ...]
    images: tuple[ImageInput, ...]
    keys: tuple[str, ...] = ()  # per image: its pixel key and tile budget ("<pixel_key>/<max_tiles>")

    @property
    def text_with_placeholders(self) -> str:
        """The prompt with a bare `<image>` per slot (for vLLM)."""
        return IMAGE_PLACEHOLDER.join(self.pieces)

    def tile_counts(self) -> list[int]:
        """Tiles per image slot, from image sizes alone (thumbnail included)."""
        return [num_tiles(image.width, image.height, budget) for image, budget in self.images]

    def expand(self, tile_counts: Sequence[int] | None = None, num_image_token: int = NUM_IMAGE_TOKEN) -> str:
        """The prompt with each slot as `<img>` + `<IMG_CONTEXT>` × (num_image_token·tiles) + `</img>`."""
        counts = self.tile_counts() if tile_counts is None else list(tile_counts)
        if len(counts) != len(self.images):
            raise ValueError(f"{len(counts)} tile counts for {len(self.images)} images")
        out = [self.pieces[0]]
        for tiles, piece in zip(counts, self.pieces[1:], strict=True):
            out += [IMG_START, IMG_CONTEXT * (num_image_token * tiles), IMG_END, piece]
        return "".join(out)


class _Pieces:
    """Accumulates text and image slots into `RenderedPrompt` pieces."""

    def __init__(self) -> None:
        self.pieces: list[str] = [""]
        self.images: list[ImageInput] = []
        self.keys: list[str] = []

    def text(self, text: str) -> None:
        self.pieces[-1] += text

    def image(self, image: ImageInput, pixel_key: str) -> None:
        self.images.append(image)
        self.keys.append(f"{pixel_key}/{image.max_tiles}")
        self.pieces.append("")

    def done(self) -> RenderedPrompt:
        return RenderedPrompt(tuple(self.pieces), tuple(self.images), tuple(self.keys))


def render_conversation(
    messages: Sequence[ChatMessage],
    default_system: str = DEFAULT_SYSTEM_MESSAGE,
    default_max_tiles: int = DEFAULT_MAX_TILES,
) -> RenderedPrompt:
    """Render a conversation with the `internvl2_5` template; the prompt ends with the assistant's turn open."""
    out = _Pieces()
    out.text(f"{IM_START}system\n{_system_text(messages, default_system)}{IM_END}\n")
    labelled = sum(isinstance(p, ImagePart) for m in messages for p in m.content) > 1
    numbers = itertools.count(1)
    for message in messages:
        if message.role == "system":
            continue
        out.text(f"{IM_START}{message.role}\n")
        if message.role == "user":
            _render_user(out, message.content, labelled, numbers, default_max_tiles)
        else:
            out.text(_plain_text(message))
        out.text(f"{IM_END}\n")
    out.text(f"{IM_START}assistant\n")
    return out.done()


def _system_text(messages: Sequence[ChatMessage], default: str) -> str:
    texts = [_plain_text(m) for m in messages if m.role == "system"]
    return "\n".join(texts) if texts else default


def _plain_text(message: ChatMessage) -> str:
    """The text of a system or assistant message, which may carry no images."""
    if any(not isinstance(part, TextPart) for part in message.content):
        raise InvalidRequest(f"a {message.role} message can only carry text; send images and videos in user messages")
    text = "\n".join(part.text for part in message.content)
    if IMAGE_PLACEHOLDER in text:
        raise InvalidRequest(f"a {message.role} message contains '{IMAGE_PLACEHOLDER}', which marks an image slot; "
                             "remove it or put it in the user message that carries the image")
    return text


def _render_user(out: _Pieces, parts: Sequence[Part], labelled: bool, numbers: Iterator[int], max_tiles: int) -> None:
    text = "\n".join(part.text for part in parts if isinstance(part, TextPart))
    visuals = [part for part in parts if not isinstance(part, TextPart)]
    if IMAGE_PLACEHOLDER in text:
        _render_placed(out, text, visuals, numbers, max_tiles)
        return
    for part in visuals:
        if isinstance(part, ImagePart):
            label = f"Image-{next(numbers)}: " if labelled else ""
            out.text(label)
            out.image(ImageInput(part.image, part.max_tiles or max_tiles), part.key)
            out.text("\n")
        else:
            _render_video(out, part)
    out.text(text)


def _render_video(out: _Pieces, video: VideoPart) -> None:
    for index, (frame, key) in enumerate(zip(video.frames, video.keys, strict=True), start=1):
        out.text(f"Frame{index}: ")
        out.image(ImageInput(frame, 1), key)
        out.text("\n")


def _render_placed(
    out: _Pieces, text: str, visuals: Sequence[Part], numbers: Iterator[int], max_tiles: int
) -> None:
    """A user text with its own `<image>` markers: one per image of the message, filled in order."""
    chunks = text.split(IMAGE_PLACEHOLDER)
    markers = len(chunks) - 1
    if markers != len(visuals) or not all(isinstance(part, ImagePart) for part in visuals):
        raise InvalidRequest(f"the message text has {markers} '{IMAGE_PLACEHOLDER}' marker(s) but carries "
                             f"{len(visuals)} image(s)/video(s); place one marker per image, or none to let vlserve "
                             "place them (videos are always placed by vlserve)")
    out.text(chunks[0])
    for part, chunk in zip(visuals, chunks[1:], strict=True):
        next(numbers)  # keeps the numbering of later auto-placed images in step
        out.image(ImageInput(part.image, part.max_tiles or max_tiles), part.key)
        out.text(chunk)


@dataclass(frozen=True)
class StopRules:
    """When generation stops: on any of these strings, or on any of these token ids."""

    strings: tuple[str, ...]
    token_ids: tuple[int, ...]


def stop_rules(model_dir: Path) -> StopRules:
    """`<|im_end|>` plus the checkpoint's eos ids (generation_config.json, else config.json's llm_config)."""
    return StopRules(STOP_STRINGS, eos_token_ids(model_dir))


def eos_token_ids(model_dir: Path) -> tuple[int, ...]:
    model_dir = Path(model_dir)
    for name, keys in (("generation_config.json", ()), ("config.json", ("llm_config",))):
        path = model_dir / name
        if not path.is_file():
            continue
        section = json.loads(path.read_text(encoding="utf-8"))
        for key in keys:
            section = section.get(key) or {}
        eos = section.get("eos_token_id")
        if eos is not None:
            return tuple(eos) if isinstance(eos, list) else (int(eos),)
    return ()
