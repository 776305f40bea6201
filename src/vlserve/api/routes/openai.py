"""OpenAI chat completions and (legacy) completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from vlserve.api.deps import Services, services
from vlserve.api.disconnect import cancel_on_disconnect
from vlserve.api.sse import sse_response
from vlserve.serving.protocol import ChatCompletionRequest, CompletionRequest

router = APIRouter(tags=["openai"])


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, s: Services = Depends(services)) -> Any:
    async def answer() -> Any:
        chat = await s.chat.prepare(body)
        if body.stream:
            return sse_response(await s.chat.stream(chat))
        return await s.chat.complete(chat)

    return await cancel_on_disconnect(request, answer())


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, s: Services = Depends(services)) -> Any:
    """Raw text into the model (no chat template, no images); Xinference's `generate` on a model handle."""

    async def answer() -> Any:
        prepared = await s.completions.prepare(body)
        if body.stream:
            return sse_response(await s.completions.stream(prepared))
        return await s.completions.complete(prepared)

    return await cancel_on_disconnect(request, answer())
