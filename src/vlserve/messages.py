"""The conversation as every layer sees it: roles, text, decoded images and sampled video frames.

Neither the engines nor the model families own these records: the serving layer builds them from API requests,
a family renders them into its prompt, an engine hands them to its family. Images are PIL images, already decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: Image
    max_tiles: int | None = None  # None: the model's default (12 for InternVL2.5); 1 for OpenAI detail "low"


@dataclass(frozen=True)
class VideoPart:
    frames: tuple[Image, ...]  # already sampled; one tile each


Part = TextPart | ImagePart | VideoPart


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: tuple[Part, ...]

    @classmethod
    def text(cls, role: Role, text: str) -> ChatMessage:
        return cls(role, (TextPart(text),))
