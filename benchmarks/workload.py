"""The request mix, built once and handed to both sides of a comparison: an OpenAI chat body for HTTP clients and
the equivalent `GenerateRequest` for an in-process engine. Greedy decoding and `ignore_eos` with a fixed
`max_tokens`, so every request produces exactly that many tokens on either side (the load generators check it).

Images are synthetic (seeded, photo-like: smooth colour fields plus fine noise, so resizes and PNG decoding do real
work) and travel as PNG data URIs, which decode to the very pixels the in-process side gets.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

PROMPTS = (
    "Describe this picture in detail.",
    "What colours dominate the image, and where?",
    "Write a short story inspired by this scene.",
    "List every object you can see.",
)
TEXT_PROMPTS = (
    "Explain how a bicycle gear works to a ten-year-old.",
    "Write a short poem about the sea in winter.",
    "Summarise the causes of the French Revolution in a paragraph.",
    "Give three tips for learning a new language.",
)


@lru_cache(maxsize=16)
def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                     Image.Resampling.BICUBIC)  # fmt: skip
    noise = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    pixels = np.clip(np.asarray(coarse, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@lru_cache(maxsize=16)
def _png_data_uri(width: int, height: int, seed: int) -> str:
    buf = io.BytesIO()
    synthetic_image(width, height, seed).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass(frozen=True)
class RequestSpec:
    text: str
    max_tokens: int
    image_size: tuple[int, int] | None = None  # (width, height); None: text only
    image_seed: int = 0
    max_tiles: int = 12
    extra: dict[str, Any] = field(default_factory=dict)  # extra body fields (e.g. vLLM's min_tokens)

    def openai_body(self, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if self.image_size is not None:
            content.append({"type": "image_url", "image_url": {"url": _png_data_uri(*self.image_size, self.image_seed)}})
        content.append({"type": "text", "text": self.text})
        body = {
            "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": self.max_tokens,
            "temperature": 0.0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
            **self.extra,
        }  # fmt: skip
        if self.image_size is not None:
            body["max_tiles"] = self.max_tiles
        return body

    def engine_request(self, request_id: str):
        from vlserve.engines.base import GenerateRequest, SamplingParams
        from vlserve.messages import ChatMessage, ImagePart, TextPart

        parts: list = []
        if self.image_size is not None:
            parts.append(ImagePart(synthetic_image(*self.image_size, self.image_seed), self.max_tiles))
        parts.append(TextPart(self.text))
        sampling = SamplingParams(max_tokens=self.max_tokens, temperature=0.0, ignore_eos=True)
        return GenerateRequest(request_id, (ChatMessage("user", tuple(parts)),), sampling)


def image_mix(count: int, max_tokens: int, max_tiles: int, size: tuple[int, int] = (640, 480)) -> list[RequestSpec]:
    """`count` requests, each one image (own seed) with `max_tiles` and a prompt from PROMPTS."""
    return [RequestSpec(PROMPTS[i % len(PROMPTS)], max_tokens, size, image_seed=i, max_tiles=max_tiles)
            for i in range(count)]  # fmt: skip


def text_mix(count: int, max_tokens: int) -> list[RequestSpec]:
    return [RequestSpec(TEXT_PROMPTS[i % len(TEXT_PROMPTS)], max_tokens) for i in range(count)]


def thirteen_tile_size() -> tuple[int, int]:
    """A 4:3 image large enough that InternVL picks the 4x3 grid: 12 tiles + thumbnail = 13 with max_tiles 12."""
    return (1920, 1440)
