"""One model replica as a Ray actor, in its own worker process on whichever node Ray placed it.

The actor fetches the model on its node and builds the engine with the same helpers as the embedded host. Ray runs
`__init__` again when it restarts the actor after a crash; loading happens in `ready()`, which the host calls after
every (re)start, so a restarted replica loads its model again and reports progress meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import ray

from vlserve import reaper
from vlserve.engines import get_factory
from vlserve.engines.base import Delta, Engine, GenerateRequest, LoadedModelInfo
from vlserve.errors import ModelNotReady
from vlserve.serving.launching import (
    FetchModel, abort_quietly, check_engine, engine_factory, fetch_model_dir, start_engine, unload_quietly,
)
from vlserve.serving.ray.batching import Coalesce, coalesce
from vlserve.serving.records import LaunchRequest


class ReplicaActor:
    def __init__(self, launch: LaunchRequest, fetch: FetchModel, policy: Coalesce) -> None:
        reaper.guard_this_process()  # killed by `terminate` or by Ray: what its engine started ends with it
        self._launch, self._fetch, self._policy = launch, fetch, policy
        self._engine: Engine | None = None
        self._loading: asyncio.Task | None = None
        self._stage, self._downloaded = "starting", 0.0
        self._active: set[str] = set()  # request ids streaming from this replica

    async def where(self) -> dict[str, Any]:
        """Where this replica runs: node, address, process and the GPUs Ray gave it."""
        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}  # fmt: skip

    async def progress(self) -> tuple[str, float]:
        """(stage, download fraction): starting, downloading, loading, ready."""
        return self._stage, self._downloaded

    async def ready(self) -> LoadedModelInfo:
        """Fetch and load the model once (every caller waits for the same load); its info when loaded."""
        if self._loading is None:
            self._loading = asyncio.create_task(self._load())
        return await asyncio.shield(self._loading)

    async def _load(self) -> LoadedModelInfo:
        launch = self._launch
        await asyncio.to_thread(check_engine, get_factory, launch.resolved)
        self._stage = "downloading"
        model_dir = await asyncio.to_thread(fetch_model_dir, self._fetch, launch, self._on_progress)
        self._stage, self._downloaded = "loading", 1.0
        self._engine, info = await start_engine(engine_factory(get_factory, launch.resolved.engine), launch, model_dir)
        self._stage = "ready"
        return info

    def _on_progress(self, fraction: float) -> None:  # the download thread
        self._downloaded = max(0.0, min(1.0, float(fraction)))

    async def generate(self, request: GenerateRequest) -> AsyncIterator[list[Delta]]:
        """The request's deltas in batches (a Ray streaming generator). Cancelling the Ray stream lands here as a
        CancelledError; the engine request is aborted on any early exit."""
        engine = self._engine
        if engine is None:
            raise ModelNotReady(f"replica is {self._stage}, not ready; retry shortly")
        finished = False
        self._active.add(request.request_id)
        try:
            async with contextlib.aclosing(coalesce(engine.generate(request), self._policy)) as batches:
                async for batch in batches:
                    yield batch
            finished = True
        finally:
            self._active.discard(request.request_id)
            if not finished:
                with anyio.CancelScope(shield=True):
                    await abort_quietly(engine, request.request_id)

    async def cache_stats(self) -> dict[str, dict[str, int]] | None:
        """This replica's engine caches (encoder outputs, prompt prefixes), where its engine keeps any."""
        stats = getattr(self._engine, "cache_stats", None)
        return stats() if stats is not None else None

    async def active(self) -> list[str]:
        """The requests streaming from this replica now."""
        return sorted(self._active)

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    async def watch(self) -> None:
        """Never returns while the actor lives: the host awaits it to learn at once when the process dies."""
        await asyncio.Event().wait()

    async def unload(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        engine, self._engine = self._engine, None
        if engine is not None:
            await unload_quietly([engine])
