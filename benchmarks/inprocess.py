"""An in-process Transformers engine held the way a server holds one: loaded and driven on one long-lived event
loop in its own thread (so `load()`'s worker thread and every request's loop are the same for the engine's life).

Why not `asyncio.run(engine.load())` and then `asyncio.run(...)` per wave: measured on the 2-core machine, an
engine whose load ran on a short-lived loop's worker thread decoded 5-10× slower and erratically with torch's
default 2 threads (twin, 1-tile prompts: 6-12 tok/s against 50-90 tok/s when load and requests share one loop),
which would make every in-process baseline look bad for a reason no server has.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self

from benchmarks.models import PreparedModel, engine_options, resolved


class InProcessEngine:
    def __init__(self, model: PreparedModel, quantization: str = "none", engine: str = "Transformers",
                 caches: bool = False, **options: Any) -> None:  # fmt: skip
        """`caches`: keep the Transformers engine's image and prefix caches on (models.COLD says why not)."""
        from vlserve.engines import get_factory

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-engine-loop", daemon=True)
        self._thread.start()
        options = engine_options(engine, options, caches)
        self.engine = get_factory(engine).create(resolved(model, quantization, engine), model.path, options)
        try:
            self.info = self.call(self.engine.load())
        except BaseException:
            self._stop_loop()
            raise

    def call(self, coroutine: Coroutine, timeout: float | None = None) -> Any:
        """Run a coroutine on the engine's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.call(self.engine.unload(), timeout=300)
        finally:
            self._stop_loop()
        import gc

        gc.collect()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
