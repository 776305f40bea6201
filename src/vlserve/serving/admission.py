"""Backpressure per model: at most `max_running` requests generate at once, at most `max_queued` wait (first
come, first served) for one of them to finish; beyond that a request is refused at once with `Overloaded` (503 and
Retry-After) instead of piling up until clients time out. A waiting request that is cancelled (its client went
away) leaves the queue; a freed slot passes straight to the next waiter, so no request can overtake the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vlserve.config import ServerConfig
from vlserve.errors import Overloaded

_SERVER = ServerConfig()


@dataclass(frozen=True)
class AdmissionLimits:
    max_running: int = _SERVER.max_concurrent_requests
    max_queued: int = _SERVER.max_queued_requests
    retry_after_s: int = 1

    @classmethod
    def from_config(cls, config: ServerConfig) -> AdmissionLimits:
        return cls(config.max_concurrent_requests, config.max_queued_requests)


class Admission:
    def __init__(self, uid: str, limits: AdmissionLimits) -> None:
        self.uid = uid
        self.limits = limits
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return sum(not f.done() for f in self._waiting)

    def check(self) -> None:
        """Refuse now if a request arriving now would be refused (cheap, before any work is done for it)."""
        if self.running >= self.limits.max_running and self.queued >= self.limits.max_queued:
            raise self._overloaded()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the model's running slots, waiting in the queue for it if need be."""
        if self.running < self.limits.max_running and not self.queued:
            self.running += 1
        else:
            await self._wait()
        try:
            yield
        finally:
            self._release()

    async def _wait(self) -> None:
        if self.queued >= self.limits.max_queued:
            raise self._overloaded()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn  # resolved by _release, which hands its slot over (running stays the same)
        except BaseException:
            if turn.done() and not turn.cancelled():  # the slot arrived as we were cancelled: pass it on
                self._release()
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(turn)
            raise

    def _release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1

    def _overloaded(self) -> Overloaded:
        limits = self.limits
        return Overloaded(f"model {self.uid!r} is busy: {self.running} requests running and {self.queued} waiting "
                          f"(its limits are {limits.max_running} and {limits.max_queued}); retry after "
                          f"{limits.retry_after_s} s", retry_after=limits.retry_after_s)  # fmt: skip
