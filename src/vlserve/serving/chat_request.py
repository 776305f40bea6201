"""OpenAI chat request -> engine `GenerateRequest`: refuse what is not supported, turn messages into typed parts
(images decoded, videos sampled to frames) within the server's input limits, and sampling fields into
`SamplingParams`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlserve.config import ServerConfig
from vlserve.engines.base import SamplingParams
from vlserve.errors import InvalidRequest
from vlserve.families import get_family
from vlserve.messages import ChatMessage, ImagePart, Part, TextPart, VideoPart
from vlserve.registry import ResolvedSpec
from vlserve.serving.media import Fetcher, load_bytes, open_image
from vlserve.serving.protocol import ChatCompletionRequest, ImageContent, Message, TextContent, VideoContent

_SERVER = ServerConfig()


@dataclass(frozen=True)
class InputLimits:
    """What one request may carry (ServerConfig sets them)."""

    media_max_bytes: int = _SERVER.media_max_bytes
    max_image_pixels: int = _SERVER.max_image_pixels
    max_images: int = _SERVER.max_images_per_request  # images and videos
    max_total_tiles: int = _SERVER.max_total_tiles  # 448x448 tiles of all images and video frames

    @classmethod
    def from_config(cls, config: ServerConfig) -> InputLimits:
        return cls(media_max_bytes=config.media_max_bytes, max_image_pixels=config.max_image_pixels,
                   max_images=config.max_images_per_request, max_total_tiles=config.max_total_tiles)  # fmt: skip


# field -> "is it set to something we cannot honour?"
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": bool,
    "tool_choice": lambda v: v not in (None, "none"),
    "functions": bool,
    "function_call": lambda v: v not in (None, "none"),
    "logit_bias": bool,
    "audio": lambda v: v is not None,
    "prediction": lambda v: v is not None,
}


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    for name, is_set in _UNSUPPORTED.items():
        if is_set(getattr(body, name)):
            raise InvalidRequest(f"'{name}' is not supported by this server; remove it from the request", param=name)


def logprobs_asked(body: ChatCompletionRequest) -> int | None:
    """Alternatives per token when the request asks for logprobs, else None (top_logprobs needs logprobs)."""
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    return (body.top_logprobs or 0) if body.logprobs else None


def to_sampling(body: ChatCompletionRequest, max_model_len: int | None) -> SamplingParams:
    if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
        raise InvalidRequest(
            "max_tokens and max_completion_tokens disagree; send only one of them", param="max_completion_tokens"
        )
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens and max_model_len and max_tokens >= max_model_len:
        raise InvalidRequest(
            f"max_tokens {max_tokens} leaves no room for the prompt in this model's {max_model_len}-token context",
            param="max_tokens",
        )
    fields = {
        "max_tokens": max_tokens,
        "strict_max_tokens": bool(max_tokens) or None,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": -1 if body.top_k == 0 else body.top_k,
        "repetition_penalty": body.repetition_penalty,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "seed": body.seed,
        "stop": tuple(body.stop) if body.stop else None,
    }
    return SamplingParams(n=body.n, ignore_eos=body.ignore_eos, **{k: v for k, v in fields.items() if v is not None})


class MessageConverter:
    """Turns one request's messages into `ChatMessage`s, fetching and decoding media off the event loop, counting
    images and tiles against the limits as it goes."""

    def __init__(
        self, body: ChatCompletionRequest, resolved: ResolvedSpec, fetch: Fetcher, limits: InputLimits = InputLimits()
    ) -> None:
        self.body = body
        self.resolved = resolved
        self.fetch = fetch
        self.limits = limits
        self.tiles = 0
        self._family = get_family(resolved.family.model_family)

    async def convert(self) -> tuple[ChatMessage, ...]:
        self._check_media_count()
        return tuple([await self._message(i, m) for i, m in enumerate(self.body.messages)])

    def _check_media_count(self) -> None:
        count = sum(
            1 for m in self.body.messages if isinstance(m.content, list)
            for p in m.content if not isinstance(p, TextContent)
        )  # fmt: skip
        if count > self.limits.max_images:
            raise InvalidRequest(f"this request has {count} images and videos; this server accepts at most "
                                 f"{self.limits.max_images} per request", param="messages")  # fmt: skip

    def _add_tiles(self, tiles: int, where: str) -> None:
        self.tiles += tiles
        if self.tiles > self.limits.max_total_tiles:
            raise InvalidRequest(
                f"the images up to {where} make {self.tiles} tiles of 448x448; this server accepts at most "
                f"{self.limits.max_total_tiles} per request; send fewer images, detail 'low' or a lower max_tiles",
                param=where,
            )

    async def _message(self, i: int, message: Message) -> ChatMessage:
        where = f"messages.{i}"
        if message.role in ("tool", "function") or message.tool_calls:
            raise InvalidRequest("tool and function messages are not supported by this server", param=where)
        role = "system" if message.role == "developer" else message.role
        if message.content is None:
            return ChatMessage(role, ())
        if isinstance(message.content, str):
            return ChatMessage.text(role, message.content)
        parts = [await self._part(f"{where}.content.{j}", role, p) for j, p in enumerate(message.content)]
        return ChatMessage(role, tuple(parts))

    async def _part(self, where: str, role: str, part: TextContent | ImageContent | VideoContent) -> Part:
        if isinstance(part, TextContent):
            return TextPart(part.text)
        if role != "user":
            raise InvalidRequest("images and videos are accepted in user messages only", param=where)
        if isinstance(part, ImageContent):
            return await self._image(f"{where}.image_url", part)
        return await self._video(f"{where}.video_url", part)

    async def _image(self, where: str, part: ImageContent) -> ImagePart:
        url, detail = (part.image_url, "auto") if isinstance(part.image_url, str) else (
            part.image_url.url,
            part.image_url.detail,
        )
        data = await load_bytes(url, self.fetch, param=where, max_bytes=self.limits.media_max_bytes)
        image = await asyncio.to_thread(open_image, data, param=where, max_pixels=self.limits.max_image_pixels)
        max_tiles = 1 if detail == "low" else self.body.max_tiles
        self._add_tiles(self._family.num_tiles(image.width, image.height, max_tiles), where)
        return await asyncio.to_thread(ImagePart, image, max_tiles)  # hashes the pixels (messages.pixel_key)

    async def _video(self, where: str, part: VideoContent) -> VideoPart:
        url = part.video_url if isinstance(part.video_url, str) else part.video_url.url
        data = await load_bytes(url, self.fetch, param=where, max_bytes=self.limits.media_max_bytes)
        try:
            frames = await asyncio.to_thread(self._family.sample_frames, data, self.body.num_frames)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=where) from exc
        self._add_tiles(len(frames), where)  # one tile per frame
        return await asyncio.to_thread(VideoPart, tuple(frames))
