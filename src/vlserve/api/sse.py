"""Server-sent events the way OpenAI streams them: `data: {json}` per chunk, an error chunk if the stream fails
midway, then `data: [DONE]`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from vlserve.api.errors import error_body
from vlserve.errors import VlserveError


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield _event(chunk)
    except VlserveError as exc:  # headers are sent already: the error travels as a chunk, as OpenAI does
        yield _event(error_body(exc))
    yield "data: [DONE]\n\n"


def sse_response(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(chunks), media_type="text/event-stream", headers=headers)
