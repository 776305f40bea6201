"""Stop work for a client that has gone away. A streaming response notices by itself (Starlette cancels the
stream); until then — while a request waits in the model's queue, waits for its first token, or generates a whole
non-streaming answer — the handler's work runs beside a watcher of the connection, and is cancelled (which aborts
the engine's request and frees its memory) when the client disconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from vlserve.errors import VlserveError

T = TypeVar("T")


class ClientDisconnected(VlserveError):
    """Nobody is left to read the answer (logged with nginx's 499)."""

    status_code = 499
    error_type = "client_closed_request"


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected("the client closed the connection before the answer was ready")
    finally:
        watcher.cancel()
        if not task.done():  # the handler itself was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
