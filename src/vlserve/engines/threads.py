"""Torch work off the scheduler thread runs in a thread that ends when the work is done.

PyTorch's CPU kernels run on OpenMP (libgomp). Every thread that runs a parallel torch op gets its own OpenMP team,
kept until that thread exits, and once the process holds more OpenMP threads than cores libgomp switches every team
to "throttled" waiting: its workers sleep right after each parallel region instead of spinning, so each of the
hundreds of small kernels of a decode step pays a futex wake-up. A long-lived helper thread that once loaded the
model or normalised image tiles (asyncio's default executor, a prep pool) therefore slowed every later decode step
of the scheduler thread: batch-1 decode of the full-size 1B architecture on the 2-core machine ran at 13.7 tok/s
with the model loaded on a default-executor thread and 18 tok/s once that thread had exited.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_own_thread(name: str, fn: Callable[..., T], *args: object) -> T:
    """`await asyncio.to_thread(fn, *args)`, on a new thread that exits (freeing its OpenMP team) when `fn` returns.

    As with to_thread, cancelling the caller does not stop `fn`; its result is then dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()  # as to_thread: the caller's context variables (log fields) go along

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():  # the caller was cancelled
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome = (context.run(fn, *args), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, as to_thread does
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future
