"""Requests never wait on a dead engine core.

vLLM notices its engine core's death itself (a thread waits on the process sentinels) and fails the requests in
flight. This is the engine's own check beside it: one task per engine, running only while requests wait, asks
`probe` once every POLL_S whether the engine can still serve; once it says why not, every waiting request's task is
cancelled and `dead` holds the reason, which the engine turns into EngineDead. A wait on a dead engine costs at
most POLL_S more; a token costs nothing (no timer or task per token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 1.0


class Liveness:
    def __init__(self, probe: Callable[[], str | None], poll_s: float = POLL_S) -> None:
        self.probe, self.poll_s = probe, poll_s
        self.dead: str | None = None  # why the engine stopped, once seen
        self._waiting: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None

    def enter(self) -> asyncio.Task:
        """The calling task now waits on the engine (call `leave` when it stops)."""
        task = asyncio.current_task()
        assert task is not None, "called outside a task"
        self._waiting.add(task)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="vlserve-vllm-liveness")
        return task

    def leave(self, task: asyncio.Task) -> None:
        self._waiting.discard(task)

    def cancelled_by_death(self, task: asyncio.Task) -> bool:
        """After a CancelledError in `task`: whether the death of the engine cancelled it. If so the cancellation
        is taken back (the caller raises EngineDead instead)."""
        if self.dead is None:
            return False
        task.uncancel()
        return True

    async def _watch(self) -> None:
        while self._waiting:
            if self.dead is None:
                await asyncio.sleep(self.poll_s)
                self.dead = self.probe()
                continue
            for task in list(self._waiting):
                task.cancel()
            return
