"""The engine instances behind one model uid, and which one takes the next request (least in flight)."""

from __future__ import annotations

from collections.abc import Sequence

from vlserve.engines.base import Engine


class ReplicaSet:
    def __init__(self, engines: Sequence[Engine]) -> None:
        self.engines = list(engines)
        self._in_flight = [0] * len(self.engines)
        self._served = [0] * len(self.engines)

    def acquire(self) -> int:
        """Pick the replica with the fewest running requests (the first on ties) and count one more on it."""
        index = min(range(len(self.engines)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        return index

    def release(self, index: int) -> None:
        self._in_flight[index] -= 1
        self._served[index] += 1

    @property
    def served(self) -> tuple[int, ...]:
        """Requests each replica has finished (done, failed or aborted)."""
        return tuple(self._served)

    @property
    def in_flight(self) -> tuple[int, ...]:
        return tuple(self._in_flight)

    async def unload(self) -> None:
        for engine in self.engines:
            await engine.unload()
        self.engines.clear()
        self._in_flight.clear()
        self._served.clear()
