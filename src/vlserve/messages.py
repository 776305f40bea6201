"""The conversation as every layer sees it: roles, text, decoded images and sampled video frames.

Neither the engines nor the model families own these records: the serving layer builds them from API requests,
a family renders them into its prompt, an engine hands them to its family. Images are PIL images, already decoded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    text: str


def pixel_key(image: Image) -> str:
    """The identity of a decoded image: a hash of its mode, size and pixels (not of the bytes it was sent as, so
    the same picture sent as PNG and as a data URI, or fetched twice, is one image). ~1 ms per megapixel."""
    digest = hashlib.blake2b(f"{image.mode}/{image.width}x{image.height}/".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImagePart:
    image: Image
    max_tiles: int | None = None  # None: the model's default (12 for InternVL2.5); 1 for OpenAI detail "low"
    key: str = field(default="", compare=False)  # pixel_key(image), computed once here where the image is decoded

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", pixel_key(self.image))


@dataclass(frozen=True)
class VideoPart:
    frames: tuple[Image, ...]  # already sampled; one tile each
    keys: tuple[str, ...] = field(default=(), compare=False)  # pixel_key of each frame

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.frames):
            object.__setattr__(self, "keys", tuple(pixel_key(frame) for frame in self.frames))


Part = TextPart | ImagePart | VideoPart


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: tuple[Part, ...]

    @classmethod
    def text(cls, role: Role, text: str) -> ChatMessage:
        return cls(role, (TextPart(text),))
