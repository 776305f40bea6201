"""The embedded model host: models live in the server process.

Engine calls run on the event loop; the blocking steps of a launch (hub download, engine construction) run in
threads, so a launch never stalls requests to other models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from vlserve.engines import get_factory
from vlserve.engines.base import Delta, Engine, EngineFactory, GenerateRequest, LoadedModelInfo
from vlserve.errors import EngineError, EngineUnavailable, ModelNotReady, NotFound, VlserveError
from vlserve.hub import ensure_local
from vlserve.registry import ResolvedSpec
from vlserve.serving.records import LaunchRequest, ModelRecord, Phase, allocate_uid
from vlserve.serving.replicas import ReplicaSet

log = logging.getLogger(__name__)

# ensure_local(resolved, *, download_hub, model_path, on_progress) -> Path, blocking (it runs in a thread)
FetchModel = Callable[..., Path]


@dataclass
class _Slot:
    """The mutable state behind one uid; only the host touches it."""

    record: ModelRecord
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failure: BaseException | None = None
    task: asyncio.Task | None = None
    replicas: ReplicaSet | None = None
    running: dict[str, Engine] = field(default_factory=dict)
    closing: bool = False

    def update(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)


class EmbeddedHost:
    """A `ModelHost` keeping every engine in this process."""

    def __init__(
        self,
        fetch_model: FetchModel = ensure_local,
        factory_for: Callable[[str], EngineFactory] = get_factory,
    ) -> None:
        self._fetch_model = fetch_model
        self._factory_for = factory_for
        self._slots: dict[str, _Slot] = {}

    # -- launching ---------------------------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> ModelRecord:
        await asyncio.to_thread(self._check_engine, request.resolved)
        uid = allocate_uid(request.model_uid, request.resolved.model_name, self._slots)
        slot = _Slot(ModelRecord(uid=uid, launch=request, phase=Phase.DOWNLOADING, created_at=time.time()))
        self._slots[uid] = slot
        slot.task = asyncio.create_task(self._bring_up(slot), name=f"launch {uid}")
        log.info("launching %s as %s", request.resolved.describe(), uid)
        return slot.record

    def _factory(self, engine: str) -> EngineFactory:
        try:
            return self._factory_for(engine)
        except ImportError as exc:
            raise EngineUnavailable(f"engine {engine} is not installed here ({exc})", param="model_engine") from exc

    def _check_engine(self, resolved: ResolvedSpec) -> None:
        ok, reason = self._factory(resolved.engine).supports(resolved)
        if not ok:
            raise EngineUnavailable(reason, param="model_engine")

    async def _bring_up(self, slot: _Slot) -> None:
        engines: list[Engine] = []
        try:
            model_dir = await self._download(slot)
            slot.update(phase=Phase.LOADING, download_progress=1.0)
            info = await self._load_replicas(slot, model_dir, engines)
            slot.replicas = ReplicaSet(engines)
            slot.update(phase=Phase.READY, info=info)
            log.info("%s is ready (%s, %s)", slot.record.uid, info.device, info.dtype)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await _unload_quietly(engines)
            slot.failure = exc
            slot.update(phase=Phase.ERROR, error=_reason(exc))
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("launching %s failed: %s", slot.record.uid, slot.record.error)
            if not isinstance(exc, Exception):
                raise
        finally:
            slot.ready.set()

    async def _download(self, slot: _Slot) -> Path:
        launch = slot.record.launch

        def on_progress(fraction: float) -> None:  # called from the download thread
            slot.update(download_progress=max(0.0, min(1.0, float(fraction))))

        return await asyncio.to_thread(
            self._fetch_model,
            launch.resolved,
            download_hub=launch.download_hub,
            model_path=launch.model_path,
            on_progress=on_progress,
        )

    async def _load_replicas(self, slot: _Slot, model_dir: Path, engines: list[Engine]) -> LoadedModelInfo:
        launch = slot.record.launch
        factory = self._factory(launch.resolved.engine)
        infos = []
        for _ in range(launch.replica):
            engine = await asyncio.to_thread(factory.create, launch.resolved, model_dir, launch.engine_options())
            engines.append(engine)
            infos.append(await engine.load())
        return infos[0]  # replicas are identical; replica >= 1 is validated at the edge

    async def wait_ready(self, uid: str, timeout: float | None = None) -> ModelRecord:
        slot = self._slot(uid)
        try:
            await asyncio.wait_for(slot.ready.wait(), timeout)
        except TimeoutError as exc:
            raise ModelNotReady(f"{uid} is still {slot.record.phase.value} after {timeout:g}s") from exc
        if slot.record.phase is Phase.ERROR:
            raise _as_vlserve_error(slot)
        return slot.record

    # -- looking up --------------------------------------------------------------------------------------------

    def get(self, uid: str) -> ModelRecord:
        return self._slot(uid).record

    def list(self) -> list[ModelRecord]:
        return [slot.record for slot in self._slots.values()]

    def in_flight(self, uid: str) -> tuple[int, ...]:
        """Running requests per replica."""
        replicas = self._slot(uid).replicas
        return replicas.in_flight if replicas else ()

    def engines(self, uid: str) -> tuple[Engine, ...]:
        replicas = self._slot(uid).replicas
        return tuple(replicas.engines) if replicas else ()

    def _slot(self, uid: str) -> _Slot:
        slot = self._slots.get(uid)
        if slot is None:
            running = ", ".join(sorted(self._slots)) or "none"
            raise NotFound(f"model {uid!r} is not running (running: {running}); launch it first", param="model")
        return slot

    def _ready_slot(self, uid: str) -> _Slot:
        slot = self._slot(uid)
        if slot.closing or slot.replicas is None:
            state = "terminating" if slot.closing else slot.record.phase.value
            detail = f": {slot.record.error}" if slot.record.error else ""
            raise ModelNotReady(f"model {uid!r} is {state}{detail}", param="model")
        return slot

    # -- serving -----------------------------------------------------------------------------------------------

    async def stream(self, uid: str, request: GenerateRequest) -> AsyncIterator[Delta]:
        slot = self._ready_slot(uid)
        assert slot.replicas is not None
        replicas = slot.replicas
        index = replicas.acquire()
        engine = replicas.engines[index]
        slot.running[request.request_id] = engine
        finished = False
        try:
            async with contextlib.aclosing(engine.generate(request)) as deltas:
                async for delta in deltas:
                    yield delta
            finished = True
        finally:
            slot.running.pop(request.request_id, None)
            replicas.release(index)
            if not finished:  # the caller went away or the engine failed: stop the engine's work on it
                with anyio.CancelScope(shield=True):
                    await _abort_quietly(engine, request.request_id)

    async def abort(self, uid: str, request_id: str) -> None:
        engine = self._slot(uid).running.get(request_id)
        if engine is not None:
            await engine.abort(request_id)

    # -- stopping ----------------------------------------------------------------------------------------------

    async def terminate(self, uid: str) -> None:
        slot = self._slot(uid)
        if slot.closing:
            return
        slot.closing = True
        try:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
                await asyncio.gather(slot.task, return_exceptions=True)
            for request_id, engine in list(slot.running.items()):
                await _abort_quietly(engine, request_id)
            if slot.replicas is not None:
                await slot.replicas.unload()
        finally:
            self._slots.pop(uid, None)
            log.info("terminated %s", uid)

    async def close(self) -> None:
        for uid in list(self._slots):
            with contextlib.suppress(Exception):
                await self.terminate(uid)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, VlserveError):
        return exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "launch cancelled"
    return f"{type(exc).__name__}: {exc}"


def _as_vlserve_error(slot: _Slot) -> VlserveError:
    if isinstance(slot.failure, VlserveError):
        return slot.failure
    return EngineError(f"launching {slot.record.uid} failed: {slot.record.error}")


async def _abort_quietly(engine: Engine, request_id: str) -> None:
    try:
        await engine.abort(request_id)
    except Exception:  # the request may be gone already; aborting must never fail a cleanup
        log.exception("aborting request %s failed", request_id)


async def _unload_quietly(engines: list[Engine]) -> None:
    for engine in engines:
        try:
            await engine.unload()
        except Exception:
            log.exception("unloading a half-launched engine failed")
